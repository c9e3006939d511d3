"""LeViT BatchNorm folding: same output as the unfolded eval model, no BatchNorm left, fewer MACs."""
import copy

import pytest
import torch
from torch import nn

from vitspeed.flops import count_flops, count_params
from vitspeed.models.levit import fold_batchnorm
from vitspeed.models.swap import build_timm


def has_bn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.fixture(scope="module")
def unfolded():
    """levit_128s with random BatchNorm statistics and affine parameters (the init ones are trivial)."""
    torch.manual_seed(0)
    model = build_timm("levit_128s", fold_bn=False)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)  # also the zero-initialized residual BNs
                m.bias.normal_(0, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def image():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def test_folded_equals_unfolded_eval_model(unfolded, image):
    folded = fold_batchnorm(copy.deepcopy(unfolded))
    assert has_bn(unfolded) and not has_bn(folded)
    assert not folded.training
    with torch.inference_mode():
        ref, out = unfolded(image), folded(image)
    assert torch.isfinite(ref).all()
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-4
    assert count_params(folded) < count_params(unfolded)


def test_build_timm_folds_levit_by_default():
    assert not has_bn(build_timm("levit_128s"))
    assert has_bn(build_timm("levit_128s", fold_bn=False))


def test_flops_unfolded_match_published_and_folding_saves_the_norms(unfolded, image):
    folded = fold_batchnorm(copy.deepcopy(unfolded))
    x = image[:1]
    before, after = count_flops(unfolded, x), count_flops(folded, x)
    assert before.unhandled == {} and after.unhandled == {}
    # published 305M; ours 307.2M unfolded, 304.7M folded
    assert before.macs == pytest.approx(305e6, rel=0.02)
    bn_macs = before.by_operator["batch_norm"]["macs"]
    assert "batch_norm" not in after.by_operator
    assert after.macs == before.macs - bn_macs
    assert after.elementwise == before.elementwise


def test_non_levit_batchnorm_is_reported():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="BatchNorm"):
        fold_batchnorm(model)
