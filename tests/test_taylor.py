"""QT-ViT Taylor kernels: exact kernels, linear = explicit forms, dtypes, options, FLOPs formulas."""
from __future__ import annotations

import pytest
import sympy
import torch

from vitspeed.attention import build_core, get_attention, list_attentions
from vitspeed.attention.taylor import EPS, Taylor2Chunk, Taylor2Compact, Taylor2Pool, Taylor2Random, kernel_attention
from vitspeed.flops import count_flops

B, H, N, D = 2, 3, 10, 8
VARIANTS = [
    ("taylor2_full", {}),
    ("taylor2_compact", {}),
    ("taylor2_compact", {"alpha": 0.7, "beta": 0.5, "gamma": 1.3}),
    ("taylor2_compact", {"mode": "reference"}),
    ("taylor2_compact", {"learnable": False}),
    ("taylor2_pool", {}),
    ("taylor2_pool", {"p": 4}),
    ("taylor2_pool", {"p": 1}),
    ("taylor2_chunk", {}),
    ("taylor2_chunk", {"c": 4}),
    ("taylor2_chunk", {"c": 1}),
    ("taylor2_random", {}),
    ("taylor2_random", {"seed": 3}),
]
IDS = [f"{n}-{o}" for n, o in VARIANTS]


def _qkv(dtype=torch.float64, scale=0.5, n=N, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(B, H, n, d, generator=g, dtype=torch.float64) * scale).to(dtype) for _ in range(3)]


def _core(name, d=D, **options):
    return build_core(name, d, H, **options).double()


def _normalized(kernel: torch.Tensor) -> torch.Tensor:
    return kernel / (kernel.sum(-1, keepdim=True) + EPS)  # the cores add eps = 1e-6 to the normalizer


def test_all_taylor_variants_registered_as_linear_without_bias():
    names = {"taylor2_full", "taylor2_compact", "taylor2_pool", "taylor2_chunk", "taylor2_random"}
    assert names <= set(list_attentions("linear"))
    for name in names:
        spec = get_attention(name)
        assert spec.family == "linear" and not spec.supports_bias and spec.formula is not None


def test_full_weights_are_normalized_second_order_taylor():
    q, k, _ = _qkv()
    s = q @ k.transpose(-2, -1) / D**0.5
    expected = _normalized(1 + s + s**2 / 2)
    core = _core("taylor2_full")
    torch.testing.assert_close(core.attention_weights(q, k), expected, rtol=1e-9, atol=1e-12)
    phi_q, phi_k = core.features(q, k)
    assert phi_q.shape[-1] == (D + 1) ** 2 + 1
    torch.testing.assert_close(phi_q @ phi_k.transpose(-2, -1), 1 + s + s**2 / 2)


