"""QT-ViT models: EfficientViT-B with Taylor kernels in every LiteMLA, swappable linear kernels."""
from __future__ import annotations

import pytest
import timm
import torch
from timm.models.efficientvit_mit import LiteMLA

from vitspeed.attention import get_attention
from vitspeed.attention.taylor import Taylor2Chunk, Taylor2Compact, Taylor2Pool
from vitspeed.flops import count_flops
from vitspeed.models import create_model, get_model_spec, list_models
from vitspeed.models.qtvit import QTLiteMLA


def _attention_modules(model):
    return [m for m in model.modules() if isinstance(m, QTLiteMLA)]


def test_qtvit_models_registered_swappable():
    for name in ("qtvit_1", "qtvit_2", "qtvit_3"):
        assert name in list_models()
        assert get_model_spec(name).swappable


@pytest.mark.slow
def test_qtvit_1_forward_224():
    model = create_model("qtvit_1")
    attn = _attention_modules(model)
    assert len(attn) == 7  # efficientvit_b1: 3 LiteMLA at stride 16, 4 at stride 32
    assert not any(isinstance(m, LiteMLA) for m in model.modules())
    assert all(isinstance(m.core, Taylor2Compact) and m.core.mode == "paper" for m in attn)
    assert [m.grid for m in attn] == [(14, 14)] * 3 + [(7, 7)] * 4
    assert [m.num_heads for m in attn] == [16] * 3 + [32] * 4  # 2 scales x C/16 heads, head dim 16
    with torch.no_grad():
        y = model(torch.randn(1, 3, 224, 224))
    assert y.shape == (1, 1000) and torch.isfinite(y).all()


@pytest.mark.parametrize("name, blocks", [("qtvit_2", 10), ("qtvit_3", 15)])
def test_larger_models_replace_every_litemla(name, blocks):
    model = create_model(name, img_size=32, num_classes=10)
    assert len(_attention_modules(model)) == blocks
    assert not any(isinstance(m, LiteMLA) for m in model.modules())
    assert {m.dim for m in _attention_modules(model)} == {32}


def test_ablation_kernels_selectable():
    model = create_model("qtvit_1", img_size=64, attention="taylor2_chunk", attention_options={"c": 4})
    assert all(isinstance(m.core, Taylor2Chunk) and m.core.c == 4 for m in _attention_modules(model))
    model = create_model("qtvit_1", img_size=64, attention="taylor2_pool", attention_options={"p": 2})
    assert all(isinstance(m.core, Taylor2Pool) and m.core.p == 2 for m in _attention_modules(model))
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 64, 64))).all()


def test_other_input_size_resizes_positional_embedding():
    model = create_model("qtvit_1", img_size=64)
    with torch.no_grad():
        y = model(torch.randn(1, 3, 96, 96))
    assert y.shape == (1, 1000) and torch.isfinite(y).all()


def test_positional_embedding_and_shortcut_change_output():
    model = create_model("qtvit_1", img_size=32)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        for m in _attention_modules(model):
            m.pos_embed.zero_()
        after_pos = model(x)
        for m in _attention_modules(model):
            m.v_norm.weight.zero_()
            m.v_norm.bias.zero_()
        after_shortcut = model(x)
    assert not torch.allclose(before, after_pos)
    assert not torch.allclose(after_pos, after_shortcut)


@pytest.mark.parametrize("kwargs, match", [
    ({"attention": "softmax"}, "linear"),
    ({"attention": "no_such_kernel"}, "unknown attention"),
    ({"attention": "taylor2_chunk", "attention_options": {"c": 3}}, "c=3"),
    ({"attention_options": {"kappa": 1}}, "kappa"),
    ({"img_size": 100}, "multiple of 32"),
    ({"ffn": "mlp"}, "ffn"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("qtvit_1", **{"img_size": 64, **kwargs})


@pytest.mark.slow
def test_macs_relative_to_efficientvit_b1():
    x = torch.zeros(1, 3, 224, 224)
    base = count_flops(timm.create_model("efficientvit_b1").eval(), x)
    model = create_model("qtvit_1")
    qt = count_flops(model, x)
    assert qt.unhandled == {} and base.unhandled == {}
    # Published EfficientViT-B1: 0.52 GMACs; the compact kernel adds only a few percent.
    assert 0.50e9 < base.macs < 0.54e9
    assert base.macs < qt.macs < 1.05 * base.macs
    # Exact difference: per block, the compact core (2d+1 features) replaces LiteMLA's ReLU core
    # (d features), both with V padded by a ones column, plus BatchNorm (2 MACs/element) on V.
    spec = get_attention("taylor2_compact")
    delta = 0
    for m in _attention_modules(model):
        n, h, d = m.grid[0] * m.grid[1], m.num_heads, m.dim
        delta += spec.formula(1, n, d, h, **spec.options)["macs"] - 2 * h * n * d * (d + 1)
        delta += 2 * h * d * n
    assert qt.macs - base.macs == delta
