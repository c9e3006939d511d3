"""Linear (kernelized) attention: O(N d^2) per head, no N x N tensor.

Kernelized attention replaces the softmax weight exp(q.k) by a product of feature maps:

    O_i = phi(q_i) (sum_j phi(k_j)^T v_j) / (phi(q_i) . sum_j phi(k_j))

Computing the d x d state ``phi(K)^T V`` first makes the cost linear in the number of tokens N.
Variants (the kernels of QT-ViT Table 2 plus two classics):

- ``linear_relu``   phi = ReLU (EfficientViT), eps 1e-15.
- ``linear_elu``    phi = elu(x) + 1 (Katharopoulos et al.), eps 1e-6. On the CPU it is computed as
  exp(min(x, 0)) + max(x, 0), the same function: in early runs PyTorch's CPU ``elu`` (through
  ``expm1``, AVX-512 kernel, torch 2.11) ran several times slower than the four cheap steps together
  on the study's CPU; later runs time the two alike (the linear-kernels chapter times both). On CUDA
  ``elu`` + 1 is two kernels against four, so it stays.
- ``linear_cosine`` phi = x / ||x|| (Hydra's kernel). By default Hydra's own form,
  phi(Q)(phi(K)^T V) with no normaliser, as its reference code computes it. The weights qhat.khat
  are signed, so the section-4 normaliser qhat . sum khat can be zero or negative: on random inputs
  about half of the rows get a normaliser <= 0 and blow up. ``normalize=True`` applies it anyway
  (eps 1e-6, sign unguarded) for the comparison in the linear-kernels chapter.
- ``linear_mean``   phi = x / sqrt(N) (PolyNL). The 1/sqrt(N) on both sides *is* the normalisation:
  the weights are q.k / N, a mean over positions. With the sum normaliser the 1/sqrt(N) would
  cancel, and q . sum k is signed, so by default (``normalize=False``) the output is
  Q (K^T V) / N; ``normalize=True`` applies the section-4 normaliser literally (eps 1e-6, sign
  unguarded). The 1/N is applied to the d x d state (same value, fewer operations).
- ``linear_sigmoid_softmax`` phi_q = sigmoid, phi_k = softmax over positions (AFT-simple's maps, in
  the kernelized form QT-ViT compares; AFT-simple itself gates per channel). Since
  sum_j phi(k_j) = 1 per channel, the normaliser is sum_c sigmoid(q_c) > 0.
- ``linear_angular`` Castling-ViT: Sim(q, k) = 1/2 + (1/pi) qhat.khat in [0.18, 0.82]. Linear form:
  num_i = 1/2 sum_j v_j + (1/pi) qhat_i (Khat^T V), den_i = N/2 + (1/pi) qhat_i . sum_j khat_j > 0.
- ``taylor1``       ViTALiTy: phi(x) = [x / d^(1/4), 1], weights 1 + q.k / sqrt(d); normaliser
  N + q . sum_j k_j / sqrt(d) (eps 1e-6), which is signed for large |q.k|: not guarded.
- ``efficient``     Efficient Attention (Shen et al.): rho_q = softmax of each q row (channels),
  rho_k = softmax of each k column (positions), E = rho_q (rho_k^T V); no separate normaliser since
  the rows of rho_q rho_k^T sum to 1.

Implementation (all variants): fp16/bf16 inputs are computed in float32 with autocast off, as
EfficientViT does (its linear attention overflows in fp16 otherwise), and the result is cast back.
The numerator and the normaliser come from one product by padding V with a column of ones
(EfficientViT's trick): phi(Q) (phi(K)^T [V, 1]) = [numerator, normaliser]. On CPU it timed the
same as a separate sum plus matrix-vector product (GPU not measured) and it launches one kernel
fewer. Each core's ``explicit(q, k, v)`` computes the same attention the O(N^2 d) way (N x N
weights), for tests.

Counting convention of the formulas (see :mod:`vitspeed.flops`): ``macs`` = multiply-accumulates of
the products; ``elementwise`` = one op per output element of elementwise ops, 3 per element of a
softmax, one per input element of a reduction; dtype casts, padding and slicing are free.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from vitspeed.attention.registry import AttentionSpec, build_core, register_attention

__all__ = [
    "LinearAttention",
    "ReluLinearAttention",
    "EluLinearAttention",
    "elu_plus_one",
    "ELU_FORMS",
    "CosineLinearAttention",
    "MeanLinearAttention",
    "SigmoidSoftmaxLinearAttention",
    "AngularLinearAttention",
    "Taylor1LinearAttention",
    "EfficientAttention",
    "explicit_linear_attention",
    "check_no_bias",
    "compute_in_fp32",
    "no_autocast",
    "normalized_product",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


# --- shared helpers ---------------------------------------------------------------------------

def check_no_bias(bias: torch.Tensor | None, name: str) -> None:
    """Raise ``ValueError`` if a score bias reaches a kernelized core (it has no N x N scores)."""
    if bias is not None:
        raise ValueError(
            f"attention {name!r} is kernelized and cannot add a score bias; pass bias=None "
            "(variants that take a bias: the quadratic family, e.g. softmax)"
        )


def compute_in_fp32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Upcast fp16/bf16 tensors to float32 (others unchanged)."""
    return tuple(t.float() if t.dtype in _LOW_PRECISION else t for t in tensors)


