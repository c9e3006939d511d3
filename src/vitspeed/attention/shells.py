"""Module shells: projections around a functional attention core, drop-in for timm's modules.

``GlobalAttention`` replaces ``timm.layers.Attention`` (ViT / DeiT blocks); ``WindowAttention``
replaces ``timm.models.swin_transformer.WindowAttention``. Parameter names match timm's
(``qkv``, ``proj``, ``relative_position_bias_table``) so that a stock state dict loads unchanged.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vitspeed.attention.quadratic import WindowBias
from vitspeed.attention.registry import build_core, get_attention

__all__ = ["GlobalAttention", "WindowAttention", "make_attention", "relative_position_index"]


def _split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, N, three_c = qkv.shape
    qkv = qkv.reshape(B, N, 3, num_heads, three_c // (3 * num_heads)).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return q, k, v


class GlobalAttention(nn.Module):
    """Multi-head self-attention over all tokens with a swappable core (drop-in for timm Attention).

    Args:
        dim: token width C.
        num_heads: number of heads h (head_dim = C / h).
        attention: registry name of the core.
        options: the core's options (see ``vitspeed list``).
        qkv_bias / proj_bias: biases of the input and output projections.
        grid: (H, W) of the patch grid; the last H*W tokens are the grid, earlier ones are prefix
            tokens (class token). Cores that need the layout (FLatten's depthwise conv) use it.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        attention: str = "softmax",
        options: dict[str, Any] | None = None,
        qkv_bias: bool = False,
        proj_bias: bool = True,
        grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.grid = grid
        self.variant = attention
        core = build_core(attention, self.head_dim, num_heads, **(options or {}))
        self.qkv = nn.Linear(dim, self._qkv_width(dim, core), bias=qkv_bias)
        self.core = core
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def _qkv_width(self, dim: int, core: nn.Module) -> int:
        """Output width of the fused q, k, v projection (3C; shells with fewer q/k heads override)."""
        return 3 * dim

    def _split(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as (B, heads, N, head_dim) from the projection output (B, N, width)."""
        return _split_heads(qkv, self.num_heads)

    def _grid(self, n_tokens: int) -> tuple[int, int]:
        if self.grid is not None and self.grid[0] * self.grid[1] <= n_tokens:
            return self.grid
        side = math.isqrt(n_tokens)
        return (side, side)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        """Multi-head attention over all N tokens of ``x`` (B, N, C): qkv projection, the core (with
        ``attn_mask`` as its additive score bias, and the token grid), output projection; (B, N, C)."""
        B, N, C = x.shape
        q, k, v = self._split(self.qkv(x))
        out = self.core(q, k, v, bias=attn_mask, grid=self._grid(N))
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


def relative_position_index(win_h: int, win_w: int) -> torch.Tensor:
    """Swin's (win_h*win_w, win_h*win_w) index into the (2*win_h-1)*(2*win_w-1) bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(win_h), torch.arange(win_w), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rel[:, :, 0] += win_h - 1
    rel[:, :, 1] += win_w - 1
    return rel[:, :, 0] * (2 * win_w - 1) + rel[:, :, 1]


class WindowAttention(nn.Module):
    """Swin window attention with a swappable core (drop-in for timm's WindowAttention).

    Input is ``(num_windows * B, window_area, C)``. Cores that take an additive bias get Swin's
    relative position bias plus the shifted-window mask (0 / -100 as timm builds it); cores that
    cannot (linear kernels) have no bias table, and a shift mask reaching them is an error: linear
    variants are placed in Swin as global attention over the whole stage (window = feature map), as
    FLatten-Swin does.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int | tuple[int, int] = 7,
        attention: str = "softmax",
        options: dict[str, Any] | None = None,
        qkv_bias: bool = True,
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        attn_dim = self.head_dim * num_heads
        self.variant = attention
        self.uses_bias = get_attention(attention).supports_bias
        self.window_size = (window_size, window_size) if isinstance(window_size, int) else tuple(window_size)
        self.window_area = self.window_size[0] * self.window_size[1]
        self.qkv = nn.Linear(dim, attn_dim * 3, bias=qkv_bias)
        self.core = build_core(attention, self.head_dim, num_heads, **(options or {}))
        self.proj = nn.Linear(attn_dim, dim)
        if self.uses_bias:
            wh, ww = self.window_size
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
            self.register_buffer("relative_position_index", relative_position_index(wh, ww), persistent=False)

    def set_window_size(self, window_size: tuple[int, int]) -> None:
        """Change the window (timm calls this from ``set_input_size``); the bias table is re-made."""
        window_size = tuple(window_size)
        if window_size == self.window_size:
            return
        self.window_size = window_size
        self.window_area = window_size[0] * window_size[1]
        if self.uses_bias:
            wh, ww = window_size
            table = torch.zeros((2 * wh - 1) * (2 * ww - 1), self.num_heads,
                                device=self.relative_position_bias_table.device)
            nn.init.trunc_normal_(table, std=0.02)
            self.relative_position_bias_table = nn.Parameter(table)
            self.register_buffer("relative_position_index",
                                 relative_position_index(wh, ww).to(table.device), persistent=False)

    def _bias(self, mask: torch.Tensor | None) -> WindowBias:
        N = self.window_area
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return WindowBias(bias.view(N, N, -1).permute(2, 0, 1).unsqueeze(0), mask)  # (1, h, N, N)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention within each window of ``x`` (B * windows, N = window area, C), with the relative
        position bias (and the shift ``mask`` (windows, N, N)) added to the scores for variants that take a
        bias; a variant without one raises ValueError when given a mask. Returns (B * windows, N, C)."""
        B_, N, C = x.shape
        q, k, v = _split_heads(self.qkv(x), self.num_heads)
        if self.uses_bias:
            bias = self._bias(mask)
        elif mask is not None:
            raise ValueError(
                f"attention {self.variant!r} cannot apply Swin's shifted-window mask; "
                "use it as global attention (window = feature map)"
            )
        else:
            bias = None
        out = self.core(q, k, v, bias=bias, grid=self.window_size)
        return self.proj(out.transpose(1, 2).reshape(B_, N, -1))


def make_attention(kind: str, **kwargs: Any) -> nn.Module:
    """Build a shell of ``kind`` ('global' or 'window'), honouring a variant's own shell if it has one."""
    spec = get_attention(kwargs.get("attention", "softmax"))
    if spec.shell is not None:
        return spec.shell(kind=kind, **kwargs)
    if kind == "global":
        return GlobalAttention(**kwargs)
    if kind == "window":
        return WindowAttention(**kwargs)
    raise ValueError(f"unknown shell kind {kind!r}; valid choices: global, window")
