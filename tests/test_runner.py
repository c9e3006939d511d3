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
