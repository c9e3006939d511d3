"""Re-execute notebook sources in place with their default parameters, for nbval's reference outputs.

Results the notebooks write go to a scratch folder ($VITSPEED_RESULTS_DIR, a new temporary one by
default), as under nbval: never into the committed data/. Only the outputs of cells marked ``# NBVAL_CHECK_OUTPUT`` (deterministic: FLOPs, params, formulas)
are kept (with their execution counts); every other output and papermill metadata are stripped, so the committed
sources stay small and free of timings. nbval --nbval-lax then compares exactly those cells.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat
import papermill as pm

from vitspeed.runner import strip_run_metadata

MARK = "# NBVAL_CHECK_OUTPUT"


def refresh(path: Path) -> None:
    """Execute ``path`` with its defaults and write it back with only the checked outputs."""
    fd, tmp = tempfile.mkstemp(suffix=".ipynb")
    os.close(fd)
    try:
        pm.execute_notebook(str(path), tmp, cwd=str(path.parent), progress_bar=False)
        nb = strip_run_metadata(nbformat.read(tmp, as_version=4))
    finally:
        os.unlink(tmp)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if MARK not in cell.source:
            cell.outputs = []
            cell.execution_count = None
        # checked cells keep their execution count: nbval treats a cell without one as never run
    nbformat.write(nb, path)


if __name__ == "__main__":
    # results of these default-sized runs go to a scratch folder, never into the committed data/
    os.environ.setdefault("VITSPEED_RESULTS_DIR", tempfile.mkdtemp(prefix="vitspeed-refresh-"))
    for arg in sys.argv[1:]:
        print(f"refreshing {arg}", flush=True)
        refresh(Path(arg))
