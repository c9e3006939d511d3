"""Placeholder: variants of this family are being written."""
