"""Preset and notebook resolution of `vitspeed run` (execution itself is covered by nbval)."""
import pytest

from vitspeed.runner import list_notebooks, list_presets, load_preset, run_notebooks


def test_presets_and_notebooks_exist():
    assert {"cpu", "gpu"} <= set(list_presets())
    assert "01_complexity" in list_notebooks()
    assert load_preset("gpu")["parameters"]["device"] == "cuda"


def test_unknown_preset_lists_valid(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'huge'; valid choices: cpu, gpu, gpu-smoke, smoke"):
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


def test_injected_parameters_cell_is_folded_like_the_parameters_cell():
    from nbformat.v4 import new_code_cell, new_notebook

    from vitspeed.runner import strip_run_metadata

    nb = new_notebook(cells=[new_code_cell("x = 1"), new_code_cell("x = 2"), new_code_cell("y = x")])
    nb.cells[0].metadata.update(tags=["parameters", "hide-input"])
    nb.cells[1].metadata.update(tags=["injected-parameters"])
    out = strip_run_metadata(nb)
    assert out.cells[1].metadata["tags"] == ["injected-parameters", "hide-input"]
    assert "tags" not in out.cells[2].metadata  # other cells keep their own display

    bare = new_notebook(cells=[new_code_cell("x = 1"), new_code_cell("x = 2")])
    bare.cells[0].metadata.update(tags=["parameters"])
    bare.cells[1].metadata.update(tags=["injected-parameters"])
    assert strip_run_metadata(bare).cells[1].metadata["tags"] == ["injected-parameters"]


def _toy_repo(root, cells, preset="parameters: {}\n"):
    """A repository root with one preset and one notebook made of ``cells`` (code sources)."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    (root / "presets").mkdir()
    (root / "presets" / "toy.yaml").write_text(preset)
    (root / "notebooks").mkdir()
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "notebooks" / "toy.ipynb")


def test_time_budget_stops_a_sweep_and_writes_no_notebook(tmp_path, monkeypatch):
    from vitspeed.runner import RunIncomplete

    monkeypatch.delenv("VITSPEED_DEADLINE", raising=False)
    root = tmp_path / "repo"
    root.mkdir()
    # the kernel waits for the deadline its parent set, then sweeps: the first config must not start
    _toy_repo(root, ["import os, time\nfrom vitspeed.timing import deadline_from_env, sweep\n"
                     "time.sleep(max(0.0, deadline_from_env() - time.time()) + 0.1)\n"
                     "list(sweep([{'a': 1}], lambda c: 1 / 0, progress=False, deadline=deadline_from_env()))"])
    out = tmp_path / "out"
    with pytest.raises(RunIncomplete, match="toy: .*1 of 1 configurations left") as info:
        run_notebooks(["toy"], preset="toy", output_dir=out, root=root, time_budget_s=1.0)
    assert info.value.executed == []
    assert list(out.iterdir()) == []  # the stopped notebook is not written
    import os
    assert "VITSPEED_DEADLINE" not in os.environ  # restored for the caller


def test_zero_time_budget_runs_nothing_and_cli_exits_3(tmp_path, capsys):
    from vitspeed.cli import main

    code = main(["run", "01_complexity", "--output-dir", str(tmp_path), "--time-budget", "0"])
    assert code == 3
    assert "incomplete: time budget of 0 s reached before 01_complexity" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="time budget must be a number of seconds >= 0"):
        run_notebooks(["01_complexity"], output_dir=tmp_path, time_budget_s=-1)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["run", "01_complexity", "--output-dir", str(blocker / "sub")]) == 2
    assert "cannot use" in capsys.readouterr().err and blocker.read_text() == ""


def test_preset_environment_reaches_the_kernels_only(tmp_path, monkeypatch):
    import os

    import nbformat

    monkeypatch.delenv("VITSPEED_TOY", raising=False)
    root = tmp_path / "repo"
    root.mkdir()
    _toy_repo(root, ["import os\nprint('toy=' + os.environ['VITSPEED_TOY'])"],
              preset="parameters: {}\nenvironment: {VITSPEED_TOY: 0}\n")
    (path,) = run_notebooks(["toy"], preset="toy", output_dir=tmp_path / "out", root=root)
    assert "toy=0" in nbformat.read(path, as_version=4).cells[0].outputs[0]["text"]
    assert "VITSPEED_TOY" not in os.environ  # the caller's environment is restored


def test_preset_environment_must_be_a_mapping_of_names_to_values(tmp_path):
    from vitspeed.runner import load_preset

    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "bad.yaml").write_text("environment: [MALLOC_MMAP_MAX_]\n")
    with pytest.raises(ValueError, match="'environment' must map variable names"):
        load_preset("bad", tmp_path)
    from vitspeed.allocator import KEPT_HEAP

    assert load_preset("cpu")["environment"] == KEPT_HEAP  # the published CPU runs keep freed memory


def _tag_parameters(root, source=None):
    """Make the toy notebook's first cell its papermill parameters cell (optionally with ``source``)."""
    import nbformat

    path = root / "notebooks" / "toy.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].metadata["tags"] = ["parameters"]
    if source is not None:
        nb.cells[0].source = source
    nbformat.write(nb, path)


@pytest.mark.parametrize("text, message", [
    ("parameters: {device: cpu\nnotebooks: [\n", "not valid YAML"),
    ("- a\n- b\n", "must be a mapping"),
    ("parameters: 5\n", "'parameters' must map parameter names"),
    ("notebooks: {toy: 3}\n", "'notebooks' must map notebook names"),
    ("notebooks: {tyo: {x: 1}}\n", r"unknown notebooks \['tyo'\]; valid choices: toy"),
    ("paramters: {x: 1}\n", r"unknown keys \['paramters'\]"),
])
def test_malformed_presets_are_one_clear_error(tmp_path, text, message):
    _toy_repo(tmp_path, ["x = 1"], preset=text)
    with pytest.raises(ValueError, match=message):
        load_preset("toy", tmp_path)


def test_preset_keys_no_notebook_declares_are_refused_before_anything_runs(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    _toy_repo(root, ["x = 1"], preset="notebooks: {toy: {y: 2}}\n")
    _tag_parameters(root)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"notebook toy has no parameters \['y'\]; valid choices: x"):
        run_notebooks(["toy"], preset="toy", output_dir=out, root=root)
    (root / "presets" / "toy.yaml").write_text("parameters: {devcie: cuda}\n")
    with pytest.raises(ValueError, match=r"no notebook has parameters \['devcie'\]; valid choices: x"):
        run_notebooks(["toy"], preset="toy", output_dir=out, root=root)
    assert not out.exists() or list(out.iterdir()) == []


def test_a_device_this_machine_lacks_is_refused_before_a_kernel_starts(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="cuda was requested but no CUDA device is available"):
        run_notebooks(["02_time_share"], preset="gpu-smoke", output_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_input_inside_a_notebook_is_one_line_and_one_run_id_is_shared(tmp_path):
    import nbformat

    root = tmp_path / "repo"
    root.mkdir()
    _toy_repo(root, ['run_id = ""', "print('run=' + run_id)\nassert run_id",
                     "if x < 0:\n    raise ValueError('x must be >= 0; valid choices: 0, 1, 2')"],
              preset="parameters: {x: -1}\n")
    _tag_parameters(root, 'run_id = ""\nx = 0')
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"^toy: x must be >= 0; valid choices: 0, 1, 2$"):
        run_notebooks(["toy"], preset="toy", output_dir=out, root=root, run_id="r42")
    assert list(out.iterdir()) == []  # no partial notebook left
    (root / "presets" / "toy.yaml").write_text("parameters: {x: 1}\n")
    (done,) = run_notebooks(["toy"], preset="toy", output_dir=out, root=root, run_id="r42")
    assert "run=r42" in "".join(o.get("text", "") for c in nbformat.read(done, as_version=4).cells
                                for o in c.get("outputs", []))
    # a run id the preset gives one notebook is kept unless --run-id overrides it
    (root / "presets" / "toy.yaml").write_text("parameters: {x: 1}\nnotebooks: {toy: {run_id: own}}\n")
    (done,) = run_notebooks(["toy"], preset="toy", output_dir=out, root=root, default_run_id="call")
    assert "run=own" in "".join(o.get("text", "") for c in nbformat.read(done, as_version=4).cells
                                for o in c.get("outputs", []))
    (done,) = run_notebooks(["toy"], preset="toy", output_dir=out, root=root, run_id="forced")
    assert "run=forced" in "".join(o.get("text", "") for c in nbformat.read(done, as_version=4).cells
                                   for o in c.get("outputs", []))
    with pytest.raises(ValueError, match="run id 'no good' is not filesystem-safe"):
        run_notebooks(["toy"], preset="toy", output_dir=out, root=root, run_id="no good")
