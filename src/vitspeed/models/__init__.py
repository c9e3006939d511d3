"""Models of the study: timm models with swapped attention, and composite models (FLatten, QT-ViT, hViT)."""
from vitspeed.models.registry import ModelSpec, create_model, get_model_spec, list_models, register_model

__all__ = ["ModelSpec", "create_model", "get_model_spec", "list_models", "register_model"]
