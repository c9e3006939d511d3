"""QT-ViT: linear attention with a second-order Taylor kernel (Xu et al., NeurIPS 2024).

Softmax attention weighs key j by exp(s), s = q.k_j / sqrt(d). QT-ViT replaces exp by its
second-order Taylor polynomial

    K(q, k) = 1 + s + s^2 / 2 = (<v(q), v(k)>^2 + 1) / 2,      v(x) = [x / d^(1/4), 1],

and writes it as a dot product of feature maps, K(q, k) = phi(q) . phi(k), so that attention is
linear in the number of tokens N:

    O_i = phi(q_i) (sum_j phi(k_j)^T v_j) / (phi(q_i) . sum_j phi(k_j)).

Variants (all ``family="linear"``, no score bias), D = feature dimension:
- ``taylor2_full``: the exact kernel through the Kronecker identity <a (x) a, b (x) b> = <a, b>^2,
  phi(x) = [vec(v(x) (x) v(x)) / sqrt 2, 1 / sqrt 2], D = (d+1)^2 + 1, cost O(N d^3).
- ``taylor2_compact``: QT-ViT's own kernel, D = 2d + 1, cost O(N d^2) (see
  :class:`Taylor2Compact`; ``mode="paper"`` or ``mode="reference"``).
- ablations of the paper's Table 3 that cut the Kronecker cost differently:
  ``taylor2_pool`` (average-pool x to d/p channels first), ``taylor2_chunk`` (Kronecker product
  within each of c channel chunks), ``taylor2_random`` (d of the d^2 quadratic terms at random).

Implementation (shared by all variants, as in EfficientViT's LiteMLA): q, k, v are cast to fp32
and autocast is switched off, so fp16/bf16 inputs are accumulated in fp32 (linear attention sums
N terms into its normalizer and overflows fp16 otherwise); the output is cast back. V is padded
with a column of ones so that one matmul gives both the numerator and the normalizer:
``kv = phi(K)^T [V, 1]`` (D x (d+1)), ``out = phi(Q) kv``, ``O = out[:, :d] / (out[:, d] + eps)``.
No N x N tensor is formed and there is no loop over heads. Where phi ends in a constant feature c
after a large map (the exact kernel and the cuts of its Kronecker cost), the constant is not
appended to the map, which would copy the whole map: it is its own one-column block,
``out = map(Q) (map(K)^T [V, 1]) + c (c^T [V, 1])``, the second product accumulated into the first
by ``baddbmm``. The MACs are those of the appended form; an operator profile of the exact kernel
found the appending pad taking 39-71% of its time on a 2-core CPU.

Counting convention of the formulas (:mod:`vitspeed.flops`): ``macs`` are the two products,
2 B h N D (d+1); ``elementwise`` counts one op per output element of each elementwise op (feature
maps, the eps add, the division), one per input element of a reduction (the pooling mean, vector
norms), and the ops on the learnable scalars; casts, pads, reshapes, concatenations, index
selections and constant tensors are free. ``t = B h N d`` and ``n = B h N`` below.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitspeed.attention.focused import l2_norm
from vitspeed.attention.registry import AttentionSpec, register_attention

__all__ = [
    "kernel_attention",
    "Taylor2Full",
    "Taylor2Compact",
    "Taylor2Pool",
    "Taylor2Chunk",
    "Taylor2Random",
]

EPS = 1e-6  # added to the normalizer; every kernel here except taylor2_random is >= 1/2 per key
_INV_SQRT2 = 2.0 ** -0.5


def kernel_attention(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, eps: float = EPS,
                     const: float | None = None) -> torch.Tensor:
    """Normalized linear attention phi(Q) (phi(K)^T V) / (phi(Q) sum_j phi(K_j) + eps).

    ``phi_q``, ``phi_k``: (B, h, N, D) features; ``v``: (B, h, N, d). Costs 2 B h N D (d+1) MACs
    (the ones column appended to V yields the normalizer in the same two matmuls) and
    B h N (d + 1) elementwise ops (eps add, division). With ``const`` = c the features are
    [phi, c] (D + 1 of them) without the constant being appended to ``phi``: it is multiplied as a
    one-column block whose product is accumulated by ``baddbmm``, 2 B h N (D + 1) (d+1) MACs in all.
    """
    v1 = F.pad(v, (0, 1), value=1.0)
    kv = phi_k.transpose(-2, -1) @ v1  # (B, h, D, d+1)
    out = phi_q @ kv  # (B, h, N, d+1)
    if const is not None:
        c = v1.new_full((1,), const)
        ck = c.expand(*phi_k.shape[:-1], 1)  # (B, h, N, 1), a view: no copy
        kv_c = ck.transpose(-2, -1) @ v1  # (B, h, 1, d+1) = c sum_j [v_j, 1]
        cq = c.expand(*phi_q.shape[:-1], 1)
        shape = out.shape
        out = torch.baddbmm(out.reshape(-1, *shape[-2:]), cq.reshape(-1, *cq.shape[-2:]),
                            kv_c.reshape(-1, *kv_c.shape[-2:])).view(shape)
    return out[..., :-1] / (out[..., -1:] + eps)


class _TaylorKernel(nn.Module):
    """Base of the Taylor cores: subclasses define ``features(q, k) -> (phi(q), phi(k))`` in fp32."""

    eps: float = EPS

    #: the constant last feature of phi, kept apart from the map (None: phi has none, or keeps it inside)
    const: float | None = None

    def maps(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The feature maps without the constant last feature :attr:`const` (all of phi when
        ``const`` is None), (B, h, N, D') each."""
        raise NotImplementedError

    def features(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The feature maps (phi(q), phi(k)) of (B, h, N, d) inputs, (B, h, N, D) each: :meth:`maps`
        with :attr:`const` appended (for the explicit reference; the attention itself never builds
        them)."""
        mq, mk = self.maps(q, k)
        if self.const is None:
            return mq, mk
        return F.pad(mq, (0, 1), value=self.const), F.pad(mk, (0, 1), value=self.const)

    def _linear(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        dtype = v.dtype
        compute = torch.promote_types(dtype, torch.float32)  # fp16/bf16 -> fp32; fp64 stays
        q, k, v = q.to(compute), k.to(compute), v.to(compute)
        map_q, map_k = self.maps(q, k)
        return kernel_attention(map_q, map_k, v, self.eps, self.const).to(dtype)

    def forward(self, q, k, v, bias=None, grid=None):
        """phi(q_i) (sum_j phi(k_j)^T v_j) / (phi(q_i).sum_j phi(k_j) + eps) for (B, h, N, d) ``q``, ``k``,
        ``v`` with this kernel's features, in float32 (autocast off), cast back to ``v``'s dtype. A
        ``bias`` raises ValueError; ``grid`` is unused."""
        if bias is not None:
            raise ValueError(f"{type(self).__name__} is a linear kernel and takes no score bias")
        if not torch.jit.is_scripting() and v.device.type != "meta":
            with torch.autocast(device_type=v.device.type, enabled=False):
                return self._linear(q, k, v)
        return self._linear(q, k, v)

    def attention_weights(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The explicit (B, h, N, N) weights phi(q_i).phi(k_j) / (sum_j phi(q_i).phi(k_j) + eps).

        Reference for tests only: O(N^2) memory, computed in the inputs' dtype (not cast to fp32).
        """
        phi_q, phi_k = self.features(q, k)
        scores = phi_q @ phi_k.transpose(-2, -1)
        return scores / (scores.sum(-1, keepdim=True) + self.eps)

    def explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The quadratic form of the same attention, ``attention_weights(q, k) @ v`` (tests only)."""
        return self.attention_weights(q, k) @ v


def _kronecker_map(x: torch.Tensor, d: int) -> torch.Tensor:
    """vec(v (x) v) / sqrt 2 with v = [x / d^(1/4), 1], d = x.shape[-1]: phi(x) without its constant
    last feature 1 / sqrt 2.

    The 1/sqrt 2 is folded into v (w = v / 2^(1/4), w (x) w = v (x) v / sqrt 2), so the map costs
    n d (scaling) + n (d+1)^2 (outer product) elementwise ops for n tokens.
    """
    # d is passed as a Python int: arithmetic on x.shape would be traced (and counted) as tensor ops
    w = F.pad(x * (2.0 * d) ** -0.25, (0, 1), value=2.0 ** -0.25)  # v / 2^(1/4)
    return (w.unsqueeze(-1) * w.unsqueeze(-2)).flatten(-2)


class Taylor2Full(_TaylorKernel):
    """Exact second-order Taylor attention: weights (1 + s + s^2/2) / sum_j (...), s = q.k_j/sqrt d.

    Feature map phi(x) = [vec(v(x) (x) v(x)) / sqrt 2, 1/sqrt 2], v(x) = [x / d^(1/4), 1], of
    dimension (d+1)^2 + 1 (the d linear terms appear twice, as v_i v_{d+1} and v_{d+1} v_i, as in
    the paper's Kronecker form). 1 + s + s^2/2 = ((1 + s)^2 + 1)/2 >= 1/2, so the normalizer is
    always positive. Cost O(N d^3) per head.
    """

    const = _INV_SQRT2

    def __init__(self, head_dim: int, num_heads: int) -> None:
        super().__init__()
        self.head_dim = head_dim

    def maps(self, q, k):
        return _kronecker_map(q, self.head_dim), _kronecker_map(k, self.head_dim)


def _check_divisor(variant: str, option: str, value: Any, head_dim: int) -> None:
    """Raise ValueError unless ``value`` is a positive integer dividing ``head_dim`` (valid ones listed)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or head_dim % value:
        divisors = [i for i in range(1, head_dim + 1) if head_dim % i == 0]
        raise ValueError(f"{variant} option {option}={value!r} must be a positive integer dividing head_dim "
                         f"{head_dim}; valid choices: {divisors}")


class Taylor2Pool(_TaylorKernel):
    """Ablation: average-pool x from d to d/p channels (groups of p neighbours), then taylor2_full.

    The pooled vector is treated as a head of dimension d' = d/p: phi(x) = phi_full(pool(x)) with
    v(x') = [x' / d'^(1/4), 1], i.e. weights 1 + s' + s'^2/2 with s' = pool(q).pool(k)/sqrt(d'),
    again >= 1/2. D = (d/p + 1)^2 + 1, cost O(N d^3 / p^2) (the product with V keeps all d
    channels). ``p = 1`` skips the pooling and is exactly ``taylor2_full``.
    """

    def __init__(self, head_dim: int, num_heads: int, p: int = 2) -> None:
        super().__init__()
        _check_divisor("taylor2_pool", "p", p, head_dim)
        self.head_dim = head_dim
        self.p = p

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 1:
            return x
        return x.unflatten(-1, (self.head_dim // self.p, self.p)).mean(-1)

    const = _INV_SQRT2

    def maps(self, q, k):
        d = self.head_dim // self.p
        return _kronecker_map(self._pool(q), d), _kronecker_map(self._pool(k), d)


class Taylor2Chunk(_TaylorKernel):
    """Ablation: the quadratic term keeps only products within each of c chunks of channels.

    Split x into c contiguous chunks x_1..x_c of m = d/c channels and s = sum_c s_c with
    s_c = q_c.k_c / sqrt d. The exact s^2 = sum_{c,c'} s_c s_c' is cut to its block diagonal
    sum_c s_c^2 (the within-chunk Kronecker products); the linear term s and the constant 1 are kept
    exactly as separate features:

        phi(x) = [vec(x_1 (x) x_1), ..., vec(x_c (x) x_c)] / sqrt(2d)  (c m^2 = d^2/c features)
                 ++ x / d^(1/4)  (d features)  ++ [1],
        weights  1 + s + (sum_c s_c^2) / 2,

    D = d^2/c + d + 1, cost O(N d^3 / c). With c = 1 the kernel is exactly 1 + s + s^2/2, i.e.
    ``taylor2_full`` (numerically equal; this factorization merely stores the linear terms once).
    Unlike the full kernel the weights are not bounded away from 0: they equal
    1 - c/2 + sum_c (s_c + 1)^2 / 2, whose minimum 1 - c/2 (all s_c = -1) is 0 for c = 2 and
    negative for c > 2, so the normalizer is not guaranteed positive there.
    """

    def __init__(self, head_dim: int, num_heads: int, c: int = 2) -> None:
        super().__init__()
        _check_divisor("taylor2_chunk", "c", c, head_dim)
        self.head_dim = head_dim
        self.c = c

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        d = self.head_dim
        xa = (x * (2.0 * d) ** -0.25).unflatten(-1, (self.c, d // self.c))
        quad = (xa.unsqueeze(-1) * xa.unsqueeze(-2)).flatten(-3)  # (..., c m^2)
        lin = x * d ** -0.25
        return torch.cat([quad, lin], dim=-1)

    const = 1.0

    def maps(self, q, k):
        return self._features(q), self._features(k)


class Taylor2Random(_TaylorKernel):
    """Ablation: keep d of the d^2 quadratic terms x_i x_j, pairs (i, j) drawn at random once.

    The pairs are d distinct entries of the d x d grid, drawn with ``torch.randperm`` from a
    generator seeded with ``seed`` and stored in the buffer ``pairs`` (2, d). Each term is scaled as
    in the compact kernel (by the square root of the d terms it stands for), and the linear term
    and the constant are kept exactly:

        phi(x) = [{x_i x_j}_{(i,j) in S} / sqrt 2, x / d^(1/4), 1],   D = 2d + 1,
        weights  1 + s + (1/2) sum_{(i,j) in S} q_i q_j k_i k_j,

    an unbiased estimate of 1 + s + s^2/2 over the draw of S (each pair is kept with probability
    1/d). Cross products q_i q_j k_i k_j (i != j) can be negative, so neither the weights nor the
    normalizer are guaranteed positive: a plausible cause of this ablation's low accuracy (61.8%).
    """

    def __init__(self, head_dim: int, num_heads: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        flat = torch.randperm(head_dim * head_dim, generator=gen)[:head_dim]
        self.head_dim = head_dim
        self.register_buffer("pairs", torch.stack([flat // head_dim, flat % head_dim]))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        d = self.head_dim
        # gathered from a 2-D (tokens, channels) view: index_select on the last dim of a 4-D tensor takes
        # a slow CPU path (3 to 12 times slower here at N = 784 to 12544, worst at 784); reshape copies
        # only when x is not contiguous (a permuted q from a model)
        xa = (x * 2.0 ** -0.25).reshape(-1, d)
        quad = (xa.index_select(1, self.pairs[0]) * xa.index_select(1, self.pairs[1])).view(*x.shape[:-1], d)
        lin = x * d ** -0.25
        return torch.cat([quad, lin], dim=-1)

    const = 1.0

    def maps(self, q, k):
        return self._features(q), self._features(k)


class Taylor2Compact(_TaylorKernel):
    """QT-ViT's compact ("fast") second-order Taylor kernel, D = 2d + 1, cost O(N d^2).

    ``mode="paper"`` (the paper's equations): Kr~(x) = [alpha {x_i^2}, beta (4/d)^(1/4) {x_i}, gamma],
    phi(x) = [Kr~(x) / sqrt 2, 1 / sqrt 2]. The d self-products x_i^2 stand in for the d^2 terms
    x_i x_j / sqrt d of the exact map (scaled by sqrt(d^2/d), hence no 1/sqrt d), the two copies of
    the linear block merge into one scaled by sqrt 2 (hence (4/d)^(1/4)), so alpha = beta = gamma = 1
    mimics 1 + s + s^2/2 with only the diagonal of s^2 kept. The two constant features
    gamma/sqrt 2 and 1/sqrt 2 are merged into one, sqrt((1 + gamma^2)/2), so
    phi(x) = [alpha x^2 / sqrt 2, beta (4/d)^(1/4) x / sqrt 2, sqrt((1 + gamma^2)/2)] has exactly 2d+1
    entries and the weights are

        (alpha^2 sum_i q_i^2 k_i^2 + 2 beta^2 q.k / sqrt d + gamma^2 + 1) / 2.

    alpha and gamma are learnable scalars (init ``alpha``, ``gamma``; buffers if ``learnable`` is
    False); beta is a fixed constant, 0 in all of the paper's experiments (it enters as beta^2, so
    its gradient at 0 vanishes anyway). The linear block is computed even when beta = 0, so the
    cost is that of the paper's 2d+1 features.

    Why the normalizer is valid: x_i^2 >= 0 and alpha, gamma enter squared, so with beta = 0 every
    weight is >= 1/2 whatever alpha and gamma learn (the positive init alpha = gamma = 1 is not
    needed for validity). With beta != 0, Cauchy-Schwarz (sum q_i^2 k_i^2 >= (q.k)^2/d) gives
    weights >= (1 + gamma^2 - beta^4 / alpha^2) / 2, positive when beta^4 < alpha^2 (1 + gamma^2).

    ``mode="reference"`` (the authors' code as described in their repository): x is normalized to
    unit L2 norm, squared elementwise, normalized again, and one learnable scalar (``gamma``,
    shared by q and k) is appended: phi(x) = [u, gamma], u = x_hat^2 / ||x_hat^2||,
    x_hat = x / ||x||, D = d + 1, weights u_q . u_k + gamma^2 >= gamma^2 (>= 0: u has non-negative
    entries; strictly positive while gamma != 0). There is no alpha parameter and beta must be 0. Each
    normalization is x / max(||x||, 1e-12), as ``F.normalize``, with the norm from
    :func:`vitspeed.attention.focused.l2_norm`: in a model q and k arrive with a strided channel dim
    (EfficientViT's LiteMLA transposes a convolution's output), where ``F.normalize``'s
    ``vector_norm`` takes a slow CPU path.
    """

    def __init__(self, head_dim: int, num_heads: int, mode: str = "paper", alpha: float = 1.0,
                 beta: float = 0.0, gamma: float = 1.0, learnable: bool = True) -> None:
        super().__init__()
        if mode not in ("paper", "reference"):
            raise ValueError(f"taylor2_compact option mode={mode!r} is not valid; valid choices: paper, reference")
        if mode == "reference" and beta != 0:
            raise ValueError("taylor2_compact mode='reference' has no linear term; beta must be 0 "
                             "(valid choices: beta=0 with mode='reference', any beta with mode='paper')")
        self.head_dim = head_dim
        self.mode = mode
        self.beta = float(beta)
        self.lin_scale = float(beta) * (4.0 / head_dim) ** 0.25 * _INV_SQRT2
        scalars = (("gamma", gamma),) if mode == "reference" else (("alpha", alpha), ("gamma", gamma))
        for name, value in scalars:
            t = torch.tensor(float(value))
            if learnable:
                setattr(self, name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)

    def _paper(self, x: torch.Tensor, a: torch.Tensor, const: torch.Tensor) -> torch.Tensor:
        quad = (x * x) * a
        lin = x * self.lin_scale
        return torch.cat([quad, lin, const.expand(*x.shape[:-1], 1)], dim=-1)

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        u = _unit(_unit(x).square())
        return torch.cat([u, self.gamma.to(x.dtype).expand(*x.shape[:-1], 1)], dim=-1)

    def maps(self, q, k):
        if self.mode == "reference":
            return self._reference(q), self._reference(k)
        a = (self.alpha * _INV_SQRT2).to(q.dtype)
        const = (self.gamma * self.gamma + 1.0).mul(0.5).sqrt().to(q.dtype).reshape(1)
        return self._paper(q, a, const), self._paper(k, a, const)


def _unit(x: torch.Tensor) -> torch.Tensor:
    """x / max(||x||, 1e-12) over the last dim (F.normalize's value; its norm as l2_norm computes it)."""
    return x / l2_norm(x, -1).clamp_min(1e-12)


# --- closed-form counts of the cores, in the counter's conventions -----------------------------

def _div(a, b):
    """a / b, exact integer division when both are ints (formulas take ints or sympy symbols)."""
    return a // b if isinstance(a, int) and isinstance(b, int) else a / b


def _attention_cost(B, N, d, h, D):
    """MACs and elementwise ops of :func:`kernel_attention` with D features and value dim d."""
    return {"macs": 2 * B * h * N * D * (d + 1), "elementwise": B * h * N * (d + 1)}


def _with_features(B, N, d, h, D, feature_ops):
    cost = _attention_cost(B, N, d, h, D)
    return {"macs": cost["macs"], "elementwise": cost["elementwise"] + feature_ops}


def _full_formula(B, N, d, h, **_):
    n = B * h * N
    per_tensor = n * d + n * (d + 1) ** 2  # scaling, outer product
    return _with_features(B, N, d, h, (d + 1) ** 2 + 1, 2 * per_tensor)


def _pool_formula(B, N, d, h, p=2, **_):
    n = B * h * N
    dp = _div(d, p)
    per_tensor = n * dp + n * (dp + 1) ** 2
    pooling = 0 if p == 1 else 2 * n * d  # mean over groups of p: one op per input element
    cost = _attention_cost(B, N, d, h, (dp + 1) ** 2 + 1)
    return {"macs": cost["macs"], "elementwise": cost["elementwise"] + pooling + 2 * per_tensor}


def _chunk_formula(B, N, d, h, c=2, **_):
    n = B * h * N
    per_tensor = 2 * n * d + n * _div(d**2, c)  # two scalings, within-chunk outer products
    return _with_features(B, N, d, h, _div(d**2, c) + d + 1, 2 * per_tensor)


def _random_formula(B, N, d, h, **_):
    n = B * h * N
    return _with_features(B, N, d, h, 2 * d + 1, 2 * 3 * n * d)  # scale, product of pairs, linear


def _compact_formula(B, N, d, h, mode="paper", **_):
    n = B * h * N
    if mode == "reference":
        # two normalizations, each a norm as l2_norm computes it on the CPU (x * x, sum, sqrt: 2nd + n),
        # clamp (n) and divide (nd); and the square (nd)
        per_tensor = 2 * (3 * n * d + 2 * n) + n * d
        return _with_features(B, N, d, h, d + 1, 2 * per_tensor)
    # x*x, times alpha/sqrt2, linear scaling per tensor; alpha/sqrt2 and sqrt((gamma^2+1)/2): 5 ops
    return _with_features(B, N, d, h, 2 * d + 1, 2 * 3 * n * d + 5)


_T = dict(family="linear", supports_bias=False, paper="xu2024qtvit")

register_attention(AttentionSpec(
    name="taylor2_full", core=Taylor2Full, options={}, formula=_full_formula, complexity="O(N d^3)",
    summary="exact 2nd-order Taylor kernel 1+s+s^2/2 via Kronecker features, dim (d+1)^2+1", **_T))
register_attention(AttentionSpec(
    name="taylor2_compact", core=Taylor2Compact,
    options={"mode": "paper", "alpha": 1.0, "beta": 0.0, "gamma": 1.0, "learnable": True},
    formula=_compact_formula, complexity="O(N d^2)",
    summary="QT-ViT compact Taylor kernel [alpha x^2, beta (4/d)^(1/4) x, gamma], dim 2d+1", **_T))
register_attention(AttentionSpec(
    name="taylor2_pool", core=Taylor2Pool, options={"p": 2}, formula=_pool_formula,
    complexity="O(N d^3 / p^2)",
    summary="ablation: average-pool q, k to d/p channels, then the exact Kronecker Taylor kernel", **_T))
register_attention(AttentionSpec(
    name="taylor2_chunk", core=Taylor2Chunk, options={"c": 2}, formula=_chunk_formula,
    complexity="O(N d^3 / c)",
    summary="ablation: quadratic Taylor term from Kronecker products within c channel chunks", **_T))
register_attention(AttentionSpec(
    name="taylor2_random", core=Taylor2Random, options={"seed": 0}, formula=_random_formula,
    complexity="O(N d^2)",
    summary="ablation: d of the d^2 quadratic Taylor terms chosen at random (fixed seed)", **_T))

