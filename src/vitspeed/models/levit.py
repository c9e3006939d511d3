"""BatchNorm folding for timm's LeViT, so that LeViT is timed in its inference form.

LeViT (Graham et al., ICCV 2021) uses BatchNorm after every convolution and linear layer
(timm's ``ConvNorm`` and ``LinearNorm``) and before the classifier (``NormLinear``). At inference
BatchNorm is a per-channel affine map with its running statistics, so it folds into the
neighbouring layer's weight and bias: one layer instead of two, same output. timm gives each of
these modules a ``fuse()`` returning the folded ``Conv2d`` / ``Linear``; :func:`fold_batchnorm`
applies them through timm's ``reparameterize_model`` (with an equivalent walk where that helper is
missing) and checks that no BatchNorm is left.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["fold_batchnorm"]


def _fuse_children(module: nn.Module) -> None:
    # The same walk as timm's reparameterize_model, for timm versions without it.
    for name, child in module.named_children():
        if hasattr(child, "fuse"):
            setattr(module, name, child.fuse())
        else:
            _fuse_children(child)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm of a timm LeViT into its conv/linear layer, in place; returns the model in eval mode.

    The folded model uses the running statistics, so it equals the unfolded model in *eval* mode
    (within float rounding). Raises ``ValueError`` if a BatchNorm is left that could not be folded.
    """
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    try:
        from timm.utils.model import reparameterize_model
    except ImportError:  # pragma: no cover - older timm
        reparameterize_model = None
    with torch.no_grad():
        if reparameterize_model is not None:
            reparameterize_model(model, inplace=True)
        else:  # pragma: no cover
            _fuse_children(model)
    left = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"fold_batchnorm could not fold {len(left)} BatchNorm layer(s), e.g. {left[0]!r}; "
                         "it supports timm LeViT models (levit_*)")
    # timm's fuse() builds the new layers with default device/dtype.
    return model.to(device=device, dtype=dtype).eval()
