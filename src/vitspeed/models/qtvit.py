"""QT-ViT (Xu et al., NeurIPS 2024): EfficientViT-B1/B2/B3 with the quadratic Taylor kernel.

``qtvit_1``, ``qtvit_2``, ``qtvit_3`` are timm's MIT EfficientViT ``efficientvit_b1/b2/b3`` with
every ``LiteMLA`` replaced by :class:`QTLiteMLA`, which keeps LiteMLA's 1x1 qkv projection, its
multi-scale aggregation (5x5 depthwise + grouped 1x1 conv; each scale branch adds ``heads`` extra
heads of the same head dim) and its output projection, and changes the attention itself:

- the ReLU kernel and LiteMLA's own linear attention are replaced by a registry core on
  ``(B, heads, N, head_dim)`` tensors, ``taylor2_compact`` by default, any ``family="linear"``
  variant (the Taylor ablations, ``linear_relu``, ...) by ``attention=``/``attention_options=``;
- a positional embedding is added to K before the kernel. The reference code adds an absolute
  (learnable) positional embedding; our reading: one learnable value per K channel and grid
  position, ``(1, heads, H*W, head_dim)`` with all multi-scale heads, sized for the feature map at
  the ``img_size`` the model is built for (truncated-normal init, std 0.02, like timm's ViT). At
  another input size it is resized bilinearly, so the model still runs, at the cost of an
  interpolation the built size does not pay;
- the shortcut o = o + GELU(BN(v)): v in image layout ``(B, heads * head_dim, H, W)``, one
  BatchNorm2d over those channels, GELU, added to the attention output before the projection.

Weights are random (the study measures cost). Images must be a multiple of 32 (stride of the last
stage). MBConv blocks have no ``mlp``, so ``ffn=`` is not supported.
"""
from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models.efficientvit_mit import EfficientVitBlock, LiteMLA
from torch import nn

from vitspeed.attention.registry import build_core, get_attention, list_attentions
from vitspeed.models.registry import register_model
from vitspeed.models.swap import check_img_size

__all__ = ["QTLiteMLA", "build_qtvit", "DEFAULT_ATTENTION"]

DEFAULT_ATTENTION = "taylor2_compact"


class QTLiteMLA(nn.Module):
    """LiteMLA with a swappable linear core, a positional embedding on K and a GELU(BN(V)) shortcut.

    Built from a timm ``LiteMLA`` whose ``qkv``, ``aggreg`` and ``proj`` modules it takes over.

    Args:
        lite: the timm module to convert.
        grid: (H, W) of the feature map at the built image size (sizes the positional embedding).
        attention: registry name of a ``family="linear"`` variant.
        options: the variant's options.
    """

    def __init__(self, lite: LiteMLA, grid: tuple[int, int], attention: str = DEFAULT_ATTENTION,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.dim = lite.dim
        self.qkv = lite.qkv
        self.aggreg = lite.aggreg
        self.proj = lite.proj
        total_dim = self.qkv.conv.out_channels // 3
        self.num_heads = (total_dim // self.dim) * (1 + len(self.aggreg))
        self.grid = tuple(grid)
        self.variant = attention
        self.core = build_core(attention, self.dim, self.num_heads, **(options or {}))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_heads, grid[0] * grid[1], self.dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.v_norm = nn.BatchNorm2d(self.num_heads * self.dim)
        self.v_act = nn.GELU()

    def _pos(self, H: int, W: int) -> torch.Tensor:
        if (H, W) == self.grid:
            return self.pos_embed
        gh, gw = self.grid
        pos = self.pos_embed.reshape(1, self.num_heads, gh, gw, self.dim).permute(0, 1, 4, 2, 3)
        pos = F.interpolate(pos.flatten(1, 2), size=(H, W), mode="bilinear", align_corners=False)
        return pos.reshape(1, self.num_heads, self.dim, H * W).transpose(-1, -2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """EfficientViT's multi-scale linear attention on a feature map ``x`` (B, C, H, W), with this
        module's kernel as core and the positional term added to the keys; returns (B, C, H, W)."""
        B, _, H, W = x.shape
        qkv = self.qkv(x)
        multi_scale = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        multi_scale = multi_scale.reshape(B, -1, 3 * self.dim, H * W).transpose(-1, -2)
        q, k, v = multi_scale.chunk(3, dim=-1)  # (B, heads, N, dim) each
        k = k + self._pos(H, W)
        out = self.core(q, k, v, grid=(H, W))
        out = out.transpose(-1, -2).reshape(B, -1, H, W)
        v = v.transpose(-1, -2).reshape(B, -1, H, W)
        out = out + self.v_act(self.v_norm(v))
        return self.proj(out)


def build_qtvit(base: str, name: str, img_size: int = 224, num_classes: int = 1000, attention: str | None = None,
                attention_options: dict[str, Any] | None = None, ffn: str | None = None,
                ffn_options: dict[str, Any] | None = None) -> nn.Module:
    """timm ``base`` (an EfficientViT-B) with every LiteMLA turned into a :class:`QTLiteMLA`.

    Raises ``ValueError`` for an image size that is not a multiple of 32, an attention variant that
    is not a linear kernel, an unknown option, or an FFN swap.
    """
    check_img_size(name, "efficientvit", img_size, {})
    if ffn is not None or ffn_options:
        raise ValueError(f"model {name!r} has MBConv blocks, not an MLP: ffn swaps are not supported "
                         "(valid choice: ffn=None)")
    attention = attention or DEFAULT_ATTENTION
    spec = get_attention(attention)
    if spec.family != "linear":
        raise ValueError(f"model {name!r} needs a linear-attention kernel, got {attention!r} "
                         f"(family {spec.family!r}); valid choices: {', '.join(list_attentions('linear'))}")
    model = timm.create_model(base, pretrained=False, num_classes=num_classes)
    reductions = {info["module"]: info["reduction"] for info in model.feature_info}
    for i, stage in enumerate(model.stages):
        side = img_size // reductions[f"stages.{i}"]
        for blk in stage.blocks:
            if isinstance(blk, EfficientVitBlock) and isinstance(blk.context_module.main, LiteMLA):
                blk.context_module.main = QTLiteMLA(blk.context_module.main, (side, side), attention,
                                                    attention_options)
    return model.eval()


def _register(name: str, base: str, label: str) -> None:
    def builder(img_size: int = 224, num_classes: int = 1000, attention: str | None = None,
                attention_options: dict[str, Any] | None = None, ffn: str | None = None,
                ffn_options: dict[str, Any] | None = None) -> nn.Module:
        return build_qtvit(base, name, img_size, num_classes, attention, attention_options, ffn, ffn_options)

    builder.__name__ = name
    builder.__doc__ = (f"{label}: timm {base} with taylor2_compact (or ``attention=``, a linear kernel) in every "
                       "LiteMLA, positional embedding on K and GELU(BN(V)) shortcut; img_size a multiple of 32.")
    register_model(name, summary=f"{label}: {base} with the QT-ViT compact Taylor kernel in every LiteMLA",
                   family="efficientvit", swappable=True)(builder)


_register("qtvit_1", "efficientvit_b1", "QT-ViT-1")
_register("qtvit_2", "efficientvit_b2", "QT-ViT-2")
_register("qtvit_3", "efficientvit_b3", "QT-ViT-3")
