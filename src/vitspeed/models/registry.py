"""Model names the study speaks, and the factory that builds them (timm.create_model plus swaps).

Two kinds of names:
- timm names of the families we support (DeiT/ViT, Swin, LeViT, EfficientViT-MIT), built by
  timm and optionally given another attention (``attention=``) or FFN (``ffn=``);
- the study's own composite models (``flatten_swin_tiny``, ``qtvit_1``, ``hdeit_tiny``, ...),
  registered with :func:`register_model` by the module that defines them.
Weights are random (``pretrained=False``): the study measures cost, not accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

__all__ = ["ModelSpec", "register_model", "list_models", "get_model_spec", "create_model", "TIMM_MODELS"]

# The timm models the study lists; any other timm name of these families works too.
TIMM_MODELS = {
    "deit_tiny_patch16_224": "vit",
    "deit_small_patch16_224": "vit",
    "deit_base_patch16_224": "vit",
    "swin_tiny_patch4_window7_224": "swin",
    "swin_small_patch4_window7_224": "swin",
    "levit_128s": "levit",
    "levit_128": "levit",
    "levit_192": "levit",
    "levit_256": "levit",
    "efficientvit_b1": "efficientvit",
    "efficientvit_b2": "efficientvit",
    "efficientvit_b3": "efficientvit",
}
_FAMILY_PREFIXES = {"deit_": "vit", "vit_": "vit", "swin_": "swin", "levit_": "levit", "efficientvit_b": "efficientvit"}


@dataclass(frozen=True)
class ModelSpec:
    """A composite model of the study: ``builder(img_size=, **kwargs) -> nn.Module``."""

    name: str
    builder: Callable[..., nn.Module]
    summary: str
    family: str
    swappable: bool = False  # whether attention=/ffn= may be given on top


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, summary: str, family: str, swappable: bool = False):
    """Decorator registering a builder function under ``name``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = ModelSpec(name, builder, summary, family, swappable)
        return builder

    return wrap


def _ensure_loaded() -> None:
    from vitspeed.models import composites  # noqa: F401


def timm_family(name: str) -> str | None:
    """The supported family of a timm model name, or None."""
    if name in TIMM_MODELS:
        return TIMM_MODELS[name]
    for prefix, family in _FAMILY_PREFIXES.items():
        if name.startswith(prefix):
            return family
    return None


def list_models() -> list[str]:
    """Listed timm models followed by the study's composite models."""
    _ensure_loaded()
    return list(TIMM_MODELS) + list(_MODELS)


def get_model_spec(name: str) -> ModelSpec | None:
    """The composite spec for ``name``, None for a timm name; unknown names raise ``ValueError``."""
    _ensure_loaded()
    if name in _MODELS:
        return _MODELS[name]
    if timm_family(name) is not None:
        import timm

        if name in timm.list_models(name):
            return None
    raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(list_models())} "
                     f"(or another timm name starting with {', '.join(_FAMILY_PREFIXES)})")


def create_model(
    name: str,
    img_size: int = 224,
    attention: str | None = None,
    attention_options: dict[str, Any] | None = None,
    ffn: str | None = None,
    ffn_options: dict[str, Any] | None = None,
    num_classes: int = 1000,
) -> nn.Module:
    """Build model ``name`` at ``img_size`` in eval mode, with attention/FFN swapped in if asked.

    Raises ``ValueError`` with the valid choices for an unknown model, variant or option, and for an
    image size the patch or window size does not divide.
    """
    from vitspeed.models import swap

    spec = get_model_spec(name)
    if spec is not None:
        if (attention or ffn) and not spec.swappable:
            raise ValueError(f"model {name!r} fixes its own attention and FFN; "
                             "give --attention/--ffn with a timm DeiT/ViT or Swin name instead")
        model = spec.builder(img_size=img_size, num_classes=num_classes, attention=attention,
                             attention_options=attention_options, ffn=ffn, ffn_options=ffn_options)
    else:
        model = swap.build_timm(name, img_size=img_size, num_classes=num_classes, attention=attention,
                                attention_options=attention_options, ffn=ffn, ffn_options=ffn_options)
    return model.eval()
