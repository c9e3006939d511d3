"""Placeholder: models of this module are being written."""
