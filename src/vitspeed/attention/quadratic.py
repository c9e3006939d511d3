"""Quadratic attention: a softmax over an N x N similarity score, O(N^2 d) per head.

Variants: ``softmax`` (fused SDPA), ``softmax_explicit`` (matmul, softmax, matmul), ``cosine``
(Swin V2 scaled cosine), ``euclidean`` (negative squared distance) and ``jaccard`` (generalized
Jaccard / Tanimoto). All take an additive score bias, so they work inside Swin windows with the
relative position bias and the shift mask.

Where the similarity can be rewritten as a scaled dot product plus a bias, the core hands it to
``F.scaled_dot_product_attention`` (fused kernels, no N x N tensor on flash/efficient backends):
- cosine: normalize q and k, fold the per-head temperature into q, SDPA with scale 1.
- euclidean: -|q-k|^2 / (2 sqrt d) = q.k/sqrt d - |q|^2/(2 sqrt d) - |k|^2/(2 sqrt d); the |q|^2 term
  is constant along a softmax row and cancels, so it is SDPA with the key term as a bias.
Jaccard divides by a pairwise term and has no fused form.

Counting convention of the formulas: ``macs`` are multiply-accumulates of the products;
``elementwise`` counts one op per output element of every elementwise op, 3 per element for a
softmax (exp, sum, divide) and one per input element of a reduction (see :mod:`vitspeed.flops`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import sympy
import torch
import torch.nn.functional as F
from torch import nn

from vitspeed.attention.registry import AttentionSpec, register_attention

MAX_LOGIT_SCALE = math.log(100.0)  # Swin V2 clamps the learned temperature at 100


@dataclass(frozen=True)
class WindowBias:
    """Swin's additive score bias in factored form, as its window shell hands it to a core.

    ``position`` is the relative position bias shared by every window, (1, h, N, N); ``mask`` the
    shifted-window mask (0 / -100), one (N, N) slice per window position, (windows, N, N), or None.
    Explicit cores add the two to their (B * windows, h, N, N) scores by broadcasting over a
    (B, windows, h, N, N) view (:meth:`add_to`, as timm's unfused path does), so no batch-sized bias
    tensor exists; fused SDPA takes one mask tensor, which :meth:`dense` builds.
    """

    position: torch.Tensor
    mask: torch.Tensor | None = None

    def dense(self, n: int) -> torch.Tensor:
        """The bias as one tensor broadcastable to scores of ``n`` = B * windows rows: (1 or n, h, N, N)."""
        if self.mask is None:
            return self.position
        n_win, N, _ = self.mask.shape
        h = self.position.shape[1]
        mask = self.mask.view(1, n_win, 1, N, N).expand(n // n_win, -1, h, -1, -1)
        return self.position + mask.reshape(n, h, N, N)

    def add_to(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` (B * windows, h, N, N) plus the position bias and the mask, each broadcast."""
        out = scores + self.position
        if self.mask is None:
            return out
        n, h, N, _ = out.shape
        n_win = self.mask.shape[0]
        return (out.view(n // n_win, n_win, h, N, N) + self.mask.view(1, n_win, 1, N, N)).view(n, h, N, N)


ScoreBias = Union[torch.Tensor, WindowBias, None]


def add_bias(scores: torch.Tensor, bias: ScoreBias) -> torch.Tensor:
    """``scores`` plus an additive score ``bias``: a tensor broadcastable to them, a :class:`WindowBias`,
    or None (scores unchanged)."""
    if bias is None:
        return scores
    if isinstance(bias, WindowBias):
        return bias.add_to(scores)
    return scores + bias


def dense_bias(bias: ScoreBias, n: int) -> torch.Tensor | None:
    """``bias`` as one tensor (or None) for scores with ``n`` rows in the batch dimension."""
    return bias.dense(n) if isinstance(bias, WindowBias) else bias


def softmax_attention_explicit(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: ScoreBias = None, scale: float | None = None
) -> torch.Tensor:
    """Reference softmax attention, softmax(q k^T * scale + bias) v, materializing the N x N map."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    attn = add_bias((q * scale) @ k.transpose(-2, -1), bias)
    return attn.softmax(dim=-1) @ v


class SoftmaxAttention(nn.Module):
    """Scaled dot-product softmax attention; ``fused`` selects SDPA or the explicit three-step form."""

    def __init__(self, head_dim: int, num_heads: int, fused: bool = True) -> None:
        super().__init__()
        self.fused = fused
        self.scale = head_dim ** -0.5

    def forward(self, q, k, v, bias=None, grid=None):
        """softmax(q k^T / sqrt(d) + bias) v of (B, h, N, d) ``q``, ``k``, ``v``; ``bias`` is an additive
        score bias (Swin's relative positions and shift mask): a (B or 1, h, N, N) tensor or a
        :class:`WindowBias`; ``grid`` is unused."""
        if self.fused:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=_match(bias, q))
        return softmax_attention_explicit(q, k, v, bias, self.scale)


def _match(bias: ScoreBias, q: torch.Tensor) -> torch.Tensor | None:
    # SDPA wants one mask tensor, in the query's dtype.
    bias = dense_bias(bias, q.shape[0])
    return None if bias is None else bias.to(q.dtype)


class _LearnedTemperature(nn.Module):
    """Per-head learnable logit scale, stored as a log and clamped at log(100) as in Swin V2."""

    def __init__(self, num_heads: int, init: float = 10.0) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(init)))

    def temperature(self) -> torch.Tensor:
        """The per-head temperature tau_h = exp(min(logit_scale, log 100)), shape (h, 1, 1)."""
        return torch.clamp(self.logit_scale, max=MAX_LOGIT_SCALE).exp()


class CosineAttention(_LearnedTemperature):
    """Swin V2 scaled cosine attention: softmax(tau_h * cos(q, k) + bias) v, tau_h learned per head."""

    def __init__(self, head_dim: int, num_heads: int, fused: bool = True) -> None:
        super().__init__(num_heads)
        self.fused = fused

    def forward(self, q, k, v, bias=None, grid=None):
        """softmax(tau_h cos(q_i, k_j) + bias) v of (B, h, N, d) ``q``, ``k``, ``v``; ``grid`` is unused."""
        tau = self.temperature().to(q.dtype)
        qn = F.normalize(q, dim=-1) * tau
        kn = F.normalize(k, dim=-1)
        if self.fused:
            return F.scaled_dot_product_attention(qn, kn, v, attn_mask=_match(bias, q), scale=1.0)
        return softmax_attention_explicit(qn, kn, v, bias, scale=1.0)


class EuclideanAttention(nn.Module):
    """softmax(-|q_i - k_j|^2 / (2 sqrt d) + bias) v: nearer keys weigh more.

    The 1/(2 sqrt d) scale makes the q.k part identical to standard softmax attention, so the
    variant is dot-product attention with a penalty on the key norm. The fused path drops the
    row-constant |q|^2 term (exact under softmax) and runs SDPA with the key term as bias.
    """

    def __init__(self, head_dim: int, num_heads: int, fused: bool = True) -> None:
        super().__init__()
        self.fused = fused
        self.scale = head_dim ** -0.5

    def forward(self, q, k, v, bias=None, grid=None):
        """softmax(-|q_i - k_j|^2 / (2 sqrt d) + bias) v of (B, h, N, d) ``q``, ``k``, ``v``; ``grid`` is unused."""
        half = 0.5 * self.scale
        if self.fused:
            key_term = (k * k).sum(-1).unsqueeze(-2) * -half  # (B, h, 1, N)
            bias = dense_bias(bias, q.shape[0])
            mask = key_term if bias is None else key_term + bias
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), scale=self.scale)
        qq = (q * q).sum(-1, keepdim=True)
        kk = (k * k).sum(-1).unsqueeze(-2)
        dist = qq + kk - 2.0 * (q @ k.transpose(-2, -1))
        attn = add_bias(dist * -half, bias)
        return attn.softmax(dim=-1) @ v


class JaccardAttention(_LearnedTemperature):
    """Generalized Jaccard (Tanimoto) similarity, q.k / (|q|^2 + |k|^2 - q.k), times a learned tau.

    The similarity lies in [-1/3, 1], so like cosine it needs a temperature (init 10, per head).
    The pairwise denominator forces an explicit N x N computation: no fused kernel exists.
    """

    def __init__(self, head_dim: int, num_heads: int, eps: float = 1e-6) -> None:
        super().__init__(num_heads)
        self.eps = eps

    def forward(self, q, k, v, bias=None, grid=None):
        """softmax(tau_h Jaccard(q_i, k_j) + bias) v of (B, h, N, d) ``q``, ``k``, ``v``, computed explicitly
        (N x N maps); ``grid`` is unused."""
        # Each N x N intermediate is released as soon as the next exists: at most three maps are
        # alive at once (four without the dels), which decides the largest N that fits in memory.
        dots = q @ k.transpose(-2, -1)
        qq = (q * q).sum(-1, keepdim=True)
        kk = (k * k).sum(-1).unsqueeze(-2)
        den = (qq + kk - dots).clamp_min(self.eps)
        attn = dots / den
        del dots, den
        attn = add_bias(attn * self.temperature().to(q.dtype), bias)
        return attn.softmax(dim=-1) @ v


# --- closed-form counts of the cores (no bias), in the counter's conventions -----------------

def _softmax_formula(B, N, d, h, fused=True):
    scores = B * h * N * N
    if fused:
        return {"macs": 2 * scores * d, "elementwise": 3 * scores}
    return {"macs": 2 * scores * d, "elementwise": B * h * N * d + 3 * scores}


def _cosine_formula(B, N, d, h, fused=True):
    scores = B * h * N * N
    tokens = B * h * N * d
    norms = 2 * (tokens + B * h * N + tokens)  # vector norm, clamp, divide, for q and k
    elementwise = norms + tokens + 2 * h + 3 * scores  # times tau; clamp+exp of tau; softmax
    if not fused:
        elementwise += tokens  # explicit path multiplies q by scale 1.0
    return {"macs": 2 * scores * d, "elementwise": elementwise}


def _euclidean_formula(B, N, d, h, fused=True):
    scores = B * h * N * N
    tokens = B * h * N * d
    if fused:
        # k*k, sum, times -1/2sqrt(d); SDPA adds the bias row and does the softmax
        return {"macs": 2 * scores * d, "elementwise": 2 * tokens + B * h * N + 4 * scores}
    # q*q, sum, k*k, sum, qq+kk, 2*qk, minus, times scale, softmax
    return {"macs": 2 * scores * d, "elementwise": 4 * tokens + 7 * scores}


def _jaccard_formula(B, N, d, h, eps=1e-6):
    scores = B * h * N * N
    tokens = B * h * N * d
    # q*q, sum, k*k, sum; qq+kk, -dots, clamp, divide, times tau; clamp+exp of tau; softmax
    return {"macs": 2 * scores * d, "elementwise": 4 * tokens + 5 * scores + 2 * h + 3 * scores}


_Q = dict(family="quadratic", supports_bias=True, complexity="O(N^2 d)")

register_attention(AttentionSpec(
    name="softmax", core=SoftmaxAttention, options={"fused": True},
    summary="softmax(q k^T / sqrt d) v through fused scaled_dot_product_attention (the baseline)",
    paper="vaswani2017attention", formula=_softmax_formula, **_Q))
register_attention(AttentionSpec(
    name="softmax_explicit", core=SoftmaxAttention, options={"fused": False},
    summary="the same softmax attention as matmul, softmax, matmul (N x N map materialized)",
    paper="vaswani2017attention", formula=_softmax_formula, **_Q))
register_attention(AttentionSpec(
    name="cosine", core=CosineAttention, options={"fused": True},
    summary="Swin V2 scaled cosine similarity, learnable per-head temperature (clamped at 100)",
    paper="liu2022swinv2", formula=_cosine_formula, **_Q))
register_attention(AttentionSpec(
    name="euclidean", core=EuclideanAttention, options={"fused": True},
    summary="negative squared Euclidean distance / (2 sqrt d); fused as SDPA with a key-norm bias",
    paper="kim2021lipschitz", formula=_euclidean_formula, **_Q))
register_attention(AttentionSpec(
    name="jaccard", core=JaccardAttention, options={"eps": 1e-6},
    summary="generalized Jaccard (Tanimoto) q.k/(|q|^2+|k|^2-q.k) with learnable temperature",
    paper="tanimoto1958", formula=_jaccard_formula, **_Q))

# sympy is imported for type clarity of the formula results; formulas accept sympy symbols.
_ = sympy
