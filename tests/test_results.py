"""Tests for vitspeed.results: atomic tidy CSV + env sidecar, resume, no overwriting, merged reading."""
import json
import random
from pathlib import Path

import pandas as pd
import pytest

from vitspeed.results import (ENV_VAR, ResultsWriter, config_key, default_root, list_runs, load_env,
                              read_results, write_root)
from vitspeed.timing import sweep


def _env(cpu="AMD EPYC 7B13 64-Core Processor", threads=2, date="2025-01-01T00:00:00+00:00", torch_version="2.x"):
    return {"device": "cpu", "device_type": "cpu", "cpu_model": cpu, "threads": threads, "date": date,
            "torch_version": torch_version}


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def _files(folder: Path):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_nothing_written_before_first_row(tmp_path):
    w = ResultsWriter("ch1", _env(), run_id="r1", root=tmp_path)
    w.extend([])
    assert not (tmp_path / "ch1").exists()
    assert w.path == tmp_path / "ch1" / "cpu-amd-epyc-7b13-2t__r1.csv"


def test_atomic_write_leaves_valid_file_and_no_temp_files(tmp_path):
    w = ResultsWriter("ch1", _env(), run_id="r1", root=tmp_path)
    w.add({"model": "vit", "size": 224, "median_ms": 1.5})
    assert _files(tmp_path / "ch1") == ["cpu-amd-epyc-7b13-2t__r1.csv", "cpu-amd-epyc-7b13-2t__r1.env.json"]
    w.extend([{"model": "vit", "size": 256, "median_ms": 2.0, "status": "ok"},
              {"model": "vit", "size": 512, "status": "oom"}])
    assert _files(tmp_path / "ch1") == ["cpu-amd-epyc-7b13-2t__r1.csv", "cpu-amd-epyc-7b13-2t__r1.env.json"]
    frame = pd.read_csv(w.path)
    assert list(frame.columns) == ["model", "size", "median_ms", "status"]  # union, first-seen order
    assert frame["size"].tolist() == [224, 256, 512]
    assert pd.isna(frame.loc[2, "median_ms"]) and pd.isna(frame.loc[0, "status"])
    import os
    import stat
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(w.path.stat().st_mode) == 0o644 & ~mask  # not mkstemp's 0600
    env = json.loads(w.env_path.read_text())
    assert env["cpu_model"] == _env()["cpu_model"]
    assert env["hardware"] == "cpu-amd-epyc-7b13-2t" and env["run_id"] == "r1"


def test_default_run_id_is_utc_timestamp(tmp_path):
    w = ResultsWriter("ch1", _env(), root=tmp_path)
    assert len(w.run_id) == 15 and w.run_id[8] == "-" and w.run_id.replace("-", "").isdigit()


def test_resume_keeps_rows_and_reports_done_keys(tmp_path):
    fields = ["model", "size", "flag"]
    first = ResultsWriter("ch1", _env(), run_id="r1", root=tmp_path)
    first.add({"model": "vit", "size": 224, "flag": True, "median_ms": 1.0})
    first.add({"model": "vit", "size": 256, "flag": None, "status": "oom"})
    # the process dies here; a new one starts with the same run id
    again = ResultsWriter("ch1", _env(date="2025-01-02T00:00:00+00:00"), run_id="r1", root=tmp_path)
    assert again.resumed and len(again.rows) == 2
    done = again.done_keys(fields)
    assert done == {config_key({"model": "vit", "size": 224, "flag": True}, fields),
                    config_key({"model": "vit", "size": 256, "flag": None}, fields)}
    configs = [{"model": "vit", "size": s, "flag": f} for s, f in ((224, True), (256, None), (384, False))]
    calls = []
    for row in sweep(configs, lambda c: calls.append(c["size"]) or {"median_ms": 3.0}, done=done,
                     key_fields=fields, progress=False):
        again.add(row)
    assert calls == [384]
    frame = pd.read_csv(again.path)
    assert frame["size"].tolist() == [224, 256, 384]
    env = json.loads(again.env_path.read_text())
    assert env["date"] == "2025-01-01T00:00:00+00:00"  # the run's original record is kept
    assert len(env["resumed"]) == 1
    assert "resumed_changes" not in env  # only the date differed
    # a part resumed on another machine of the same hardware slug says what differed there
    third = ResultsWriter("ch1", _env(torch_version="9.9", date="2025-01-03T00:00:00+00:00"), run_id="r1",
                          root=tmp_path)
    third.add({"model": "vit", "size": 512, "flag": False, "median_ms": 4.0})
    env = json.loads(third.env_path.read_text())
    assert len(env["resumed"]) == 2 and env["torch_version"] != "9.9"
    [change] = env["resumed_changes"]
    assert change["torch_version"] == [_env()["torch_version"], "9.9"] and set(change) == {"date", "torch_version"}


