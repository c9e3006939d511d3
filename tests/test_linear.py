"""Kernelized attention: linear forms equal their quadratic definitions, stay finite, count as stated."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from vitspeed.attention import build_core, get_attention
from vitspeed.attention.linear import explicit_linear_attention
from vitspeed.flops import count_flops
from vitspeed.formulas import core_formula

LINEAR = ["linear_relu", "linear_elu", "linear_cosine", "linear_mean", "linear_sigmoid_softmax",
          "linear_angular", "taylor1", "efficient"]
# every variant with its default options, plus the non-default normalisation switches
CASES = [(name, {}) for name in LINEAR] + [("linear_cosine", {"normalize": True}),
                                           ("linear_mean", {"normalize": True}), ("taylor1", {"eps": 0.0}),
                                           ("linear_elu", {"form": "elu"}), ("linear_elu", {"form": "exp"})]


def qkv(B=2, h=3, N=20, d=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, h, N, d, generator=g, dtype=dtype) for _ in range(3)]


def test_variants_are_registered_as_linear_without_bias():
    for name in LINEAR:
        spec = get_attention(name)
        assert spec.family == "linear" and not spec.supports_bias
        assert spec.complexity == "O(N d^2)" and spec.formula is not None


@pytest.mark.parametrize("name,options", CASES)
@pytest.mark.parametrize("N", [17, 50])
def test_linear_form_equals_explicit_quadratic_form(name, options, N):
    q, k, v = qkv(N=N)
    core = build_core(name, 8, 3, **options)
    torch.testing.assert_close(core(q, k, v), core.explicit(q, k, v), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(explicit_linear_attention(name, q, k, v, **options), core.explicit(q, k, v))


# kernels whose weights can be negative: their sum normaliser can come near zero, which magnifies
# rounding (the instability the module documents), so float32 agreement is looser there
SIGNED_NORMALISER = {("linear_cosine", (("normalize", True),)), ("linear_mean", (("normalize", True),)), ("taylor1", ())}


@pytest.mark.parametrize("name,options", CASES)
def test_linear_form_equals_explicit_in_float32(name, options):
    q, k, v = qkv(N=33, dtype=torch.float32)
    core = build_core(name, 8, 3, **options)
    tol = 1e-3 if (name, tuple(options.items())) in SIGNED_NORMALISER else 1e-4
    torch.testing.assert_close(core(q, k, v), core.explicit(q, k, v), rtol=tol, atol=tol)


def _normalised(w, v, eps):
    return (w / (w.sum(-1, keepdim=True) + eps)) @ v


def test_weights_follow_the_published_kernels():
    q, k, v = qkv(N=24)
    N, d = 24, 8
    qh, kh = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    expected = {
        "linear_relu": _normalised(q.relu() @ k.relu().transpose(-1, -2), v, 1e-15),
        "linear_elu": _normalised((F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-1, -2), v, 1e-6),
        "linear_cosine": (qh @ kh.transpose(-1, -2)) @ v,
        "linear_mean": (q @ k.transpose(-1, -2) / N) @ v,
        "linear_sigmoid_softmax": _normalised(q.sigmoid() @ k.softmax(-2).transpose(-1, -2), v, 1e-6),
        "linear_angular": _normalised(0.5 + qh @ kh.transpose(-1, -2) / math.pi, v, 0.0),
        "taylor1": _normalised(1 + q @ k.transpose(-1, -2) / math.sqrt(d), v, 1e-6),
        "efficient": (q.softmax(-1) @ k.softmax(-2).transpose(-1, -2)) @ v,
    }
    for name, want in expected.items():
        torch.testing.assert_close(build_core(name, d, 3)(q, k, v), want, msg=name)
    # the signed sum normaliser of the cosine kernel and of the mean kernel
    torch.testing.assert_close(build_core("linear_cosine", d, 3, normalize=True)(q, k, v),
                               _normalised(qh @ kh.transpose(-1, -2), v, 1e-6))
    qm, km = q / math.sqrt(N), k / math.sqrt(N)
    torch.testing.assert_close(build_core("linear_mean", d, 3, normalize=True)(q, k, v),
                               _normalised(qm @ km.transpose(-1, -2), v, 1e-6))


def test_angular_weights_are_positive_and_sigmoid_softmax_normaliser_is_sum_of_sigmoid():
    q, k, _ = qkv(N=30)
    w = build_core("linear_angular", 8, 3).weights(q, k)
    assert w.min() >= 0.5 - 1 / math.pi - 1e-12 and w.max() <= 0.5 + 1 / math.pi + 1e-12
    w = build_core("linear_sigmoid_softmax", 8, 3).weights(q, k)
    torch.testing.assert_close(w.sum(-1), q.sigmoid().sum(-1))


def test_efficient_attention_rows_sum_to_one():
    q, k, _ = qkv(N=40)
    w = build_core("efficient", 8, 3).weights(q, k)
    assert w.shape == (2, 3, 40, 40)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 40, dtype=torch.float64))


@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_outputs_are_finite_shaped_and_keep_dtype(name, dtype):
    q, k, v = qkv(N=50, dtype=dtype)
    out = build_core(name, 8, 3)(q, k, v)
    assert out.shape == q.shape and out.dtype == dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", LINEAR)
def test_low_precision_inputs_are_computed_in_float32(name):
    q, k, v = qkv(N=50, dtype=torch.bfloat16)
    core = build_core(name, 8, 3)
    reference = core(q.float(), k.float(), v.float())
    torch.testing.assert_close(core(q, k, v).float(), reference, rtol=1e-2, atol=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast must not push the products to bf16
        torch.testing.assert_close(core(q.float(), k.float(), v.float()), reference)


@pytest.mark.parametrize("name", LINEAR)
def test_a_score_bias_is_refused(name):
    q, k, v = qkv()
    with pytest.raises(ValueError, match="bias"):
        build_core(name, 8, 3)(q, k, v, bias=torch.zeros(1, 3, 20, 20, dtype=torch.float64))


class _Shapes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out


@pytest.mark.parametrize("name", LINEAR)
def test_no_n_by_n_tensor_is_made(name):
    N = 53
    q, k, v = qkv(N=N, dtype=torch.float32)
    core = build_core(name, 8, 3)
    with _Shapes() as linear:
        core(q, k, v)
    with _Shapes() as quadratic:
        core.explicit(q, k, v)
    assert any(s[-2:] == (N, N) for s in quadratic.shapes)  # the probe does see an N x N map
    assert not any(s[-2:] == (N, N) for s in linear.shapes)
    assert max(math.prod(s) for s in linear.shapes) <= 2 * 3 * N * 9


@pytest.mark.parametrize("name,options", CASES)
@pytest.mark.parametrize("N,d,h", [(16, 8, 2), (49, 32, 3), (64, 16, 4)])
def test_counted_cost_equals_the_closed_form(name, options, N, d, h):
    q, k, v = (t.float() for t in qkv(B=2, h=h, N=N, d=d))
    fc = count_flops(build_core(name, d, h, **options), (q, k, v))
    expected = core_formula(name, 2, N, d, h, **options)
    assert fc.unhandled == {}
    assert fc.macs == int(expected["macs"])
    assert fc.elementwise == int(expected["elementwise"])


# Hand counts at B=2, h=2, N=16, d=8, independent of the formulas module:
# linear_relu: relu on q and k (2BhNd = 1024); K^T[V|1] and Q(K^T[V|1]), BhNd(d+1) = 4608 MACs each;
#   eps added to the BhN = 64 normalisers, BhNd = 512 divisions.
# efficient: softmax of q over d and of k over N (3 per element each, 2 x 1536); K^T V and Q(K^T V),
#   Bh d d N = 4096 MACs each.
@pytest.mark.parametrize("name,macs,elementwise", [("linear_relu", 9216, 1024 + 64 + 512),
                                                   ("efficient", 8192, 2 * 3 * 512)])
def test_counted_cost_equals_a_hand_count(name, macs, elementwise):
    q, k, v = (t.float() for t in qkv(B=2, h=2, N=16, d=8))
    fc = count_flops(build_core(name, 8, 2), (q, k, v))
    assert (fc.macs, fc.elementwise, fc.unhandled) == (macs, elementwise, {})


def test_formulas_are_linear_in_tokens():
    import sympy as sp

    B, N, d, h = sp.symbols("B N d h", positive=True)
    for name in LINEAR:
        expr = core_formula(name, B, N, d, h)["macs"]
        assert sp.degree(sp.expand(expr), N) == 1, name


def test_elu_plus_one_is_elu_plus_one_and_avoids_expm1_on_the_cpu():
    from vitspeed.attention.linear import elu_plus_one
    from vitspeed.traffic import aten_kernels

    x = torch.cat([torch.linspace(-30, 30, 601, dtype=torch.float64), torch.tensor([0.0, -0.0, 1e-12, -1e-12])])
    torch.testing.assert_close(elu_plus_one(x), F.elu(x) + 1, rtol=1e-12, atol=1e-15)
    assert (elu_plus_one(x) > 0).all()  # a positive feature map: the normaliser never vanishes
    x32 = x.float()
    torch.testing.assert_close(elu_plus_one(x32), F.elu(x32) + 1)
    cpu_ops = aten_kernels(lambda: elu_plus_one(x32))
    assert not {"aten::elu", "aten::expm1"} & set(cpu_ops), cpu_ops
    # elsewhere (meta stands in for CUDA here) the two-kernel elu + 1
    assert "aten::elu" in aten_kernels(lambda: elu_plus_one(torch.empty(4, device="meta")))
    # an explicit form wins over the device; the two forms agree
    assert "aten::elu" in aten_kernels(lambda: elu_plus_one(x32, "elu"))
    torch.testing.assert_close(elu_plus_one(x, "elu"), elu_plus_one(x, "exp"), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="unknown elu form 'fast'; valid choices: auto, exp, elu"):
        elu_plus_one(x, "fast")
    with pytest.raises(ValueError, match="valid choices: auto, exp, elu"):
        build_core("linear_elu", 8, 2, form="fast")
