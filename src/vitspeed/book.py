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
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

__all__ = ["glue", "figure_png", "measured_ticks", "legend_below", "tidy", "setting_label", "short_citation", "FIGURE_DPI",
           "INTEGER_FIELDS"]

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


def legend_below(grid: Any, ncol: int = 5) -> None:
    """Move a seaborn grid's legend under its panels in ``ncol`` columns: with one entry per attention
    variant (and its family and size keys) a legend beside the panels is taller than they are."""
    import seaborn as sns

    if getattr(grid, "_legend", None) is None:
        return
    sns.move_legend(grid, "upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False)


#: Fields that count things: shown as integers even when a missing value made pandas read them as floats.
INTEGER_FIELDS = frozenset({"tokens", "img_size", "batch_size", "threads", "heads", "head_dim", "cap_tokens",
                            "matmul_size", "models", "N", "d", "C"})


def setting_label(rows: Any) -> Any:
    """Each row's setting as a figure label: "hardware | dtype", plus " | N thr" for a CPU row (a
    ``device`` of "cpu", or a hardware slug starting "cpu-"), whose thread count shapes its timings;
    on a GPU the host's threads say nothing about the measurement. ``rows``: a DataFrame with
    hardware, dtype and threads columns; returns a Series of text."""
    cpu = (rows.device == "cpu") if "device" in rows else rows.hardware.astype(str).str.startswith("cpu-")
    threads = rows.threads.astype("Int64").astype(str)
    return (rows.hardware.astype(str) + " | " + rows.dtype.astype(str)
            + (" | " + threads + " thr").where(cpu, ""))


def _integral(values: Any) -> bool:
    import pandas as pd

    s = pd.Series(values)
    if not pd.api.types.is_float_dtype(s):
        return False
    s = s.dropna()
    return bool(len(s)) and bool((s == s.round()).all())


def _int_index(index: Any) -> Any:
    import pandas as pd

    if isinstance(index, pd.MultiIndex):
        levels = [lvl.astype("Int64") if lvl.name in INTEGER_FIELDS and _integral(lvl) else lvl
                  for lvl in index.levels]
        return index.set_levels(levels)
    if index.name in INTEGER_FIELDS and _integral(index):
        return index.astype("Int64")
    return index


def tidy(df: Any, index: Sequence[str] | None = None, missing: str | None = None) -> Any:
    """A copy of ``df`` for display: counts shown as integers, an optional index, missing cells named.

    Columns and index or column levels named in :data:`INTEGER_FIELDS` whose values are whole numbers
    stored as floats (a NaN elsewhere in the column makes pandas read 224 as 224.0) become nullable
    integers. ``index`` moves those columns into the index (instead of a meaningless row number);
    ``missing`` replaces NaN cells with that text (e.g. "-" where a value does not apply). Anything
    but a DataFrame (a notebook's message in place of an empty table) is returned as it is.

    The book's tables are its results, so none may be cut to pandas' "first and last five rows": the
    display limits on rows and columns are raised (process-wide, never lowered) to fit the table.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        return df
    for option, size in (("display.max_rows", len(df)), ("display.max_columns", df.shape[1] + df.index.nlevels)):
        limit = pd.get_option(option)
        if limit is not None and 0 < limit < size:
            pd.set_option(option, size)
    out = df.copy()
    for col in out.columns:
        if col in INTEGER_FIELDS and _integral(out[col]):
            out[col] = out[col].astype("Int64")
    if index is not None:
        out = out.set_index(list(index))
    out.index = _int_index(out.index)
    out.columns = _int_index(out.columns)
    if missing is not None:
        for col in out.columns:
            if pd.api.types.is_float_dtype(out[col]):
                # as text, so the column can hold `missing`; with as many decimals as its values show
                places = _decimals(out[col])
                out[col] = out[col].map(lambda v, p=places: missing if pd.isna(v) else f"{v:.{p}f}")
        out = out.astype(object).where(out.notna(), missing)
    return out


def _decimals(values: Any, most: int = 6) -> int:
    """The decimals a column of (already rounded) floats shows: the longest fraction among its values."""
    places = 0
    for v in values.dropna():
        text = repr(float(v))
        if "e" in text or "." not in text:
            continue
        fraction = text.split(".")[1].rstrip("0")
        places = max(places, len(fraction))
    return min(places, most)


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


#: The book's bibliography, at the repository root (where an editable install or PYTHONPATH=src finds it).
BIBLIOGRAPHY = Path(__file__).resolve().parents[2] / "references.bib"


@lru_cache(maxsize=4)
def _bib_entries(path: str) -> dict[str, tuple[str, bool, str]]:
    """bib key -> (first author's family name, whether there are several authors, year) of every entry
    in a BibTeX file. A braced author ("{Facebook AI Research}") is a name of its own."""
    text = Path(path).read_text(encoding="utf-8")
    entries = {}
    for match in re.finditer(r"@\w+\{([^,\s]+),(.*?)\n\}", text, flags=re.S):
        key, body = match.group(1), match.group(2)
        author = re.search(r"author\s*=\s*\{(.*)\},?\s*$", body, flags=re.M)
        year = re.search(r"year\s*=\s*\{?([^},\n]+)", body)
        names = author.group(1) if author else ""
        if names.startswith("{") and names.endswith("}"):
            first, several = names[1:-1], False
        else:
            parts = names.split(" and ")
            first, several = parts[0], len(parts) > 1
            first = first.split(",")[0] if "," in first else first.split(" ")[-1]
        family = re.sub(r"\\[a-zA-Z]+|[{}\\'`^\"~]", "", first).strip()
        entries[key] = (family, several, year.group(1).strip() if year else "")
    return entries


def short_citation(key: str, bib: str | Path | None = None) -> str:
    """A bib key as a table cell names its source: "Vaswani et al. 2017" (one author: "Tanimoto 1958").

    Read from ``bib`` (default: the book's references.bib); a key not found there, or an empty one, is
    returned unchanged, so a table never loses its source."""
    path = Path(bib) if bib is not None else BIBLIOGRAPHY
    if not key or not path.exists():
        return key
    entry = _bib_entries(str(path)).get(key)
    if entry is None:
        return key
    family, several, year = entry
    return f"{family}{' et al.' if several else ''} {year}".strip()
