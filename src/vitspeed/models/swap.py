"""Build timm models and swap the study's attention variants and FFNs into their blocks.

timm's VisionTransformer takes ``attn_layer`` only from 1.0.23 and Swin takes none, so we replace
``block.attn`` (and ``block.mlp``) after construction, which works on every timm version. The
projections' weights are copied over, so a swapped-in ``softmax`` reproduces the stock model.
"""
from __future__ import annotations

from typing import Any, Iterable

import timm
import torch
from torch import nn

from vitspeed.attention.registry import get_attention, validate_options
from vitspeed.attention.shells import GlobalAttention, WindowAttention, make_attention

__all__ = ["build_timm", "swap_vit_attention", "swap_swin_attention", "swap_ffn", "check_img_size"]


def check_img_size(name: str, family: str, img_size: int, model_cfg: dict[str, Any]) -> None:
    """Raise ``ValueError`` if ``img_size`` is not divisible by what the architecture needs."""
    if img_size <= 0:
        raise ValueError(f"img_size must be positive, got {img_size}")
    if family == "vit":
        patch = model_cfg["patch"]
        if img_size % patch:
            raise ValueError(f"img_size {img_size} is not divisible by the patch size {patch} of {name}; "
                             f"valid sizes are multiples of {patch} (e.g. 224, 384, 512)")
    elif family == "swin":
        step = model_cfg["patch"] * model_cfg["window"] * 2 ** (model_cfg["stages"] - 1)
        if img_size % step:
            raise ValueError(
                f"img_size {img_size} does not give feature maps divisible by the window size "
                f"{model_cfg['window']} in every stage of {name}; valid sizes are multiples of {step} "
                f"(e.g. {step}, {2 * step}, {3 * step}, {4 * step})")
    elif family in ("levit", "efficientvit"):
        if img_size % 32:
            raise ValueError(f"img_size {img_size} must be a multiple of 32 for {name}")


def _cfg(name: str, family: str) -> dict[str, Any]:
    if family == "vit":
        patch = int(name.split("patch")[1].split("_")[0]) if "patch" in name else 16
        return {"patch": patch}
    if family == "swin":
        patch = int(name.split("patch")[1].split("_")[0])
        window = int(name.split("window")[1].split("_")[0])
        return {"patch": patch, "window": window, "stages": 4}
    return {}


def build_timm(
    name: str,
    img_size: int = 224,
    num_classes: int = 1000,
    attention: str | None = None,
    attention_options: dict[str, Any] | None = None,
    ffn: str | None = None,
    ffn_options: dict[str, Any] | None = None,
    fold_bn: bool = True,
) -> nn.Module:
    """``timm.create_model(name)`` at ``img_size`` with random weights, attention/FFN swapped.

    LeViT's BatchNorms are folded into their layers (inference form) unless ``fold_bn=False``.
    """
    from vitspeed.models.registry import timm_family

    family = timm_family(name)
    if attention_options and attention is None:
        raise ValueError(f"attention options {sorted(attention_options)} given without an attention to swap into "
                         f"{name!r}; name one (--attention; `vitspeed list` shows the valid choices)")
    if ffn_options and ffn is None:
        raise ValueError(f"FFN options {sorted(ffn_options)} given without an FFN to swap into {name!r}; "
                         "name one (--ffn; `vitspeed list` shows the valid choices)")
    check_img_size(name, family, img_size, _cfg(name, family))
    if (attention or ffn) and family not in ("vit", "swin"):
        raise ValueError(f"--attention/--ffn swap into {name!r} is not supported; "
                         "swappable families: DeiT/ViT (deit_*, vit_*) and Swin (swin_*)")
    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": num_classes}
    if family in ("vit", "swin"):
        kwargs["img_size"] = img_size
    model = timm.create_model(name, **kwargs)
    if family == "levit" and fold_bn:
        from vitspeed.models.levit import fold_batchnorm

        fold_batchnorm(model)
    if attention is not None:
        if family == "vit":
            swap_vit_attention(model, attention, attention_options)
        else:
            swap_swin_attention(model, attention, attention_options)
    if ffn is not None:
        swap_ffn(_blocks(model, family), ffn, ffn_options)
    return model.eval()


def _blocks(model: nn.Module, family: str) -> list[nn.Module]:
    if family == "vit":
        return list(model.blocks)
    return [blk for stage in model.layers for blk in stage.blocks]


def _copy_projections(new: nn.Module, old: nn.Module) -> None:
    """Copy parameters whose names and shapes agree (qkv, proj, relative position bias table)."""
    old_state = old.state_dict()
    with torch.no_grad():
        for key, value in new.state_dict().items():
            if key in old_state and old_state[key].shape == value.shape:
                value.copy_(old_state[key])


def swap_vit_attention(model: nn.Module, attention: str, options: dict[str, Any] | None = None,
                       blocks: Iterable[int] | None = None) -> nn.Module:
    """Replace ``blk.attn`` of a timm VisionTransformer (all blocks, or those indexed) in place."""
    spec = get_attention(attention)
    validate_options(spec, options)
    grid = tuple(model.patch_embed.grid_size)
    for i, blk in enumerate(model.blocks):
        if blocks is not None and i not in blocks:
            continue
        old = blk.attn
        dim = old.qkv.in_features
        new = make_attention("global", dim=dim, num_heads=old.num_heads, attention=attention, options=options,
                             qkv_bias=old.qkv.bias is not None, proj_bias=old.proj.bias is not None, grid=grid)
        _copy_projections(new, old)
        blk.attn = new
    return model


def swap_swin_attention(model: nn.Module, attention: str, options: dict[str, Any] | None = None,
                        stages: Iterable[int] | None = None) -> nn.Module:
    """Replace ``blk.attn`` in Swin stages (all, or those indexed) in place.

    Variants that take a score bias keep Swin's windows, shifts and relative position bias.
    Variants that cannot (linear kernels) become global attention over the stage's whole feature
    map (window = feature map, no shift), the way FLatten-Swin places its linear attention.
    """
    spec = get_attention(attention)
    validate_options(spec, options)
    for s, stage in enumerate(model.layers):
        if stages is not None and s not in stages:
            continue
        for blk in stage.blocks:
            old = blk.attn
            new = make_attention("window", dim=old.qkv.in_features, num_heads=old.num_heads,
                                 window_size=tuple(old.window_size), attention=attention, options=options,
                                 qkv_bias=old.qkv.bias is not None)
            _copy_projections(new, old)
            blk.attn = new
            if not spec.supports_bias:
                res = tuple(blk.input_resolution)
                blk.set_input_size(feat_size=res, window_size=res)
    return model


def swap_ffn(blocks: Iterable[nn.Module], ffn: str, options: dict[str, Any] | None = None) -> None:
    """Replace each block's ``mlp`` by the FFN variant ``ffn`` (see :mod:`vitspeed.ffn`)."""
    from vitspeed.ffn import build_ffn

    for blk in blocks:
        old = blk.mlp
        blk.mlp = build_ffn(ffn, in_features=old.fc1.in_features, hidden_features=old.fc1.out_features,
                            out_features=old.fc2.out_features, **(options or {}))


# Shells re-exported for callers that build modules directly.
_ = (GlobalAttention, WindowAttention)
