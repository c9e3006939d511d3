"""Imports the modules defining the study's composite models so that they are registered."""
from vitspeed.models import flatten  # noqa: F401  flatten_deit_tiny, flatten_swin_tiny
from vitspeed.models import qtvit  # noqa: F401  qtvit_1..3
from vitspeed.models import hvit  # noqa: F401  hdeit_tiny, hdeit_small
