"""Quadratic variants: fused forms equal explicit forms, finite in fp32 and bf16, bias honoured."""
import math

import pytest
import torch

from vitspeed.attention import build_core, list_attentions
from vitspeed.attention.quadratic import WindowBias, softmax_attention_explicit
from vitspeed.flops import count_flops
from vitspeed.formulas import core_formula

QUADRATIC = ["softmax", "softmax_explicit", "cosine", "euclidean", "jaccard"]


def qkv(B=2, h=3, N=20, d=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, h, N, d, generator=g, dtype=dtype) for _ in range(3)]


def test_fused_softmax_equals_explicit_with_and_without_bias():
    q, k, v = qkv()
    bias = torch.randn(1, 3, 20, 20, dtype=torch.float64)
    fused, explicit = build_core("softmax", 8, 3), build_core("softmax_explicit", 8, 3)
    for b in (None, bias):
        torch.testing.assert_close(fused(q, k, v, bias=b), explicit(q, k, v, bias=b))


@pytest.mark.parametrize("name", QUADRATIC)
def test_window_bias_equals_its_dense_form_in_every_core(name):
    # 2 images x 4 window positions: each window's mask slice must reach its own rows only.
    q, k, v = qkv(B=8, h=3, N=20)
    g = torch.Generator().manual_seed(1)
    position = torch.randn(1, 3, 20, 20, generator=g, dtype=torch.float64)
    mask = torch.where(torch.rand(4, 20, 20, generator=g) < 0.3, -100.0, 0.0).double()
    windows = WindowBias(position, mask)
    dense = position + mask.repeat(2, 1, 1).unsqueeze(1)
    torch.testing.assert_close(windows.dense(8), dense)
    scores = torch.randn(8, 3, 20, 20, dtype=torch.float64)
    torch.testing.assert_close(windows.add_to(scores), scores + dense)
    core = build_core(name, 8, 3)
    torch.testing.assert_close(core(q, k, v, bias=windows), core(q, k, v, bias=dense))
    torch.testing.assert_close(core(q, k, v, bias=WindowBias(position)), core(q, k, v, bias=position))


@pytest.mark.parametrize("name", ["cosine", "euclidean"])
def test_fused_paths_equal_their_explicit_paths(name):
    q, k, v = qkv()
    bias = torch.randn(1, 3, 20, 20, dtype=torch.float64)
    fused = build_core(name, 8, 3).double()
    explicit = build_core(name, 8, 3, fused=False).double()
    explicit.load_state_dict(fused.state_dict())
    for b in (None, bias):
        torch.testing.assert_close(fused(q, k, v, bias=b), explicit(q, k, v, bias=b))


def test_euclidean_is_softmax_of_negative_scaled_squared_distance():
    q, k, v = qkv()
    scores = -torch.cdist(q, k) ** 2 / (2 * 8 ** 0.5)
    expected = scores.softmax(-1) @ v
    torch.testing.assert_close(build_core("euclidean", 8, 3)(q, k, v), expected)


def test_cosine_scores_are_temperature_times_cosine():
    q, k, v = qkv()
    core = build_core("cosine", 8, 3).double()
    cos = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(k, dim=-1).transpose(-1, -2)
    expected = (cos * 10.0).softmax(-1) @ v
    torch.testing.assert_close(core(q, k, v), expected)


def test_jaccard_similarity_is_tanimoto():
    q, k, v = qkv()
    core = build_core("jaccard", 8, 3).double()
    dots = q @ k.transpose(-1, -2)
    tanimoto = dots / ((q * q).sum(-1)[..., :, None] + (k * k).sum(-1)[..., None, :] - dots)
    assert tanimoto.min() >= -1 / 3 - 1e-9 and tanimoto.max() <= 1 + 1e-9
    torch.testing.assert_close(core(q, k, v), (10.0 * tanimoto).softmax(-1) @ v)


@pytest.mark.parametrize("name", ["cosine", "jaccard"])
def test_learned_temperature_is_per_head_and_clamped_at_100(name):
    # Swin V2 clamps the logit scale at log(100): a scale trained past it must act as exactly 100
    q, k, v = qkv()
    core = build_core(name, 8, 3).double()
    ref = build_core(name, 8, 3).double()
    with torch.no_grad():
        core.logit_scale.copy_(torch.tensor([math.log(5.0), math.log(100.0), math.log(1e4)]).view(3, 1, 1))
        ref.logit_scale.copy_(torch.tensor([math.log(5.0), math.log(100.0), math.log(100.0)]).view(3, 1, 1))
    torch.testing.assert_close(core.temperature().flatten(), torch.tensor([5.0, 100.0, 100.0], dtype=torch.float64))
    torch.testing.assert_close(core(q, k, v), ref(q, k, v))
    # and the temperature is applied per head: head 0 (tau 5) differs from the default tau 10
    default = build_core(name, 8, 3).double()
    assert not torch.allclose(core(q, k, v)[:, 0], default(q, k, v)[:, 0])


@pytest.mark.parametrize("name", QUADRATIC)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_outputs_are_finite_and_shaped(name, dtype):
    q, k, v = qkv(dtype=dtype)
    core = build_core(name, 8, 3).to(dtype)
    out = core(q, k, v, bias=torch.zeros(1, 3, 20, 20, dtype=dtype))
    assert out.shape == q.shape and out.dtype == dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", QUADRATIC)
@pytest.mark.parametrize("N,d,h", [(16, 8, 2), (49, 32, 3), (64, 16, 4)])
def test_counted_cost_equals_the_closed_form(name, N, d, h):
    q, k, v = (t.float() for t in qkv(B=2, h=h, N=N, d=d))
    fc = count_flops(build_core(name, d, h), (q, k, v))
    expected = core_formula(name, 2, N, d, h)
    assert fc.unhandled == {}
    assert fc.macs == int(expected["macs"])
    assert fc.elementwise == int(expected["elementwise"])
