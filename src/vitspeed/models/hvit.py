"""hViT: DeiT with hallucinated attention (hMHSA) and compact FFN (cFFN) in every block.

Our reading of Xu et al. (arXiv 2306.10875), whose full text we do not have: see
:mod:`vitspeed.attention.hallucinated` and :mod:`vitspeed.ffn` for the interpretation. The models
are timm's DeiT with ``blk.attn`` and ``blk.mlp`` replaced, the cFFN training branches merged
(inference form), random weights.

DeiT-S has 6 heads: 3 computed, 3 hallucinated (ratio 1/2). DeiT-T has 3 heads, which cannot be
halved; it computes 2 and hallucinates 1 (ratio 2/3), the nearest split that still leaves most
heads computed. Pass ``attention_options={"ratio": ...}`` to choose another.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from vitspeed.models.registry import register_model
from vitspeed.models.swap import build_timm

__all__ = ["build_hdeit", "merge_ffns"]


def merge_ffns(model: nn.Module) -> nn.Module:
    """Fold every re-parameterizable FFN (``blk.mlp.reparameterize``) into its inference form."""
    for blk in model.blocks:
        if hasattr(blk.mlp, "reparameterize"):
            blk.mlp.reparameterize()
    return model


def build_hdeit(base: str, default_ratio: float, img_size: int = 224, num_classes: int = 1000,
                attention: str | None = None, attention_options: dict[str, Any] | None = None,
                ffn: str | None = None, ffn_options: dict[str, Any] | None = None) -> nn.Module:
    """timm ``base`` (a DeiT) with hMHSA (ratio ``default_ratio`` unless given) and merged cFFN."""
    attention = attention or "hallucinated"
    if attention == "hallucinated":
        attention_options = {"ratio": default_ratio, **(attention_options or {})}
    model = build_timm(base, img_size=img_size, num_classes=num_classes, attention=attention,
                       attention_options=attention_options, ffn=ffn or "cffn", ffn_options=ffn_options)
    return merge_ffns(model).eval()


@register_model("hdeit_tiny", "DeiT-T with hMHSA (2 of 3 heads computed) and cFFN (rank C/2), merged",
                family="vit")
def hdeit_tiny(img_size: int = 224, num_classes: int = 1000, attention: str | None = None,
               attention_options: dict[str, Any] | None = None, ffn: str | None = None,
               ffn_options: dict[str, Any] | None = None) -> nn.Module:
    """hDeiT-Tiny: deit_tiny_patch16_224, hallucinated attention (ratio 2/3) and cFFN in every block."""
    return build_hdeit("deit_tiny_patch16_224", 2 / 3, img_size, num_classes, attention,
                       attention_options, ffn, ffn_options)


@register_model("hdeit_small", "DeiT-S with hMHSA (3 of 6 heads computed) and cFFN (rank C/2), merged",
                family="vit")
def hdeit_small(img_size: int = 224, num_classes: int = 1000, attention: str | None = None,
                attention_options: dict[str, Any] | None = None, ffn: str | None = None,
                ffn_options: dict[str, Any] | None = None) -> nn.Module:
    """hDeiT-Small: deit_small_patch16_224, hallucinated attention (ratio 1/2) and cFFN in every block."""
    return build_hdeit("deit_small_patch16_224", 0.5, img_size, num_classes, attention,
                       attention_options, ffn, ffn_options)
