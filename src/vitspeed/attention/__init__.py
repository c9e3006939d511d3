"""Attention variants, their registry and the module shells that swap them into timm models."""
from vitspeed.attention.registry import (
    AttentionSpec,
    build_core,
    get_attention,
    list_attentions,
    register_attention,
    validate_options,
)

__all__ = [
    "AttentionSpec",
    "build_core",
    "get_attention",
    "list_attentions",
    "register_attention",
    "validate_options",
]

# Register every family now, in book order, whichever family module a caller imports first.
from vitspeed.attention import families  # noqa: E402,F401
