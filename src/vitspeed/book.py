"""Helpers the chapter notebooks share with the book.

``glue`` is myst-nb's when it is installed (the book build), so numbers computed in a notebook can be
placed in its prose. On a machine without the book's toolchain (a GPU box that only runs the sweeps)
it falls back to storing the value the same way, through IPython's display metadata, which is all
myst-nb itself does at run time; the book is built elsewhere from the results in data/.
"""
from __future__ import annotations

from typing import Any

__all__ = ["glue"]

try:
    from myst_nb import glue as _myst_glue
except ImportError:  # pragma: no cover - exercised only where myst-nb is absent
    _myst_glue = None


def glue(name: str, variable: Any, display: bool = True) -> None:
    """Make ``variable``'s displayed value available to the book under ``name``."""
    if _myst_glue is not None:
        _myst_glue(name, variable, display)
        return
    from IPython.display import display as ipy_display

    metadata = {"scrapbook": {"name": name, "mime_prefix": "" if display else "application/papermill.record/"}}
    ipy_display(variable, metadata=metadata)
