"""hDeiT models: hMHSA and merged cFFN in every block, finite output, 10-20%-ish cheaper than DeiT."""
import pytest
import torch

from vitspeed.attention.hallucinated import HallucinatedAttention
from vitspeed.ffn import CompactFFN
from vitspeed.flops import count_flops, count_params
from vitspeed.models import create_model, list_models

PAIRS = {"hdeit_tiny": ("deit_tiny_patch16_224", 2), "hdeit_small": ("deit_small_patch16_224", 3)}


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def test_registered():
    assert {"hdeit_tiny", "hdeit_small"} <= set(list_models())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PAIRS))
def test_builds_forwards_and_is_cheaper_than_deit(name, image):
    base, computed = PAIRS[name]
    torch.manual_seed(0)
    model = create_model(name)
    assert not model.training
    for blk in model.blocks:
        assert isinstance(blk.attn, HallucinatedAttention) and blk.attn.num_computed == computed
        assert isinstance(blk.mlp, CompactFFN) and blk.mlp.fc2.merged
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    with torch.inference_mode():
        out = model(image)
    assert out.shape == (1, 1000) and torch.isfinite(out).all()

    ours = count_flops(model, image)
    stock = create_model(base)
    ref = count_flops(stock, image)
    assert ours.unhandled == {} and ref.unhandled == {}
    flops_saving = 1 - ours.macs / ref.macs
    params_saving = 1 - count_params(model) / count_params(stock)
    # hdeit_tiny: 17.3% MACs, 16.8% params; hdeit_small: 20.8% MACs, 20.1% params
    assert 0.10 < flops_saving < 0.22
    assert 0.10 < params_saving < 0.22
    # only attention and FFN changed
    assert ours.breakdown()["rest"] == ref.breakdown()["rest"]


def test_options_reach_the_blocks():
    model = create_model("hdeit_tiny", img_size=32, num_classes=3, attention_options={"ratio": 1 / 3},
                         ffn_options={"rank": 4})
    assert all(blk.attn.num_computed == 1 and blk.mlp.rank == 4 for blk in model.blocks)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_attention_name_is_fixed():
    with pytest.raises(ValueError, match="fixes its own attention"):
        create_model("hdeit_small", attention="softmax")