def no_autocast(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """A context disabling autocast on ``t``'s device if it is on (so fp32 products stay fp32)."""
    dev = t.device.type
    try:
        if torch.is_autocast_enabled(dev):
            return torch.autocast(dev, enabled=False)
    except (RuntimeError, TypeError):  # device types without autocast (meta, ...)
        pass
    return contextlib.nullcontext()


def normalized_product(
    qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor, eps: float, mean: bool = False
) -> torch.Tensor:
    """phi(Q) (phi(K)^T V) / (phi(Q) . sum_j phi(K_j) + eps) via one product with [V, 1].

    ``mean=True`` divides the state by N first (phi(K)^T V / N and mean phi(K), FLatten's form):
    the quotient is unchanged up to the eps term.
    Cost: 2 B h N dk (dv + 1) MACs; B h N (eps) + B h N dv (divide) [+ B h dk (dv + 1) for mean].
    """
    v1 = F.pad(v, (0, 1), value=1.0)
    state = kf.transpose(-2, -1) @ v1  # (B, h, dk, dv + 1)
    if mean:
        state = state / int(kf.shape[-2])
    out = qf @ state
    return out[..., :-1] / (out[..., -1:] + eps)


def _affine_product(
    qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor, a: float, b: float, eps: float
) -> torch.Tensor:
    """Attention with weights a + b qf.kf, normalised by their row sum, in O(N d^2).

    [num, den] = b qf (kf^T [V, 1]) + a sum_j [v_j, 1]. A multiplication by a = 1 and an eps of 0
    are skipped.
    """
    v1 = F.pad(v, (0, 1), value=1.0)
    state = (kf.transpose(-2, -1) @ v1) * b
    base = v1.sum(dim=-2, keepdim=True)  # [sum_j v_j, N]
    if a != 1.0:
        base = base * a
    out = qf @ state + base
    den = out[..., -1:]
    if eps:
        den = den + eps
    return out[..., :-1] / den


# --- the cores ----------------------------------------------------------------------------------

class LinearAttention(nn.Module):
    """Base class of the kernelized cores: feature maps, then the linear-time normalised product.

    Subclasses define ``features(q, k) -> (phi(q), phi(k))`` and, if the kernel is not a plain
    feature-map product, override ``_linear`` and ``weights``.
    Attributes: ``eps`` (added to the normaliser), ``normalize`` (divide by the weight row sums).
    """

    variant = "linear"
    eps: float = 1e-6
    normalize: bool = True

    def __init__(self, head_dim: int, num_heads: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.num_heads = num_heads

    def features(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The feature maps phi(q), phi(k) on (B, h, N, d) tensors."""
        raise NotImplementedError

    def _linear(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        qf, kf = self.features(q, k)
        if self.normalize:
            return normalized_product(qf, kf, v, self.eps)
        return qf @ (kf.transpose(-2, -1) @ v)

    def weights(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The (B, h, N, N) unnormalised weights phi(q_i).phi(k_j) (explicit form only)."""
        qf, kf = self.features(q, k)
        return qf @ kf.transpose(-2, -1)

    def forward(self, q, k, v, bias=None, grid=None):
        """phi(q_i) (sum_j phi(k_j)^T v_j), divided by phi(q_i).sum_j phi(k_j) when normalised, for
        (B, h, N, d) ``q``, ``k``, ``v``: O(N d^2), computed in float32 (autocast off) and cast back to
        ``v``'s dtype. A ``bias`` raises ValueError (kernels cannot take one); ``grid`` is unused."""
        check_no_bias(bias, self.variant)
        dtype = v.dtype
        with no_autocast(q):
            q, k, v = compute_in_fp32(q, k, v)
            out = self._linear(q, k, v)
        return out.to(dtype)

    def explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The same attention the quadratic way: (weights, normalised by row sums) @ V, O(N^2 d)."""
        dtype = v.dtype
        q, k, v = compute_in_fp32(q, k, v)
        attn = self.weights(q, k)
        if self.normalize:
            attn = attn / (attn.sum(dim=-1, keepdim=True) + self.eps)
        return (attn @ v).to(dtype)


class ReluLinearAttention(LinearAttention):
    """EfficientViT's ReLU linear attention: phi = ReLU, eps 1e-15."""

    variant = "linear_relu"

    def __init__(self, head_dim: int, num_heads: int, eps: float = 1e-15) -> None:
        super().__init__(head_dim, num_heads)
        self.eps = eps

    def features(self, q, k):
        return F.relu(q), F.relu(k)


ELU_FORMS = ("auto", "exp", "elu")


def _check_elu_form(form: str) -> str:
    if form not in ELU_FORMS:
        raise ValueError(f"unknown elu form {form!r}; valid choices: {', '.join(ELU_FORMS)}")
    return form


def elu_plus_one(x: torch.Tensor, form: str = "auto") -> torch.Tensor:
    """elu(x) + 1, elementwise: x + 1 for x > 0, exp(x) otherwise.

    ``form``: 'exp' computes exp(min(x, 0)) + max(x, 0) (4 elementwise ops per element), avoiding the
    ``expm1`` behind PyTorch's CPU ``elu`` (slow in some of the study's runs); 'elu' computes ``F.elu(x) + 1`` (2 ops); 'auto'
    (default) takes 'exp' on the CPU and 'elu' elsewhere.
    """
    _check_elu_form(form)
    if form == "exp" or (form == "auto" and x.device.type == "cpu"):
        return torch.exp(x.clamp(max=0.0)) + F.relu(x)
    return F.elu(x) + 1.0


class EluLinearAttention(LinearAttention):
    """Katharopoulos et al.: phi = elu(x) + 1 (positive), eps 1e-6; ``form`` as in :func:`elu_plus_one`."""

    variant = "linear_elu"

    def __init__(self, head_dim: int, num_heads: int, eps: float = 1e-6, form: str = "auto") -> None:
        super().__init__(head_dim, num_heads)
        self.eps = eps
        self.form = _check_elu_form(form)

    def features(self, q, k):
        return elu_plus_one(q, self.form), elu_plus_one(k, self.form)


class CosineLinearAttention(LinearAttention):
    """Hydra's cosine kernel phi = x / ||x||, unnormalised as in Hydra; ``normalize=True`` divides by
    the signed qhat . sum khat (section-4 form, unstable)."""

    variant = "linear_cosine"

    def __init__(self, head_dim: int, num_heads: int, normalize: bool = False, eps: float = 1e-6) -> None:
        super().__init__(head_dim, num_heads)
        self.normalize = normalize
        self.eps = eps

    def features(self, q, k):
        return F.normalize(q, dim=-1), F.normalize(k, dim=-1)


class MeanLinearAttention(LinearAttention):
    """PolyNL's mean kernel phi = x / sqrt(N): weights q.k / N, i.e. Q (K^T V) / N by default."""

    variant = "linear_mean"

    def __init__(self, head_dim: int, num_heads: int, normalize: bool = False, eps: float = 1e-6) -> None:
        super().__init__(head_dim, num_heads)
        self.normalize = normalize
        self.eps = eps

    def features(self, q, k):
        s = int(q.shape[-2]) ** -0.5
        return q * s, k * s

    def _linear(self, q, k, v):
        if self.normalize:
            return super()._linear(q, k, v)
        # the 1/N goes on the d x d state instead of the two N x d feature maps
        return q @ ((k.transpose(-2, -1) @ v) / int(k.shape[-2]))


class SigmoidSoftmaxLinearAttention(LinearAttention):
    """AFT-simple's maps in kernelized form: phi_q = sigmoid(q), phi_k = softmax of k over positions."""

    variant = "linear_sigmoid_softmax"

    def __init__(self, head_dim: int, num_heads: int, eps: float = 1e-6) -> None:
        super().__init__(head_dim, num_heads)
        self.eps = eps

    def features(self, q, k):
        return torch.sigmoid(q), k.softmax(dim=-2)


class _AffineKernelAttention(LinearAttention):
    """Weights a + b phi(q).phi(k) normalised by their row sum, computed in O(N d^2)."""

    a: float = 1.0
    b: float = 1.0

    def _linear(self, q, k, v):
        qf, kf = self.features(q, k)
        return _affine_product(qf, kf, v, self.a, self.b, self.eps)

    def weights(self, q, k):
        qf, kf = self.features(q, k)
        return self.a + self.b * (qf @ kf.transpose(-2, -1))


class AngularLinearAttention(_AffineKernelAttention):
    """Castling-ViT's linear angular kernel: Sim = 1/2 + (1/pi) qhat.khat, always positive (no eps)."""

    variant = "linear_angular"
    a = 0.5
    b = 1.0 / math.pi

    def __init__(self, head_dim: int, num_heads: int) -> None:
        super().__init__(head_dim, num_heads)
        self.eps = 0.0

    def features(self, q, k):
        return F.normalize(q, dim=-1), F.normalize(k, dim=-1)


class Taylor1LinearAttention(_AffineKernelAttention):
    """ViTALiTy's first-order Taylor kernel: weights 1 + q.k / sqrt(d), phi(x) = [x / d^(1/4), 1]."""

    variant = "taylor1"

    def __init__(self, head_dim: int, num_heads: int, eps: float = 1e-6) -> None:
        super().__init__(head_dim, num_heads)
        self.b = head_dim ** -0.5
        self.eps = eps

    def features(self, q, k):
        return q, k  # the 1/sqrt(d) is applied to the d x (d+1) state


class EfficientAttention(LinearAttention):
    """Efficient Attention (Shen et al.): softmax(q over channels) (softmax(k over positions)^T V)."""

    variant = "efficient"
    normalize = False

    def features(self, q, k):
        return q.softmax(dim=-1), k.softmax(dim=-2)


def explicit_linear_attention(
    core: str | nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **options: Any
) -> torch.Tensor:
    """Reference O(N^2 d) evaluation of a kernelized variant (a core instance or a registry name)."""
    if isinstance(core, str):
        core = build_core(core, q.shape[-1], q.shape[1], **options)
    if not hasattr(core, "explicit"):
        raise ValueError(f"core {type(core).__name__} has no explicit form; give a linear-family variant")
    return core.explicit(q, k, v)


# --- closed-form counts of the cores, in the counter's conventions -------------------------------

def _normalized_cost(B, N, dk, dv, h, mean=False):
    """MACs and elementwise ops of :func:`normalized_product`."""
    macs = 2 * B * h * N * dk * (dv + 1)
    elementwise = B * h * N + B * h * N * dv + (B * h * dk * (dv + 1) if mean else 0)
    return macs, elementwise


def _with_features(feature_ops: Callable[[Any, Any, Any, Any], Any]):
    """Formula of a plain feature-map core whose phi costs ``feature_ops(B, N, d, h)`` ops."""

    def formula(B, N, d, h, normalize=True, eps=None):
        if normalize:
            macs, elementwise = _normalized_cost(B, N, d, d, h)
        else:
            macs, elementwise = 2 * B * h * N * d * d, 0
        return {"macs": macs, "elementwise": feature_ops(B, N, d, h) + elementwise}

    return formula


def _elu_formula(B, N, d, h, normalize=True, eps=None, form="auto"):
    # feature map on q and k: clamp, exp, relu, add (form 'exp', and 'auto' as counted on the CPU) or
    # elu, add (form 'elu'; 'auto' runs it on CUDA, so counts traced there are that much lower)
    per_element = 2 if form == "elu" else 4
    return _with_features(lambda B, N, d, h: per_element * 2 * B * h * N * d)(B, N, d, h, normalize, eps)


def _normalize_ops(B, N, d, h):
    # F.normalize on q and k: vector norm (input elements), clamp_min (per row), divide
    return 2 * (B * h * N * d + B * h * N + B * h * N * d)


def _mean_formula(B, N, d, h, normalize=False, eps=None):
    if normalize:
        macs, elementwise = _normalized_cost(B, N, d, d, h)
        return {"macs": macs, "elementwise": 2 * B * h * N * d + elementwise}
    return {"macs": 2 * B * h * N * d * d, "elementwise": B * h * d * d}


def _affine_formula(scale_a: bool, eps: bool, feature_ops):
    def formula(B, N, d, h, **options):
        # the core skips the eps addition when eps is 0 (an option of taylor1)
        with_eps = eps and options.get("eps", 1.0) != 0
        macs = 2 * B * h * N * d * (d + 1)
        elementwise = (feature_ops(B, N, d, h)
                       + B * h * d * (d + 1)  # b * state
                       + B * h * N * (d + 1)  # sum of [v, 1] over positions
                       + (B * h * (d + 1) if scale_a else 0)  # a * that sum
                       + B * h * N * (d + 1)  # add
                       + (B * h * N if with_eps else 0)
                       + B * h * N * d)  # divide
        return {"macs": macs, "elementwise": elementwise}

    return formula


def _efficient_formula(B, N, d, h):
    return {"macs": 2 * B * h * N * d * d, "elementwise": 6 * B * h * N * d}  # two softmaxes


_L = dict(family="linear", supports_bias=False, complexity="O(N d^2)")

register_attention(AttentionSpec(
    name="linear_relu", core=ReluLinearAttention, options={"eps": 1e-15},
    summary="EfficientViT ReLU linear attention, phi = ReLU, fp32, normaliser from a [V, 1] product",
    paper="cai2023efficientvit", formula=_with_features(lambda B, N, d, h: 2 * B * h * N * d), **_L))
register_attention(AttentionSpec(
    name="linear_elu", core=EluLinearAttention, options={"eps": 1e-6, "form": "auto"},
    summary="linear transformer kernel phi = elu(x) + 1 (Katharopoulos et al.)",
    paper="katharopoulos2020transformers", formula=_elu_formula, **_L))
register_attention(AttentionSpec(
    name="linear_cosine", core=CosineLinearAttention, options={"normalize": False, "eps": 1e-6},
    summary="Hydra cosine kernel phi = x/||x||, no normaliser as in Hydra (normalize=True: signed sum)",
    paper="bolya2022hydra", formula=_with_features(_normalize_ops), **_L))
register_attention(AttentionSpec(
    name="linear_mean", core=MeanLinearAttention, options={"normalize": False, "eps": 1e-6},
    summary="PolyNL mean kernel phi = x/sqrt(N): Q (K^T V) / N (normalize=True: sum normaliser)",
    paper="babiloni2021polynl", formula=_mean_formula, **_L))
register_attention(AttentionSpec(
    name="linear_sigmoid_softmax", core=SigmoidSoftmaxLinearAttention, options={"eps": 1e-6},
    summary="AFT-simple maps as kernel: phi(q) = sigmoid(q), phi(k) = softmax of k over positions",
    paper="zhai2021aft", formula=_with_features(lambda B, N, d, h: 4 * B * h * N * d), **_L))
register_attention(AttentionSpec(
    name="linear_angular", core=AngularLinearAttention, options={},
    summary="Castling-ViT linear angular kernel 1/2 + (1/pi) cos(q, k), normalised (always positive)",
    paper="you2023castling", formula=_affine_formula(True, False, _normalize_ops), **_L))
register_attention(AttentionSpec(
    name="taylor1", core=Taylor1LinearAttention, options={"eps": 1e-6},
    summary="ViTALiTy first-order Taylor weights 1 + q.k/sqrt(d), phi(x) = [x/d^(1/4), 1], normalised",
    paper="dass2023vitality", formula=_affine_formula(False, True, lambda B, N, d, h: 0), **_L))
register_attention(AttentionSpec(
    name="efficient", core=EfficientAttention, options={},
    summary="Efficient Attention: softmax_channels(Q) (softmax_positions(K)^T V), no normaliser",
    paper="shen2021efficient", formula=_efficient_formula, **_L))
