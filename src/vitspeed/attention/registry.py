"""The attention registry: one name per variant, shared by the CLI, notebooks, tests and book.

A variant is an :class:`AttentionSpec`. Its ``core`` is an ``nn.Module`` class that maps
``q, k, v`` of shape ``(B, heads, N, head_dim)`` to an output of the same shape (the functional
heart, like ``F.scaled_dot_product_attention``); the module shells in :mod:`vitspeed.attention.shells`
own the projections and make the core a drop-in for timm's ViT and Swin attention.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import sympy
from torch import nn

__all__ = [
    "AttentionSpec",
    "register_attention",
    "get_attention",
    "list_attentions",
    "build_core",
    "validate_options",
    "coerce_option",
    "OPTION_TYPE_WORDS",
]


@dataclass(frozen=True)
class AttentionSpec:
    """Everything the study needs to know about one attention variant.

    Attributes:
        name: registry name (``softmax``, ``linear_relu``, ...).
        family: ``quadratic`` (N x N scores), ``linear`` (kernelized, O(N d^2)) or ``redundancy``.
        core: ``nn.Module`` class, constructed as ``core(head_dim=, num_heads=, **options)``; its
            ``forward(q, k, v, bias=None, grid=None)`` works on ``(B, heads, N, head_dim)``.
        summary: one line for ``vitspeed list`` and the book.
        paper: BibTeX key of the source in references.bib.
        options: default values of the variant's options (all settable from CLI and notebooks).
        supports_bias: True if the core accepts an additive score bias (Swin's relative position
            bias and shift mask); linear kernels cannot.
        formula: ``formula(B, N, d, h, **options) -> {"macs": expr, "elementwise": expr}``, the
            closed-form count of the core alone in the counter's conventions (MACs for products,
            one op per element for elementwise work), as sympy expressions.
        shell: optional factory replacing the default module shell (hallucinated attention needs
            its own projections).
    """

    name: str
    family: str
    core: type[nn.Module]
    summary: str
    paper: str
    options: dict[str, Any] = field(default_factory=dict)
    supports_bias: bool = False
    formula: Callable[..., dict[str, sympy.Expr]] | None = None
    shell: Callable[..., nn.Module] | None = None
    complexity: str = ""


_REGISTRY: dict[str, AttentionSpec] = {}


def register_attention(spec: AttentionSpec) -> AttentionSpec:
    """Add ``spec`` to the registry; a duplicate name is a programming error."""
    if spec.name in _REGISTRY:
        raise ValueError(f"attention variant {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    # Importing the family modules registers their variants.
    from vitspeed.attention import families  # noqa: F401


def list_attentions(family: str | None = None) -> list[str]:
    """Names of all registered variants (optionally of one family), in registration order."""
    _ensure_loaded()
    return [n for n, s in _REGISTRY.items() if family is None or s.family == family]


def get_attention(name: str) -> AttentionSpec:
    """Look up a variant; an unknown name raises ``ValueError`` listing the valid names."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown attention variant {name!r}; valid choices: {', '.join(sorted(_REGISTRY))}"
        ) from None


def validate_options(spec: AttentionSpec, options: dict[str, Any] | None) -> dict[str, Any]:
    """Merge ``options`` over the spec's defaults. ``ValueError`` for an unknown option name, a value
    that does not parse as the default's type, a number option that is not finite (nan, inf), and a
    negative ``eps`` (the constant added to a normaliser)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        valid = ", ".join(sorted(spec.options)) or "none"
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for attention {spec.name!r}; valid options: {valid}"
        )
    merged = dict(spec.options)
    for key, value in options.items():
        default = spec.options[key]
        # Values coming from the CLI arrive as strings: coerce to the default's type.
        if isinstance(value, str) and default is not None and not isinstance(default, str):
            value = coerce_option(value, type(default), key, f"attention {spec.name!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"option {key}={value} of attention {spec.name!r} must be a finite number")
        if key == "eps" and isinstance(value, (int, float)) and value < 0:
            raise ValueError(f"option eps={value} of attention {spec.name!r} must be >= 0 (it is added to a normaliser)")
        merged[key] = value
    return merged


#: How an option's type is named in an error message (a CLI value that does not parse as it).
OPTION_TYPE_WORDS: dict[type, str] = {int: "an integer", float: "a number",
                                      bool: "true or false (also 1/0, yes/no, on/off)", str: "a string"}


def coerce_option(value: str, kind: type, key: str, owner: str) -> Any:
    """A CLI option's text ``value`` as ``kind`` (bool: 1/0, true/false, yes/no, on/off); ValueError
    naming the option ``key``, its ``owner`` (e.g. "attention 'focused'") and the type it must be."""
    try:
        if kind is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return kind(value)
    except ValueError:
        raise ValueError(f"option {key}={value!r} of {owner} must be {OPTION_TYPE_WORDS.get(kind, kind.__name__)}") from None


def build_core(name: str, head_dim: int, num_heads: int, **options: Any) -> nn.Module:
    """Construct the functional core of variant ``name`` for heads of size ``head_dim``."""
    spec = get_attention(name)
    merged = validate_options(spec, options)
    params = inspect.signature(spec.core.__init__).parameters
    kwargs = {k: v for k, v in merged.items() if k in params}
    return spec.core(head_dim=head_dim, num_heads=num_heads, **kwargs)
