"""Static checks of the notebook sources (their execution is nbval's job)."""
from pathlib import Path

import nbformat
import papermill as pm
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_without_the_book_toolchain(path):
    # a GPU box runs the chapters without myst-nb: glue must come from vitspeed.book's fallback
    source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert "import myst_nb" not in source and "from myst_nb" not in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_a_device_parameter(path):
    # every preset sets `device`; a notebook without it would silently ignore the GPU
    assert "device" in pm.inspect_notebook(str(path))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_headings_stand_on_their_own_line(path):
    # a heading whose line break was lost swallows the paragraph after it into the title
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("#"):
                title = line.lstrip("#").strip()
                assert len(title) <= 80 and not title.endswith((",", " the", " and")), line


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_is_folded_in_the_book(path):
    # the book reads as prose, tables and figures; each code cell is one click away (hide-input) or removed
    from vitspeed.runner import DISPLAY_TAGS

    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code":
            assert set(cell.metadata.get("tags", [])) & set(DISPLAY_TAGS), cell.source[:60]
