"""Hallucinated attention (hMHSA): computed heads are softmax attention, hallucinated heads are
softmax-weighted mixes of the computed maps, the shell saves q/k projection weights, counts match."""
import pytest
import sympy as sp
import timm
import torch
import torch.nn.functional as F

from vitspeed.attention import build_core, get_attention, list_attentions
from vitspeed.attention.hallucinated import HallucinatedAttention, HallucinatedCore, computed_heads
from vitspeed.attention.shells import GlobalAttention, make_attention
from vitspeed.flops import count_flops
from vitspeed.formulas import attention_module_formula, core_formula
from vitspeed.models.swap import swap_vit_attention


def inputs(B=2, h=4, hc=2, N=12, d=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, hc, N, d, generator=g, dtype=dtype)
    k = torch.randn(B, hc, N, d, generator=g, dtype=dtype)
    v = torch.randn(B, h, N, d, generator=g, dtype=dtype)
    return q, k, v


def core(d=8, h=4, seed=1, **options):
    """A core whose mixing logits are random, so the mix is not the initial near-copy."""
    c = build_core("hallucinated", d, h, **options).double()
    with torch.no_grad():
        c.mix.copy_(torch.randn(c.mix.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return c


def test_registered_in_redundancy_family_with_its_own_shell():
    spec = get_attention("hallucinated")
    assert "hallucinated" in list_attentions("redundancy")
    assert spec.shell is not None and not spec.supports_bias
    assert spec.options == {"ratio": 0.5, "normalize": True}


def test_computed_heads_equal_plain_softmax_attention():
    q, k, v = inputs()
    out = core()(q, k, v)
    expected = F.scaled_dot_product_attention(q, k, v[:, :2])
    torch.testing.assert_close(out[:, :2], expected)


@pytest.mark.parametrize("normalize", [True, False])
def test_hallucinated_heads_mix_the_computed_maps(normalize):
    q, k, v = inputs()
    c = core(normalize=normalize)
    maps = (q @ k.transpose(-1, -2) / 8 ** 0.5).softmax(-1)  # (B, 2, N, N)
    w = c.mix.softmax(-1) if normalize else c.mix
    for j in range(2):
        hal = sum(w[j, i] * maps[:, i] for i in range(2))
        torch.testing.assert_close(c(q, k, v)[:, 2 + j], hal @ v[:, 2 + j])


def test_normalized_hallucinated_maps_stay_row_stochastic():
    q, k, _ = inputs()
    ones = torch.ones(2, 4, 12, 8, dtype=torch.float64)
    # every map applied to all-ones values gives ones iff its rows sum to 1
    torch.testing.assert_close(core()(q, k, ones), ones)
    assert not torch.allclose(core(normalize=False)(q, k, ones), ones)


def test_ratio_one_is_softmax_attention_on_every_head():
    q, k, v = inputs(hc=4)
    c = build_core("hallucinated", 8, 4, ratio=1.0)
    assert c.num_hallucinated == 0
    torch.testing.assert_close(c(q.float(), k.float(), v.float()),
                               F.scaled_dot_product_attention(q.float(), k.float(), v.float()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_output_shape_and_finite(dtype):
    q, k, v = inputs(dtype=dtype)
    c = build_core("hallucinated", 8, 4).to(dtype)
    out = c(q, k, v)
    assert out.shape == v.shape and out.dtype == dtype
    assert torch.isfinite(out).all()
    if dtype == torch.bfloat16:
        ref = build_core("hallucinated", 8, 4)(q.float(), k.float(), v.float())
        torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("ratio,heads", [(0.5, 3), (0.0, 4), (1.5, 4), (0.1, 4), (-0.5, 2), (float("nan"), 4),
                                         (float("inf"), 4)])
def test_bad_ratio_raises(ratio, heads):
    with pytest.raises(ValueError, match="ratio"):
        build_core("hallucinated", 8, heads, ratio=ratio)


def test_ratio_from_cli_strings_and_thirds():
    assert build_core("hallucinated", 8, 6, ratio="0.5").num_computed == 3
    assert computed_heads(3, 2 / 3) == 2 and computed_heads(3, 1 / 3) == 1
    with pytest.raises(ValueError, match="unknown option"):
        build_core("hallucinated", 8, 4, heads=2)


def test_core_rejects_a_score_bias():
    q, k, v = inputs()
    with pytest.raises(ValueError, match="bias"):
        core()(q, k, v, bias=torch.zeros(1, 4, 12, 12, dtype=torch.float64))


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_shell_saves_query_and_key_weights(qkv_bias):
    C, h = 48, 6
    hal = make_attention("global", dim=C, num_heads=h, attention="hallucinated", options=None,
                         qkv_bias=qkv_bias, proj_bias=True, grid=(4, 4))
    std = GlobalAttention(C, h, qkv_bias=qkv_bias)
    assert isinstance(hal, HallucinatedAttention)
    d, hc = C // h, 3
    assert hal.qkv.weight.shape == (2 * hc * d + C, C)
    n_hal = sum(p.numel() for p in hal.parameters())
    n_std = sum(p.numel() for p in std.parameters())
    saved = 2 * (h - hc) * d * (C + qkv_bias) - (h - hc) * hc  # q/k rows gone, mixing logits added
    assert n_std - n_hal == saved
    assert n_std - n_hal > 0.24 * 4 * C * C - 10  # ~25% of the projection weights at ratio 1/2


def test_shell_forward_is_projection_core_projection():
    torch.manual_seed(0)
    B, N, C, h = 2, 17, 32, 4
    shell = HallucinatedAttention(C, h, qkv_bias=True).eval()
    x = torch.randn(B, N, C)
    qkv = shell.qkv(x)
    q, k, v = qkv[..., :16], qkv[..., 16:32], qkv[..., 32:]
    split = lambda t, n: t.reshape(B, N, n, 8).transpose(1, 2)  # noqa: E731
    out = shell.core(split(q, 2), split(k, 2), split(v, 4)).transpose(1, 2).reshape(B, N, C)
    torch.testing.assert_close(shell(x), shell.proj(out))
    assert shell(x).shape == (B, N, C)


def test_window_shell_is_refused():
    with pytest.raises(ValueError, match="global"):
        make_attention("window", dim=32, num_heads=4, window_size=(7, 7), attention="hallucinated",
                       options=None, qkv_bias=True)


def test_swap_into_a_timm_vit_copies_proj_and_runs():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, embed_dim=32, num_heads=4,
                            pretrained=False, num_classes=5).eval()
    old_proj = vit.blocks[0].attn.proj.weight.clone()
    swap_vit_attention(vit, "hallucinated")
    assert all(isinstance(b.attn, HallucinatedAttention) for b in vit.blocks)
    torch.testing.assert_close(vit.blocks[0].attn.proj.weight, old_proj)
    out = vit(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("B,N,d,h,ratio,normalize", [
    (2, 16, 8, 2, 0.5, True), (1, 49, 32, 6, 0.5, True), (2, 37, 16, 3, 2 / 3, False)])
def test_counted_core_cost_equals_the_closed_form(B, N, d, h, ratio, normalize):
    c = build_core("hallucinated", d, h, ratio=ratio, normalize=normalize)
    hc = c.num_computed
    q, k, v = (t.float() for t in inputs(B=B, h=h, hc=hc, N=N, d=d))
    fc = count_flops(c, (q, k, v))
    expected = core_formula("hallucinated", B, N, d, h, ratio=ratio, normalize=normalize)
    assert fc.unhandled == {}
    assert fc.macs == int(expected["macs"])
    assert fc.elementwise == int(expected["elementwise"])


def test_counted_module_macs_equal_the_module_formula():
    B, N, C, h = 1, 50, 48, 6
    shell = HallucinatedAttention(C, h, qkv_bias=True)
    fc = count_flops(shell, torch.randn(B, N, C))
    assert fc.unhandled == {}
    assert fc.macs == int(attention_module_formula("hallucinated", B, N, C, h)["macs"])


def test_symbolic_formula_saves_against_softmax():
    B, N, d, h = sp.symbols("B N d h", positive=True, integer=True)
    hal = core_formula("hallucinated", B, N, d, h)["macs"]
    soft = core_formula("softmax", B, N, d, h)["macs"]
    # half the QK^T products gone, the mix of h/2 x h/2 maps added
    assert sp.simplify(soft - hal - (B * h * N**2 * d / 2 - B * h**2 * N**2 / 4)) == 0


@pytest.mark.parametrize("heads, ratio", [(6, 0.5), (12, 0.25), (3, 1 / 3)])
def test_initial_mix_lets_each_hallucinated_head_mostly_copy_one_computed_head(heads, ratio):
    core = HallucinatedCore(head_dim=8, num_heads=heads, ratio=ratio)
    w = core.mixing_weights()
    hc, hh = core.num_computed, core.num_hallucinated
    assert w.shape == (hh, hc)
    torch.testing.assert_close(w.sum(-1), torch.ones(hh))  # softmax over the computed heads
    for j in range(hh):
        # head j copies computed head j mod h_c: the largest weight, well above the rest
        assert int(w[j].argmax()) == j % hc
        if hc > 1:
            assert w[j, j % hc] > 2 * w[j].topk(2).values[1]
    raw = HallucinatedCore(head_dim=8, num_heads=heads, ratio=ratio, normalize=False).mixing_weights()
    expected = torch.zeros(hh, hc)
    expected[torch.arange(hh), torch.arange(hh) % hc] = 1.0
    torch.testing.assert_close(raw, expected)  # unnormalised: an exact copy at the start
