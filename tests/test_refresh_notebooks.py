"""tools/refresh_notebooks.py: re-executes notebook sources for nbval, keeping only checked outputs and
never writing results into the committed data/."""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]


def test_refresh_keeps_checked_outputs_and_sends_results_to_a_scratch_folder(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(6 * 7)"),
        nbformat.v4.new_code_cell("import os\nprint(os.environ['VITSPEED_RESULTS_DIR'])"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    env = {k: v for k, v in os.environ.items() if k != "VITSPEED_RESULTS_DIR"}
    done = subprocess.run([sys.executable, str(REPO / "tools" / "refresh_notebooks.py"), str(path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cells = json.loads(path.read_text())["cells"]
    assert "".join(cells[0]["outputs"][0]["text"]) == "42\n" and cells[0]["execution_count"] is not None
    assert cells[1]["outputs"] == []  # unchecked output stripped
    # what the notebook saw as its results folder: a fresh temporary one, not the repository's data/
    probe = tmp_path / "probe.ipynb"
    nb.cells = [nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nimport os\nprint(os.environ['VITSPEED_RESULTS_DIR'])")]
    nbformat.write(nb, probe)
    subprocess.run([sys.executable, str(REPO / "tools" / "refresh_notebooks.py"), str(probe)], env=env, check=True,
                   capture_output=True, timeout=300)
    seen = Path("".join(json.loads(probe.read_text())["cells"][0]["outputs"][0]["text"]).strip())
    assert seen.is_absolute() and REPO not in seen.parents and seen.name.startswith("vitspeed-refresh-")
