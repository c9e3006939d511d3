"""Placeholder: FFN variants (stock mlp, compact cFFN) are being written."""
