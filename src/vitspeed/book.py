"""Helpers the chapter notebooks share with the book.

``glue`` is myst-nb's when it is installed (the book build), so numbers computed in a notebook can be
placed in its prose. On a machine without the book's toolchain (a GPU box that only runs the sweeps)
it falls back to storing the value the same way, through IPython's display metadata, which is all
myst-nb itself does at run time; the book is built elsewhere from the results in data/.

A matplotlib figure is glued as a PNG image, rendered here: how IPython would display a Figure
depends on the kernel's matplotlib backend, and under ``MPLBACKEND=Agg`` (how the book's notebooks
run) it would only store the text ``<Figure size ...>``.
"""
from __future__ import annotations

import io
from typing import Any

__all__ = ["glue", "figure_png", "measured_ticks", "FIGURE_DPI"]

FIGURE_DPI = 110
RECORD_PREFIX = "application/papermill.record/"  # myst-nb's prefix for glued values not shown

try:
    from myst_nb import glue as _myst_glue
except ImportError:  # pragma: no cover - exercised only where myst-nb is absent
    _myst_glue = None


def figure_png(fig: Any, dpi: int = FIGURE_DPI) -> bytes:
    """PNG bytes of a matplotlib figure (tight bounding box, ``dpi`` dots per inch)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def measured_ticks(grid: Any, values: Any, rotation: int = 45) -> None:
    """Put the x ticks of every axis of a seaborn grid at the measured ``values`` themselves (ints).

    On a log axis over a short range matplotlib's default labels (2x10^2, 3x10^2, ...) collide;
    the measured sizes are what a reader wants to read off anyway.
    """
    from matplotlib.ticker import FixedLocator, NullLocator

    ticks = sorted({int(v) for v in values})
    for ax in grid.axes.flat:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(t) for t in ticks], rotation=rotation)


def _displayable(variable: Any) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return variable
    if isinstance(variable, Figure):
        from IPython.display import Image

        return Image(data=figure_png(variable), format="png")
    return variable


def glue(name: str, variable: Any, display: bool = True) -> None:
    """Make ``variable``'s displayed value available to the book under ``name`` (figures as PNG).

    Without myst-nb this stores exactly what myst-nb's ``glue`` stores: the object's display
    bundle, its MIME keys prefixed with ``application/papermill.record/`` when ``display`` is
    False (so the notebook does not show it), and ``scrapbook`` metadata naming it.
    """
    variable = _displayable(variable)
    if _myst_glue is not None:
        _myst_glue(name, variable, display)
        return
    from IPython.core.formatters import format_display_data
    from IPython.display import display as ipy_display

    bundle, metadata = format_display_data(variable)
    prefix = "" if display else RECORD_PREFIX
    metadata["scrapbook"] = {"name": name, "mime_prefix": prefix}
    ipy_display({prefix + k: v for k, v in bundle.items()}, raw=True, metadata=metadata)
