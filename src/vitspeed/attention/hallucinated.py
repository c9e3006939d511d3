"""Redundancy family: hallucinated multi-head self-attention (hMHSA, Xu et al., arXiv 2306.10875).

Only the paper's abstract is available. It says half of the attention maps are computed and the
other half are "hallucinated" from them with much cheaper operations. Which heads, which cheap
operation, and whether before or after the softmax are not stated. OUR INTERPRETATION:

- Of the h heads, h_c = ratio * h are *computed* (default ratio 0.5; it must give an integer
  h_c >= 1, and h_c <= h). Only they get queries and keys, so the input projection shrinks from
  ``Linear(C, 3C)`` to ``Linear(C, 2 h_c d + C)`` (q and k are h_c*d wide, v stays C = h*d wide).
- The computed maps are ordinary softmax maps, A_c = softmax(q_c k_c^T / sqrt d), c < h_c.
- Each of the h_h = h - h_c *hallucinated* maps is a learned mix of the computed maps AFTER the
  softmax (post-softmax "talking heads"): A_j = sum_c W[j, c] A_c, a 1x1 convolution across the
  head axis. With ``normalize=True`` (default) the rows of W are softmax-normalized, so every
  hallucinated map is a convex combination of row-stochastic maps and stays row-stochastic (an
  attention distribution over keys, like the computed ones). No depthwise/spatial op follows.
- All h maps are applied to their own value heads: out_i = A_i v_i for every i < h. The computed
  heads come first in the output, the hallucinated ones last.

Cheapest exact form. A_j v_j = sum_c W[j,c] (A_c v_j) could avoid forming A_j, but it needs every
computed map applied to every hallucinated value head: h_c * h_h * N^2 * d MACs. Forming the maps
costs h_h * h_c * N^2 (one matmul of W with the maps viewed as (h_c, N*N)) plus h_h * N^2 * d for
their AV: h_h N^2 (h_c + d) against h_h h_c N^2 d, cheaper whenever (h_c - 1)(d - 1) > 1 (h_c >= 2
with any real head size; DeiT-T's split, h_c = 2, and DeiT-S's, h_c = 3, both qualify), so we form them
(one (h_h, h_c) x (h_c, N*N) matmul).

Core cost (MACs, per image, the counter's conventions; B images, N tokens, head size d):
    q * scale:        B h_c N d elementwise
    q k^T:            B h_c N^2 d MACs
    softmax:          3 B h_c N^2 elementwise
    softmax(W):       3 h_h h_c elementwise (only with normalize=True)
    mix:              B h_h h_c N^2 MACs
    A v (all heads):  B h N^2 d MACs
versus softmax attention's 2 B h N^2 d MACs and 3 B h N^2 softmax ops.

Saving of a whole attention layer (C = h d, rho = h_c / h, biases aside):
    params: standard 4 C^2;  hMHSA (2 + 2 rho) C^2 + h_h h_c        -> rho = 1/2: C^2 - h^2/4 fewer (25%)
    MACs:   standard 4 N C^2 + 2 N^2 C;
            hMHSA    (2 + 2 rho) N C^2 + (1 + rho) N^2 C + h_h h_c N^2
            -> rho = 1/2: N C^2 + N^2 C / 2 - N^2 h^2 / 4 fewer.
For DeiT-S (C = 384, h = 6, N = 197) that is about 36 M of 146 M attention MACs per block.

hMHSA needs its own projections, so the variant comes with a shell (:class:`HallucinatedAttention`,
drop-in for timm's ``Attention`` in ViT/DeiT blocks). Only global attention is supported: Swin
window attention with its relative position bias is not implemented.
"""
from __future__ import annotations

import math
from typing import Any

import sympy
import torch
from torch import nn

from vitspeed.attention.registry import AttentionSpec, register_attention
from vitspeed.attention.shells import GlobalAttention

__all__ = ["HallucinatedCore", "HallucinatedAttention", "computed_heads", "make_hallucinated_shell"]


def computed_heads(num_heads: int, ratio: float) -> int:
    """Number of computed heads h_c = ratio * num_heads; ``ValueError`` unless an integer in [1, h]."""
    hc = ratio * num_heads
    rounded = round(hc) if math.isfinite(hc) else 0
    if not 0 < ratio <= 1 or abs(hc - rounded) > 1e-6 or rounded < 1:
        raise ValueError(
            f"hallucinated ratio {ratio!r} gives {hc:g} computed heads of {num_heads}; the ratio must be in "
            f"(0, 1] and give a whole number >= 1 (valid: k/{num_heads} for k = 1..{num_heads})")
    return int(rounded)


