"""FLatten Transformer models (Han et al., ICCV 2023) built from timm models with ``focused`` attention.

- ``flatten_deit_tiny``: DeiT-T (timm ``deit_tiny_patch16_224``) with focused linear attention in
  every block. The class token takes part in the attention but gets no DWC term (the DWC runs on
  the 14 x 14 patch grid).
- ``flatten_swin_tiny``: Swin-T (timm ``swin_tiny_patch4_window7_224``) in FLatten's "LLSS" layout:
  stages 1-2 (indices 0-1) use focused attention over the whole feature map (window = map, no
  shift: 56 x 56 and 28 x 28 tokens at 224), stages 3-4 keep Swin's shifted-window softmax attention
  with its relative position bias, run through fused SDPA (our ``softmax`` shell).

Not reproduced: the learnable positional encoding the reference adds to K (a per-resolution
parameter; one add of N x C per block). Weights are random; the models exist to measure cost.
``attention_options`` sets the focused options (``p``, ``kernel_size``).
"""
from __future__ import annotations

from typing import Any

import timm
from torch import nn

from vitspeed.models.registry import register_model
from vitspeed.models.swap import check_img_size, swap_swin_attention, swap_vit_attention

__all__ = ["flatten_deit_tiny", "flatten_swin_tiny"]


def _check_fixed(name: str, attention: str | None, ffn: str | None) -> None:
    if attention not in (None, "focused") or ffn is not None:
        raise ValueError(f"model {name!r} fixes its own attention (focused) and FFN; "
                         "use attention_options to set p or kernel_size")


@register_model("flatten_deit_tiny", family="vit",
                summary="FLatten-DeiT-T: DeiT-T with focused linear attention (p=3, 5x5 DWC) in all 12 blocks")
def flatten_deit_tiny(img_size: int = 224, num_classes: int = 1000, attention: str | None = None,
                      attention_options: dict[str, Any] | None = None, ffn: str | None = None,
                      ffn_options: dict[str, Any] | None = None) -> nn.Module:
    """DeiT-T with ``focused`` attention in every block, at ``img_size`` (a multiple of 16)."""
    _check_fixed("flatten_deit_tiny", attention, ffn)
    check_img_size("flatten_deit_tiny", "vit", img_size, {"patch": 16})
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=num_classes, img_size=img_size)
    swap_vit_attention(model, "focused", attention_options)
    return model.eval()


@register_model("flatten_swin_tiny", family="swin",
                summary="FLatten-Swin-T: focused global attention in stages 1-2, window softmax in 3-4 (LLSS)")
def flatten_swin_tiny(img_size: int = 224, num_classes: int = 1000, attention: str | None = None,
                      attention_options: dict[str, Any] | None = None, ffn: str | None = None,
                      ffn_options: dict[str, Any] | None = None) -> nn.Module:
    """Swin-T with focused attention over the whole map in stages 0-1, at ``img_size`` (multiple of 224)."""
    _check_fixed("flatten_swin_tiny", attention, ffn)
    check_img_size("flatten_swin_tiny", "swin", img_size, {"patch": 4, "window": 7, "stages": 4})
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=num_classes,
                              img_size=img_size)
    swap_swin_attention(model, "focused", attention_options, stages=[0, 1])
    swap_swin_attention(model, "softmax", None, stages=[2, 3])
    return model.eval()