def test_never_overwrites_other_run_or_hardware(tmp_path):
    a = ResultsWriter("ch1", _env(), run_id="r1", root=tmp_path)
    a.add({"x": 1})
    before = a.path.read_bytes()
    b = ResultsWriter("ch1", _env(), run_id="r2", root=tmp_path)
    b.add({"x": 2})
    c = ResultsWriter("ch1", _env(cpu="Intel(R) Xeon(R) CPU @ 2.20GHz"), run_id="r1", root=tmp_path)
    c.add({"x": 3})
    d = ResultsWriter("ch1", _env(threads=4), run_id="r1", root=tmp_path)
    d.add({"x": 4})
    assert len({a.path, b.path, c.path, d.path}) == 4
    assert a.path.read_bytes() == before
    assert len(list((tmp_path / "ch1").glob("*.csv"))) == 4


def test_read_merges_hardware_and_latest_only(tmp_path):
    old = ResultsWriter("ch2", _env(date="2025-01-01T00:00:00+00:00"), run_id="20250101-000000", root=tmp_path)
    old.extend([{"model": "a", "median_ms": 5.0}, {"model": "b", "median_ms": 6.0}])
    new = ResultsWriter("ch2", _env(date="2025-02-01T00:00:00+00:00"), run_id="20250201-000000", root=tmp_path)
    new.add({"model": "a", "median_ms": 4.0})
    other = ResultsWriter("ch2", _env(cpu="Intel Xeon", threads=8), run_id="20240101-000000", root=tmp_path)
    other.add({"model": "a", "median_ms": 9.0, "extra": "x"})

    frame = read_results("ch2", roots=[tmp_path])
    assert len(frame) == 4
    assert set(frame["hardware"]) == {"cpu-amd-epyc-7b13-2t", "cpu-intel-xeon-8t"}
    assert set(frame["run_id"]) == {"20250101-000000", "20250201-000000", "20240101-000000"}
    assert "extra" in frame.columns

    latest = read_results("ch2", roots=[tmp_path], latest_only=True)
    assert sorted(zip(latest["hardware"], latest["run_id"], latest["median_ms"])) == [
        ("cpu-amd-epyc-7b13-2t", "20250201-000000", 4.0), ("cpu-intel-xeon-8t", "20240101-000000", 9.0)]
    # a later setup check (smoke preset) does not hide the real run; alone, it is shown
    smoke = ResultsWriter("ch2", _env(date="2025-03-01T00:00:00+00:00"), run_id="gpu-smoke", root=tmp_path)
    smoke.add({"model": "a", "median_ms": 1.0})
    lonely = ResultsWriter("ch2", _env(cpu="Other", threads=4), run_id="smoke", root=tmp_path)
    lonely.add({"model": "a", "median_ms": 2.0})
    latest = read_results("ch2", roots=[tmp_path], latest_only=True).set_index("hardware").run_id
    assert latest["cpu-amd-epyc-7b13-2t"] == "20250201-000000" and latest["cpu-other-4t"] == "smoke"


def test_read_gives_back_the_floats_written(tmp_path):
    # pandas < 3.1's default float parser is one ulp off for about a fifth of such values
    rng = random.Random(0)
    values = [rng.uniform(1, 2000) for _ in range(50)]
    w = ResultsWriter("ch4", _env(), run_id="r1", root=tmp_path)
    w.extend([{"median_ms": v, "ms_per_image": v / 2} for v in values])
    frame = read_results("ch4", roots=[tmp_path])
    assert frame.median_ms.tolist() == values and (frame.ms_per_image == frame.median_ms / 2).all()


def test_read_empty_chapter(tmp_path):
    frame = read_results("nothing", roots=[tmp_path])
    assert frame.empty and {"hardware", "run_id"} <= set(frame.columns)


