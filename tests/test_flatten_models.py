"""FLatten-DeiT-T and FLatten-Swin-T: layout (which blocks are focused), options, forward pass."""
import pytest
import torch

from vitspeed.attention.focused import FocusedLinearAttention
from vitspeed.attention.quadratic import SoftmaxAttention
from vitspeed.flops import count_flops
from vitspeed.models import create_model, get_model_spec, list_models


def _forward(model, size):
    with torch.no_grad():
        return model(torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)))


def test_models_are_listed_with_summaries():
    for name in ("flatten_deit_tiny", "flatten_swin_tiny"):
        assert name in list_models()
        spec = get_model_spec(name)
        assert "FLatten" in spec.summary and not spec.swappable


@pytest.mark.slow
def test_flatten_deit_tiny_is_focused_everywhere_and_runs_at_224():
    model = create_model("flatten_deit_tiny", img_size=224)
    cores = [blk.attn.core for blk in model.blocks]
    assert len(cores) == 12 and all(isinstance(c, FocusedLinearAttention) for c in cores)
    assert all(blk.attn.grid == (14, 14) for blk in model.blocks)
    assert cores[0].p == 3.0 and cores[0].dwc.kernel_size == (5, 5)
    out = _forward(model, 224)
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
    assert count_flops(model, torch.zeros(1, 3, 224, 224)).unhandled == {}


@pytest.mark.slow
@pytest.mark.parametrize("size", [224, 448])
def test_flatten_swin_tiny_is_llss(size):
    model = create_model("flatten_swin_tiny", img_size=size)
    for s, stage in enumerate(model.layers):
        side = size // 4 // 2 ** s
        for blk in stage.blocks:
            if s < 2:  # focused, global over the whole feature map, no shift
                assert isinstance(blk.attn.core, FocusedLinearAttention)
                assert tuple(blk.window_size) == (side, side) and tuple(blk.shift_size) == (0, 0)
            else:  # Swin's window softmax attention through SDPA, windows and shifts kept
                assert isinstance(blk.attn.core, SoftmaxAttention) and blk.attn.core.fused
                assert tuple(blk.window_size) == (7, 7) or side < 7
    assert [tuple(blk.shift_size) for blk in model.layers[2].blocks[:2]] == [(0, 0), (3, 3)]
    if size == 224:  # the 448 build is checked for layout only, to keep the test quick
        out = _forward(model, size)
        assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_attention_options_reach_every_focused_core():
    model = create_model("flatten_deit_tiny", img_size=64, attention_options={"p": 2, "kernel_size": 3})
    assert all(blk.attn.core.p == 2.0 and blk.attn.core.dwc.kernel_size == (3, 3) for blk in model.blocks)
    out = _forward(model, 64)
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_invalid_requests_are_refused():
    with pytest.raises(ValueError, match="fixes its own attention"):
        create_model("flatten_swin_tiny", attention="softmax")
    with pytest.raises(ValueError, match="unknown option"):
        create_model("flatten_deit_tiny", img_size=64, attention_options={"power": 2})
    with pytest.raises(ValueError, match="multiples of 224"):
        create_model("flatten_swin_tiny", img_size=256)
