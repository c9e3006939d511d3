"""Preset and notebook resolution of `vitspeed run` (execution itself is covered by nbval)."""
import pytest

from vitspeed.runner import list_notebooks, list_presets, load_preset, run_notebooks


def test_presets_and_notebooks_exist():
    assert {"cpu", "gpu"} <= set(list_presets())
    assert "01_complexity" in list_notebooks()
    assert load_preset("gpu")["parameters"]["device"] == "cuda"


def test_unknown_preset_lists_valid(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'huge'; valid choices: cpu, gpu"):
        run_notebooks(preset="huge", output_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_notebook_lists_valid_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="unknown notebook 'nope'; valid choices: 01_complexity"):
        run_notebooks(["nope"], output_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_strip_run_metadata_drops_timings_and_hides_injected_cell_of_hidden_parameters():
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from vitspeed.runner import strip_run_metadata

    nb = new_notebook(cells=[new_code_cell("x = 1"), new_code_cell("x = 2")])
    nb.metadata["papermill"] = {"duration": 1.0}
    nb.cells[0].metadata.update(tags=["parameters", "remove-cell"], papermill={"duration": 0.1})
    nb.cells[1].metadata.update(tags=["injected-parameters"], execution={"iopub.status.busy": "t"})
    out = strip_run_metadata(nb)
    assert "papermill" not in out.metadata
    assert "execution" not in out.cells[1].metadata and "papermill" not in out.cells[0].metadata
    assert "remove-cell" in out.cells[1].metadata["tags"]
    assert '"duration"' not in nbformat.writes(out)