def test_read_ignores_foreign_files(tmp_path):
    w = ResultsWriter("ch3", _env(), run_id="r1", root=tmp_path)
    w.add({"x": 1})
    (tmp_path / "ch3" / "notes.csv").write_text("a,b\n1,2\n")
    (tmp_path / "ch3" / ".cpu-x__r9.csv.abc.tmp").write_text("half")
    assert [r["run_id"] for r in list_runs("ch3", roots=[tmp_path])] == ["r1"]


def test_load_env(tmp_path):
    w = ResultsWriter("ch4", _env(), run_id="r1", root=tmp_path)
    w.add({"x": 1})
    env = load_env("ch4", w.hardware, "r1", roots=[tmp_path])
    assert env["date"] == _env()["date"]
    with pytest.raises(FileNotFoundError, match="stored runs: cpu-amd-epyc-7b13-2t/r1"):
        load_env("ch4", w.hardware, "r2", roots=[tmp_path])


@pytest.mark.parametrize("chapter", ["", "../up", "a/b", "has space", "UPPER", ".hidden", "x" * 65, "a.b"])
def test_bad_chapter_name_raises(tmp_path, chapter):
    with pytest.raises(ValueError, match="not filesystem-safe"):
        ResultsWriter(chapter, _env(), root=tmp_path)
    with pytest.raises(ValueError, match="not filesystem-safe"):
        read_results(chapter, roots=[tmp_path])


@pytest.mark.parametrize("run_id", ["../x", "a b", "-lead", "a/b"])
def test_bad_run_id_raises(tmp_path, run_id):
    with pytest.raises(ValueError, match="run id"):
        ResultsWriter("ch1", _env(), run_id=run_id, root=tmp_path)


def test_default_root_finds_repo_data(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "notebooks" / "deep").mkdir(parents=True)
    (repo / "pyproject.toml").write_text('[project]\nname = "vitspeed"\n')
    other = tmp_path / "other"
    other.mkdir()
    (other / "pyproject.toml").write_text('[project]\nname = "something-else"\n')
    monkeypatch.chdir(repo / "notebooks" / "deep")
    assert default_root() == (repo / "data").resolve()
    monkeypatch.chdir(other)
    assert default_root() == (other / "data").resolve()


def _in_repo(tmp_path, monkeypatch) -> Path:
    """A vitspeed repository root under tmp_path, made the working directory."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pyproject.toml").write_text('[project]\nname = "vitspeed"\n')
    monkeypatch.chdir(repo)
    return repo


def test_env_var_overrides_writing_and_is_read(tmp_path, monkeypatch):
    repo = _in_repo(tmp_path, monkeypatch)
    in_repo = ResultsWriter("ch5", _env(), run_id="r1")
    in_repo.add({"x": 1})
    assert in_repo.path.parent == (repo / "data" / "ch5").resolve()

    scratch = tmp_path / "scratch"
    monkeypatch.setenv(ENV_VAR, str(scratch))
    assert write_root() == scratch
    elsewhere = ResultsWriter("ch5", _env(threads=4), run_id="r2")
    elsewhere.add({"x": 2})
    assert elsewhere.path.parent == scratch / "ch5"
    frame = read_results("ch5")
    assert sorted(frame["x"]) == [1, 2]


def test_a_run_resumed_under_the_override_is_read_from_there(tmp_path, monkeypatch):
    # a GPU sweep in parts: part 1 is in the repository's data/, part 2 resumes it under the override
    _in_repo(tmp_path, monkeypatch)
    part1 = ResultsWriter("ch6", _env(), run_id="gpu")
    part1.add({"x": 1})
    scratch = tmp_path / "out"
    (scratch / "ch6").mkdir(parents=True)
    for f in part1.path.parent.iterdir():
        (scratch / "ch6" / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv(ENV_VAR, str(scratch))
    part2 = ResultsWriter("ch6", _env(), run_id="gpu")
    part2.add({"x": 2})
    with pytest.warns(UserWarning, match="several roots"):
        frame = read_results("ch6")
    assert sorted(frame["x"]) == [1, 2]  # the resumed copy, not the stale part in data/


def test_config_key_matches_csv_text(tmp_path):
    fields = ["i", "f", "b", "n", "s"]
    config = {"i": 3, "f": 0.1, "b": False, "n": None, "s": "vit_small"}
    w = ResultsWriter("ch6", _env(), run_id="r1", root=tmp_path)
    w.add({**config, "median_ms": 1.0})
    reopened = ResultsWriter("ch6", _env(), run_id="r1", root=tmp_path)
    assert reopened.done_keys(fields) == {config_key(config, fields)}