class HallucinatedCore(nn.Module):
    """hMHSA core: h_c softmax maps from q, k; h - h_c maps mixed from them; all h applied to v.

    ``forward(q, k, v)`` takes q, k of shape (B, h_c, N, d) and v of shape (B, h, N, d) and
    returns (B, h, N, d): computed heads first, hallucinated heads last. The mixing logits
    ``mix`` (h - h_c, h_c) start so that hallucinated head j mostly copies computed head j mod h_c.
    """

    def __init__(self, head_dim: int, num_heads: int, ratio: float = 0.5, normalize: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_computed = computed_heads(num_heads, ratio)
        self.num_hallucinated = num_heads - self.num_computed
        self.normalize = normalize
        self.scale = head_dim ** -0.5
        mix = torch.zeros(self.num_hallucinated, self.num_computed)
        if self.num_hallucinated:
            rows = torch.arange(self.num_hallucinated)
            if normalize:
                mix[rows, rows % self.num_computed] = 2.0
            else:
                mix[rows, rows % self.num_computed] = 1.0
        self.mix = nn.Parameter(mix)

    @staticmethod
    def projection_macs(B: Any, N: Any, C: Any, h: Any, ratio: float = 0.5, normalize: bool = True) -> Any:
        """MACs (multiply-accumulates) of the shell's projections for the whole batch of ``B`` images of
        ``N`` tokens of width ``C``: qkv C -> 2 h_c d + C, proj C -> C. Arguments may be sympy symbols;
        ``normalize`` (an option of the core) does not change them and is accepted so that the core's
        options can be passed through."""
        hc = _ratio_heads(h, ratio)
        d = C // h if isinstance(C, int) and isinstance(h, int) else C / h
        return B * N * C * (2 * hc * d + C) + B * N * C * C

    def mixing_weights(self) -> torch.Tensor:
        """W (h - h_c, h_c): softmax of the logits over computed heads, or the raw weights."""
        return self.mix.softmax(dim=-1) if self.normalize else self.mix

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None,
                grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Softmax attention maps of the h_c computed heads of ``q``, ``k`` (B, h_c, N, d), the
        hallucinated heads' maps as their mixtures (W A), each applied to its head of ``v`` (B, h, N, d);
        returns (B, h, N, d). A ``bias`` raises ValueError; ``grid`` is unused."""
        if bias is not None:
            raise ValueError("hallucinated attention takes no score bias (global attention only)")
        B, hc, N, _ = q.shape
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, h_c, N, N)
        out_c = attn @ v[:, :hc]
        if not self.num_hallucinated:
            return out_c
        w = self.mixing_weights().to(attn.dtype)
        # flatten, not reshape(B, hc, N * N): traced shape arithmetic would count as an op
        hal = (w @ attn.flatten(2)).view(B, self.num_hallucinated, N, N)
        out_h = hal @ v[:, hc:]
        return torch.cat((out_c, out_h), dim=1)


class HallucinatedAttention(GlobalAttention):
    """hMHSA module, a drop-in for timm's ViT ``Attention`` (``qkv`` / ``proj`` as in timm).

    ``qkv`` is ``Linear(C, 2 h_c d + C)``: queries and keys for the h_c computed heads, values for
    all h heads, in that order. ``proj`` is the usual ``Linear(C, C)`` and is copied from a stock
    model by the swap; ``qkv`` has another shape and keeps its fresh initialization.
    """

    def __init__(self, dim: int, num_heads: int, attention: str = "hallucinated",
                 options: dict[str, Any] | None = None, qkv_bias: bool = False, proj_bias: bool = True,
                 grid: tuple[int, int] | None = None) -> None:
        super().__init__(dim, num_heads, attention, options, qkv_bias, proj_bias, grid)

    @property
    def num_computed(self) -> int:
        """Heads whose attention maps are computed (the rest are hallucinated)."""
        return self.core.num_computed

    @property
    def qk_dim(self) -> int:
        """Width of the query (and key) projection: computed heads x head_dim."""
        return self.core.num_computed * self.head_dim

    def _qkv_width(self, dim: int, core: nn.Module) -> int:
        return 2 * core.num_computed * self.head_dim + dim

    def _split(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, N, _ = qkv.shape
        q, k, v = qkv.split((self.qk_dim, self.qk_dim, self.num_heads * self.head_dim), dim=-1)
        q = q.view(B, N, self.num_computed, self.head_dim).transpose(1, 2)
        k = k.view(B, N, self.num_computed, self.head_dim).transpose(1, 2)
        v = v.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        return q, k, v


def make_hallucinated_shell(kind: str, **kwargs: Any) -> nn.Module:
    """Shell factory for ``spec.shell``: global attention only; other keyword arguments are ignored."""
    if kind != "global":
        raise ValueError(f"hallucinated attention supports only the 'global' shell (DeiT/ViT), not {kind!r}; "
                         "Swin window attention is not implemented for it")
    names = ("dim", "num_heads", "attention", "options", "qkv_bias", "proj_bias", "grid")
    return HallucinatedAttention(**{k: v for k, v in kwargs.items() if k in names})


def _ratio_heads(h, ratio):
    # ints: validated whole number; sympy symbols: the exact rational multiple
    if isinstance(h, int):
        return computed_heads(h, ratio)
    return sympy.nsimplify(ratio) * h


def _hallucinated_formula(B, N, d, h, ratio=0.5, normalize=True):
    hc = _ratio_heads(h, ratio)
    hh = h - hc
    macs = B * hc * N * N * d + B * hh * hc * N * N + B * h * N * N * d
    elementwise = B * hc * N * d + 3 * B * hc * N * N + (3 * hh * hc if normalize else 0)
    return {"macs": macs, "elementwise": elementwise}


register_attention(AttentionSpec(
    name="hallucinated", family="redundancy", core=HallucinatedCore,
    options={"ratio": 0.5, "normalize": True},
    summary="hMHSA: q,k for ratio*h heads; the other maps are softmax-weighted mixes of those maps "
            "(our reading of the abstract)",
    paper="xu2023hallucination", formula=_hallucinated_formula, shell=make_hallucinated_shell,
    supports_bias=False, complexity="O(N^2 d), fewer q/k heads"))

