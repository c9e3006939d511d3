"""vitspeed: attention variants, FLOPs counting and latency measurement for the ViT inference study."""
__version__ = "0.1.0"