def test_full_output_equals_taylor_weights_times_v():
    q, k, v = _qkv()
    s = q @ k.transpose(-2, -1) / D**0.5
    expected = _normalized(1 + s + s**2 / 2) @ v
    torch.testing.assert_close(_core("taylor2_full")(q, k, v), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name, options", [("taylor2_chunk", {"c": 1}), ("taylor2_pool", {"p": 1})])
def test_chunk_1_and_pool_1_equal_full(name, options):
    q, k, v = _qkv()
    full = _core("taylor2_full")
    other = _core(name, **options)
    torch.testing.assert_close(other(q, k, v), full(q, k, v), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(other.attention_weights(q, k), full.attention_weights(q, k))


def test_chunk_kernel_keeps_linear_and_constant_terms_exactly():
    q, k, _ = _qkv()
    c = 2
    s = q @ k.transpose(-2, -1) / D**0.5
    qc, kc = q.unflatten(-1, (c, D // c)), k.unflatten(-1, (c, D // c))
    s_c = torch.einsum("bhnci,bhmci->bhnmc", qc, kc) / D**0.5
    expected = 1 + s + (s_c**2).sum(-1) / 2
    phi_q, phi_k = _core("taylor2_chunk", c=c).features(q, k)
    assert phi_q.shape[-1] == D * D // c + D + 1
    torch.testing.assert_close(phi_q @ phi_k.transpose(-2, -1), expected)


def test_pool_kernel_is_taylor_of_pooled_vectors():
    q, k, _ = _qkv()
    p = 2
    qp, kp = q.unflatten(-1, (D // p, p)).mean(-1), k.unflatten(-1, (D // p, p)).mean(-1)
    s = qp @ kp.transpose(-2, -1) / (D // p) ** 0.5
    phi_q, phi_k = _core("taylor2_pool", p=p).features(q, k)
    assert phi_q.shape[-1] == (D // p + 1) ** 2 + 1
    torch.testing.assert_close(phi_q @ phi_k.transpose(-2, -1), 1 + s + s**2 / 2)


def test_compact_paper_kernel_and_dimension():
    q, k, _ = _qkv()
    alpha, beta, gamma = 0.7, 0.5, 1.3
    core = _core("taylor2_compact", alpha=alpha, beta=beta, gamma=gamma)
    phi_q, phi_k = core.features(q, k)
    assert phi_q.shape[-1] == 2 * D + 1
    quad = (q**2) @ (k**2).transpose(-2, -1)
    dots = q @ k.transpose(-2, -1)
    expected = (alpha**2 * quad + 2 * beta**2 * dots / D**0.5 + gamma**2 + 1) / 2
    torch.testing.assert_close(phi_q @ phi_k.transpose(-2, -1), expected)
    macs = get_attention("taylor2_compact").formula(B, N, D, H)["macs"]
    assert macs == 2 * B * H * N * (2 * D + 1) * (D + 1)


def test_compact_default_weights_are_at_least_one_half():
    q, k, _ = _qkv(scale=5.0)
    core = _core("taylor2_compact")
    core.alpha.data.fill_(-3.0)  # alpha enters squared: the sign cannot break the normalizer
    core.gamma.data.fill_(0.0)
    phi_q, phi_k = core.features(q, k)
    assert (phi_q @ phi_k.transpose(-2, -1)).min() >= 0.5 - 1e-12


def test_compact_reference_kernel():
    q, k, _ = _qkv()
    core = _core("taylor2_compact", mode="reference", gamma=0.8)
    assert not hasattr(core, "alpha")

    def unit(x):
        return x / x.norm(dim=-1, keepdim=True)

    uq, uk = unit(unit(q) ** 2), unit(unit(k) ** 2)
    phi_q, phi_k = core.features(q, k)
    assert phi_q.shape[-1] == D + 1
    torch.testing.assert_close(phi_q @ phi_k.transpose(-2, -1), uq @ uk.transpose(-2, -1) + 0.8**2)


def test_compact_learnable_scalars():
    learn = build_core("taylor2_compact", D, H)
    assert {n for n, _ in learn.named_parameters()} == {"alpha", "gamma"}
    fixed = build_core("taylor2_compact", D, H, learnable=False)
    assert list(fixed.parameters()) == [] and {"alpha", "gamma"} <= {n for n, _ in fixed.named_buffers()}
    q, k, v = _qkv(torch.float32)
    learn(q, k, v).square().sum().backward()
    assert learn.alpha.grad is not None and learn.alpha.grad.abs() > 0
    assert learn.gamma.grad is not None and learn.gamma.grad.abs() > 0


def test_random_kernel_pairs_seeded_and_unbiased_form():
    q, k, _ = _qkv()
    core = _core("taylor2_random")
    pairs = dict(core.named_buffers())["pairs"]
    assert pairs.shape == (2, D) and pairs.dtype == torch.long
    flat = pairs[0] * D + pairs[1]
    assert len(set(flat.tolist())) == D  # d distinct (i, j) cells of the d x d grid
    assert torch.equal(pairs, _core("taylor2_random", seed=0).pairs)
    assert not torch.equal(pairs, _core("taylor2_random", seed=1).pairs)
    i, j = pairs
    s = q @ k.transpose(-2, -1) / D**0.5
    quad = (q[..., i] * q[..., j]) @ (k[..., i] * k[..., j]).transpose(-2, -1)
    phi_q, phi_k = core.features(q, k)
    assert phi_q.shape[-1] == 2 * D + 1
    torch.testing.assert_close(phi_q @ phi_k.transpose(-2, -1), 1 + s + quad / 2)


@pytest.mark.parametrize("name, options", VARIANTS, ids=IDS)
def test_linear_form_equals_explicit_form(name, options):
    q, k, v = _qkv()
    core = _core(name, **options)
    phi_q, phi_k = core.features(q, k)
    scores = phi_q @ phi_k.transpose(-2, -1)  # (B, h, N, N), written out here independently
    expected = scores / (scores.sum(-1, keepdim=True) + core.eps) @ v
    out = core(q, k, v)
    assert out.shape == v.shape and out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(core.explicit(q, k, v), expected)


@pytest.mark.parametrize("name, options", VARIANTS, ids=IDS)
def test_finite_in_fp32_and_bf16(name, options):
    core = build_core(name, D, H, **options)
    q, k, v = _qkv(torch.float32, scale=1.0)
    ref = core(q, k, v)
    assert ref.dtype == torch.float32 and torch.isfinite(ref).all()
    qb, kb, vb = (t.to(torch.bfloat16) for t in (q, k, v))
    out = core(qb, kb, vb)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    if name != "taylor2_random":  # no positivity guarantee: normalizer may be near 0
        torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(core(q, k, v)).all()


def test_fp16_accumulates_in_fp32():
    # Large features summed over many keys overflow fp16 (max 65504) unless accumulated in fp32.
    q, k, v = _qkv(torch.float64, scale=6.0, n=512)
    naive = kernel_attention(*_core("taylor2_full").features(q.half(), k.half()), v.half())
    assert not torch.isfinite(naive).all()  # the same inputs do overflow when accumulated in fp16
    core = build_core("taylor2_full", D, H)
    out = core(*(t.half() for t in (q, k, v)))
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), _core("taylor2_full")(q, k, v), rtol=1e-2, atol=1e-2)


def test_score_bias_is_rejected():
    q, k, v = _qkv(torch.float32)
    with pytest.raises(ValueError, match="bias"):
        build_core("taylor2_compact", D, H)(q, k, v, bias=torch.zeros(N, N))


@pytest.mark.parametrize("name, options", [
    ("taylor2_chunk", {"c": 3}),
    ("taylor2_chunk", {"c": 0}),
    ("taylor2_chunk", {"c": 16}),
    ("taylor2_pool", {"p": 0}),
    ("taylor2_pool", {"p": -2}),
    ("taylor2_pool", {"p": 3}),
    ("taylor2_pool", {"p": 2.0}),
    ("taylor2_compact", {"mode": "fast"}),
    ("taylor2_compact", {"mode": "reference", "beta": 1.0}),
    ("taylor2_compact", {"kappa": 1.0}),
    ("taylor2_full", {"p": 2}),
    ("taylor2_random", {"c": 2}),
])
def test_bad_options_raise(name, options):
    with pytest.raises(ValueError, match="valid"):  # every message names the valid choices
        build_core(name, D, H, **options)


@pytest.mark.parametrize("name, options", VARIANTS, ids=IDS)
def test_counted_flops_equal_formula(name, options):
    spec = get_attention(name)
    for b, n, d in [(1, 7, 8), (2, 16, 8), (1, 9, 16)]:
        core = build_core(name, d, H, **options)
        inputs = tuple(torch.randn(b, H, n, d) for _ in range(3))
        counted = count_flops(core, inputs)
        expected = spec.formula(b, n, d, H, **{**spec.options, **options})
        assert counted.unhandled == {}
        assert counted.macs == expected["macs"], (b, n, d)
        assert counted.elementwise == expected["elementwise"], (b, n, d)


@pytest.mark.parametrize("name, options", VARIANTS, ids=IDS)
def test_formula_accepts_symbols(name, options):
    spec = get_attention(name)
    b, n, d, h = sympy.symbols("B N d h", positive=True, integer=True)
    merged = {**spec.options, **options}
    symbolic = spec.formula(b, n, d, h, **merged)
    numeric = spec.formula(2, 16, 8, 3, **merged)
    for key in ("macs", "elementwise"):
        assert sympy.sympify(symbolic[key]).subs({b: 2, n: 16, d: 8, h: 3}) == numeric[key]


def test_feature_dimensions_order_costs():
    # Table 3's ordering of feature dimensions at d = 16: full > chunk c=2 > pool p=2 > compact.
    d = 16
    dims = {
        "full": _core("taylor2_full", d=d).features(*_qkv(d=d)[:2])[0].shape[-1],
        "chunk": Taylor2Chunk(d, H, c=2).features(*_qkv(torch.float32, d=d)[:2])[0].shape[-1],
        "pool": Taylor2Pool(d, H, p=2).features(*_qkv(torch.float32, d=d)[:2])[0].shape[-1],
        "compact": Taylor2Compact(d, H).features(*_qkv(torch.float32, d=d)[:2])[0].shape[-1],
        "random": Taylor2Random(d, H).features(*_qkv(torch.float32, d=d)[:2])[0].shape[-1],
    }
    assert dims == {"full": 290, "chunk": 145, "pool": 82, "compact": 33, "random": 33}


def test_constant_feature_block_equals_the_appended_feature_with_the_same_macs():
    q, k, v = _qkv()
    mq, mk = q * q, k * 0.5
    c = 0.7
    split = kernel_attention(mq, mk, v, const=c)
    appended = kernel_attention(torch.nn.functional.pad(mq, (0, 1), value=c),
                                torch.nn.functional.pad(mk, (0, 1), value=c), v)
    assert torch.allclose(split, appended, rtol=1e-12, atol=1e-12)

    class Split(torch.nn.Module):
        def forward(self, a, b, x):
            return kernel_attention(a, b, x, const=c)

    class Appended(torch.nn.Module):
        def forward(self, a, b, x):
            pad = torch.nn.functional.pad
            return kernel_attention(pad(a, (0, 1), value=c), pad(b, (0, 1), value=c), x)

    s, a = count_flops(Split(), (mq, mk, v)), count_flops(Appended(), (mq, mk, v))
    assert (s.macs, s.elementwise) == (a.macs, a.elementwise) and not s.unhandled


@pytest.mark.parametrize("name", ["taylor2_full", "taylor2_pool", "taylor2_chunk", "taylor2_random"])
def test_kronecker_kernels_never_pad_their_feature_map(name):
    # the constant feature is a block of its own: the only pads are of v (and of the Kronecker
    # vector w), never of a (d+1)^2-wide or 2d-wide map
    core = _core(name)
    q, k, v = _qkv()
    padded = []

    class Spy(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.nn.functional.pad:
                padded.append(args[0].shape[-1])
            return func(*args, **(kwargs or {}))

    with torch.inference_mode(), Spy():
        core(q, k, v)
    assert padded and max(padded) <= D + 1
