"""FFN variants: mlp is timm's Mlp; cffn merges exactly and saves the documented share of the FFN."""
import pytest
import torch
from timm.layers import Mlp as TimmMlp

from vitspeed.ffn import CompactFFN, build_ffn, cffn_rank, ffn_options, list_ffns
from vitspeed.flops import count_flops, count_params

C, H = 32, 128  # ViT proportions: hidden = 4 C


def trained_cffn(seed=0, **options):
    """A cffn whose BatchNorms have non-trivial affine parameters and running statistics."""
    torch.manual_seed(seed)
    ffn = build_ffn("cffn", C, H, **options)
    with torch.no_grad():
        for branch in ffn.fc2.branches:
            branch.bn.weight.uniform_(0.5, 1.5)
            branch.bn.bias.normal_(0, 0.3)
    ffn.train()
    for _ in range(3):
        ffn(torch.randn(4, 10, C) * 2 + 0.5)
    return ffn


def test_names():
    assert list_ffns() == ["mlp", "cffn"]
    assert ffn_options("cffn") == {"rank": None, "rank_ratio": 0.5, "branches": 2}


def test_mlp_is_timm_mlp_with_the_same_state_dict():
    torch.manual_seed(0)
    timm_mlp = TimmMlp(C, H)
    ours = build_ffn("mlp", C, H)
    ours.load_state_dict(timm_mlp.state_dict())  # strict: same names and shapes
    x = torch.randn(2, 7, C)
    torch.testing.assert_close(ours(x), timm_mlp(x))


def test_cffn_merged_equals_unmerged_in_eval():
    ffn = trained_cffn()
    assert ffn.fc2.branches[0].bn.running_mean.abs().sum() > 0  # the statistics really moved
    ffn.eval()
    assert not ffn.fc2.merged  # eval() alone does not merge
    x = torch.randn(3, 9, C)
    with torch.no_grad():
        before = ffn(x)
        merged = ffn.merge()
        assert not ffn.fc2.merged and len(ffn.fc2.branches) == 2  # merge() leaves the original alone
        torch.testing.assert_close(merged(x), before, rtol=1e-5, atol=1e-5)
        ffn.reparameterize()
        torch.testing.assert_close(ffn(x), before, rtol=1e-5, atol=1e-5)
    assert ffn.fc2.merged and ffn.fc2.reduce.bias is None
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in ffn.modules())


def test_train_mode_uses_batch_statistics_so_differs_from_eval():
    ffn = trained_cffn()
    x = torch.randn(3, 9, C)
    with torch.no_grad():
        train_out = ffn(x)
        ffn.eval()
        assert not torch.allclose(train_out, ffn(x), atol=1e-4)


def test_merged_form_is_two_plain_matmuls():
    ffn = trained_cffn().eval().reparameterize()
    r = ffn.rank
    names = {n: tuple(p.shape) for n, p in ffn.named_parameters()}
    assert names == {"fc1.weight": (H, C), "fc1.bias": (H,), "fc2.reduce.weight": (r, H),
                     "fc2.expand.weight": (C, r), "fc2.expand.bias": (C,)}


def test_default_rank_and_documented_saving():
    ffn = build_ffn("cffn", C, H).merge()
    mlp = build_ffn("mlp", C, H)
    r = ffn.rank
    assert r == C // 2
    saved_weights = H * C - r * (H + C)
    assert count_params(mlp) - count_params(ffn) == saved_weights
    assert saved_weights / (2 * H * C) == pytest.approx(0.1875)  # 1.5 C^2 of 8 C^2
    x = torch.randn(1, 10, C)
    fm, fc = count_flops(mlp, x), count_flops(ffn, x)
    assert fm.unhandled == {} and fc.unhandled == {}
    assert fm.macs - fc.macs == 10 * saved_weights
    assert fm.elementwise == fc.elementwise  # the same GELU; the merged form adds no ops


def test_rank_options():
    assert build_ffn("cffn", C, H, rank=5).rank == 5
    assert build_ffn("cffn", C, H, rank="7").rank == 7  # from the CLI
    assert build_ffn("cffn", C, H, rank_ratio=0.25).rank == 8
    assert build_ffn("cffn", C, H, out_features=16).rank == 8
    assert cffn_rank(H, C, rank=C) == C


@pytest.mark.parametrize("options", [{"rank": 0}, {"rank": C + 1}, {"rank": 2.5}, {"rank_ratio": 0.0},
                                     {"rank_ratio": 1.5}, {"branches": 0}])
def test_bad_rank_or_branches_raise(options):
    with pytest.raises(ValueError, match="cffn"):
        build_ffn("cffn", C, H, **options)


def test_unknown_name_or_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid choices: mlp, cffn"):
        build_ffn("swiglu", C, H)
    with pytest.raises(ValueError, match="valid options: rank, rank_ratio, branches"):
        build_ffn("cffn", C, H, width=3)
    with pytest.raises(ValueError, match="valid options: none"):
        build_ffn("mlp", C, H, rank=3)


def test_single_branch_and_many_branches_merge():
    for branches in (1, 3):
        ffn = trained_cffn(branches=branches).eval()
        x = torch.randn(2, 5, C)
        with torch.no_grad():
            torch.testing.assert_close(ffn.merge()(x), ffn(x), rtol=1e-5, atol=1e-5)
    assert isinstance(ffn, CompactFFN)
