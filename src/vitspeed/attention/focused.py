"""FLatten's focused linear attention (Han et al., ICCV 2023): variant ``focused``.

    phi_p(x) = f_p(ReLU(x)),   f_p(x) = (||x|| / ||x^p||) x^p   (x^p elementwise)
    O = phi_p(Q) (phi_p(K)^T V) / (phi_p(Q) . sum_j phi_p(K_j)) + DWC(V)

f_p keeps the norm and sharpens the direction (large components grow relative to small ones); the
depthwise convolution DWC restores the rank the low-rank linear map lacks.

Details of the reference code (LeapLabTHU/FLatten-Transformer) and what this core does with them:
- kept: 1e-6 added after the ReLU; q and k divided by softplus of a learnable per-channel scale
  (parameter ``scale``, shape (heads, 1, head_dim), zero init, i.e. a uniform 1/ln 2 that cancels
  in the normalisation); the norms in f_p taken over the token's whole C = heads x head_dim vector
  (the reference applies f_p before splitting heads), so ``focus`` reduces over dims (1, 3);
  for p > 6 the input of the power is first divided by its maximum (flatten_pvt does this; f_p is
  scale-invariant so the value is unchanged); the normaliser from mean(K) and K^T V / N (here one
  product phi(K)^T [V, 1] / N, see :func:`vitspeed.attention.linear.normalized_product`) plus 1e-6;
  DWC a depthwise k x k convolution with bias over head_dim channels, the same conv for every head.
- changed: f_p is computed as x^p * (||x|| / ||x^p||) (one multiply on the big tensor instead of a
  divide and a multiply, same value), with ||x^p|| clamped at the smallest normal float so a token
  whose channels are all non-positive cannot divide by an underflowed zero.
- skipped: the learnable positional encoding added to K (a per-resolution model parameter, not
  part of the core; it costs one add of N x C per block).
- prefix tokens: with ``grid=(H, W)`` the last H*W tokens form the map; earlier (class) tokens take
  part in the linear attention but get no DWC term. Without a grid all N tokens must form a square.
- precision: the linear part runs in float32 for fp16/bf16 inputs (autocast off) and is cast back;
  the convolution runs in the input dtype (the conv weights follow the model's dtype).

Options: ``p`` (focusing power, >= 1, default 3) and ``kernel_size`` (DWC size, default 5, odd;
0 disables the DWC). Counting convention as in :mod:`vitspeed.attention.linear`; the conv counts
output elements x kernel area MACs (depthwise: one input channel per output), its bias is free.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vitspeed.attention.linear import check_no_bias, compute_in_fp32, no_autocast, normalized_product
from vitspeed.attention.registry import AttentionSpec, register_attention

__all__ = ["FocusedLinearAttention", "focus", "l2_norm", "MAX_FREE_POWER"]

MAX_FREE_POWER = 6.0  # above this power the reference divides by the maximum before x ** p
_EPS = 1e-6


def focus(x: torch.Tensor, p: float, dim: int | tuple[int, ...] = -1) -> torch.Tensor:
    """FLatten's focusing function f_p(x) = (||x|| / ||x^p||) x^p for non-negative ``x``.

    Norms are taken over ``dim``; the result has the norm of ``x`` and, for p > 1, a sharper
    direction. Cost (counter conventions, x with E elements and R norm groups, on the CPU): norm
    2E + R, pow E, norm 2E + R, clamp R, divide R, multiply E [+ amax E and divide E for p > 6]; on
    other devices each norm is E (see :func:`l2_norm`).
    """
    norm = l2_norm(x, dim)
    if p > MAX_FREE_POWER:
        x = x / x.amax(dim=dim, keepdim=True)
    xp = x ** p
    norm_p = l2_norm(xp, dim).clamp_min(torch.finfo(xp.dtype).tiny)
    return xp * (norm / norm_p)


def l2_norm(x: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """Euclidean norm of ``x`` over ``dim`` (kept as size-1 dims).

    On the CPU it is computed as sqrt(sum(x * x)) (elementwise: E + E + R for E elements in R
    groups): ``torch.linalg.vector_norm`` over the non-adjacent heads and channels dims of a
    (B, h, N, d) tensor takes a strided path there that ran several times slower than the three
    ops together. Elsewhere ``vector_norm`` (E), one kernel.
    """
    if x.device.type == "cpu":
        return (x * x).sum(dim=dim, keepdim=True).sqrt()
    return torch.linalg.vector_norm(x, dim=dim, keepdim=True)


class FocusedLinearAttention(nn.Module):
    """FLatten focused linear attention with the depthwise-conv rank restoration (see module doc)."""

    def __init__(self, head_dim: int, num_heads: int, p: float = 3.0, kernel_size: int = 5) -> None:
        super().__init__()
        if not (math.isfinite(p) and p >= 1):
            raise ValueError(f"focusing power p must be a finite number >= 1 (FLatten uses 3), got {p}")
        if kernel_size < 0 or (kernel_size and kernel_size % 2 == 0):
            raise ValueError(f"kernel_size must be 0 (no DWC) or a positive odd number, got {kernel_size}")
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.p = float(p)
        self.kernel_size = int(kernel_size)
        self.scale = nn.Parameter(torch.zeros(num_heads, 1, head_dim))
        self.dwc = (nn.Conv2d(head_dim, head_dim, kernel_size, padding=kernel_size // 2, groups=head_dim)
                    if kernel_size else None)

    def features(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """phi_p of a (B, h, N, d) tensor: ReLU + 1e-6, divide by softplus(scale), focus over (h, d)."""
        x = F.relu(x) + _EPS
        x = x / scale
        return focus(x, self.p, dim=(1, 3))

    def _focused(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = F.softplus(self.scale.to(q.dtype))
        return self.features(q, scale), self.features(k, scale)

    def _grid(self, n_tokens: int, grid: tuple[int, int] | None) -> tuple[int, int]:
        if grid is None:
            side = math.isqrt(n_tokens)
            if side * side != n_tokens:
                raise ValueError(f"focused attention's DWC needs grid=(H, W) for {n_tokens} tokens "
                                 "(not a square); pass the token grid or kernel_size=0")
            return side, side
        H, W = grid
        if H * W > n_tokens:
            raise ValueError(f"grid {H}x{W} has more cells than the {n_tokens} tokens")
        return H, W

    def _add_dwc(self, out: torch.Tensor, v: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
        # int(): under torch.jit.trace sizes are traced values and arithmetic on them would be counted
        B, h, N, d = (int(s) for s in v.shape)
        H, W = self._grid(N, grid)
        prefix = N - H * W
        fmap = v[:, :, prefix:].reshape(B * h, H, W, d).permute(0, 3, 1, 2)
        conv = self.dwc(fmap).permute(0, 2, 3, 1).reshape(B, h, H * W, d)
        if prefix == 0:
            return out + conv
        return torch.cat([out[:, :, :prefix], out[:, :, prefix:] + conv], dim=2)

    def forward(self, q, k, v, bias=None, grid=None):
        """Focused linear attention of (B, h, N, d) ``q``, ``k``, ``v`` (float32 inside, cast back), plus the
        depthwise convolution of ``v`` laid out on ``grid`` (H, W) when the core has one (a square grid of
        the last H W tokens if None). A ``bias`` raises ValueError."""
        check_no_bias(bias, "focused")
        dtype = v.dtype
        with no_autocast(q):
            q32, k32, v32 = compute_in_fp32(q, k, v)
            qf, kf = self._focused(q32, k32)
            out = normalized_product(qf, kf, v32, _EPS, mean=True).to(dtype)
        if self.dwc is not None:
            out = self._add_dwc(out, v, grid)
        return out

    def explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 grid: tuple[int, int] | None = None) -> torch.Tensor:
        """The same output with the N x N weights phi(q_i).phi(k_j) materialised (for tests)."""
        dtype = v.dtype
        q32, k32, v32 = compute_in_fp32(q, k, v)
        qf, kf = self._focused(q32, k32)
        attn = (qf @ kf.transpose(-2, -1)) / k.shape[-2]
        attn = attn / (attn.sum(dim=-1, keepdim=True) + _EPS)
        out = (attn @ v32).to(dtype)
        if self.dwc is not None:
            out = self._add_dwc(out, v, grid)
        return out


def _focused_formula(B, N, d, h, p=3.0, kernel_size=5, prefix=0):
    """Count of the core; ``prefix`` = tokens before the grid (class token), which get no DWC."""
    T = B * h * N * d
    # relu, +eps, /scale, then focus as counted on the CPU: two norms (x * x, sum, sqrt), pow, clamp,
    # divide, multiply (on CUDA each norm is one vector_norm: 2 T + 2 B N fewer per tensor)
    per_tensor = 2 * T + T + (2 * T + B * N + T + 2 * T + B * N + 2 * B * N + T)
    if p > MAX_FREE_POWER:
        per_tensor += 2 * T
    macs = 2 * B * h * N * d * (d + 1)
    elementwise = h * d + 2 * per_tensor + B * h * d * (d + 1) + B * h * N + T  # softplus; /N; +eps; divide
    if kernel_size:
        grid_tokens = B * h * (N - prefix) * d
        macs += grid_tokens * kernel_size * kernel_size
        elementwise += grid_tokens
    return {"macs": macs, "elementwise": elementwise}


register_attention(AttentionSpec(
    name="focused", core=FocusedLinearAttention, family="linear", supports_bias=False, complexity="O(N d^2)",
    options={"p": 3.0, "kernel_size": 5},
    summary="FLatten focused linear attention: phi = f_p(ReLU), p=3, plus 5x5 depthwise conv on V",
    paper="han2023flatten", formula=_focused_formula))
