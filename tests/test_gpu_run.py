"""tools/gpu_run.sh, rehearsed on the CPU: time budget, resume from earlier parts, packed results."""
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_run.sh"


def _run(out: Path, *notebooks: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, "VITSPEED_PRESET": "smoke", "VITSPEED_ALLOW_CPU": "1",
            "VITSPEED_STATE_DIR": str(out.parent / "state"), **env}
    return subprocess.run(["bash", str(SCRIPT), str(out), *notebooks], env=full, capture_output=True, text=True,
                          timeout=600)


def test_without_cuda_it_refuses_unless_rehearsing(tmp_path):
    res = _run(tmp_path / "out", "01_complexity", VITSPEED_ALLOW_CPU="0", CUDA_VISIBLE_DEVICES="")
    assert res.returncode != 0 and "no CUDA device visible" in res.stderr


def test_budget_reached_exits_3_with_earlier_parts_packed(tmp_path):
    earlier = tmp_path / "earlier" / "time_share"
    earlier.mkdir(parents=True)
    (earlier / "somehw__smoke.csv").write_text("run_id,model\nsmoke,deit\n")
    (earlier / "otherhw__other-run.csv").write_text("run_id\nother-run\n")  # another run id: not carried
    out = tmp_path / "out"
    res = _run(out, "02_time_share", VITSPEED_TIME_BUDGET="0", VITSPEED_RESUME_FROM=str(tmp_path / "earlier"))
    assert res.returncode == 3, res.stderr
    assert "time budget reached" in res.stdout
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert "data/time_share/somehw__smoke.csv" in names
    assert not any("other-run" in n for n in names)
    with tarfile.open(out / "executed.tar.gz") as tar:
        assert "executed/02_time_share.ipynb" not in tar.getnames()
    # OUTDIR holds the two archives and nothing else (a transfer may cap the number of files)
    assert sorted(p.name for p in out.iterdir()) == ["executed.tar.gz", "results.tar.gz"]
    # kept on the machine for the next call, which resumes from it even without VITSPEED_RESUME_FROM
    assert (tmp_path / "state" / "time_share" / "somehw__smoke.csv").is_file()
    res = _run(tmp_path / "out2", "02_time_share", VITSPEED_TIME_BUDGET="0")
    with tarfile.open(tmp_path / "out2" / "results.tar.gz") as tar:
        assert "data/time_share/somehw__smoke.csv" in tar.getnames()
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["executed.tar.gz", "results.tar.gz"]


def test_complete_run_writes_results_and_executed_notebook(tmp_path):
    import time

    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "VITSPEED_PRESET": "smoke", "VITSPEED_ALLOW_CPU": "1",
           "VITSPEED_STATE_DIR": str(tmp_path / "state"), "VITSPEED_PACK_EVERY": "1"}
    proc = subprocess.Popen(["bash", str(SCRIPT), str(out), "01_complexity"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    packed_while_running = False
    while proc.poll() is None:  # the archive is refreshed while the notebook runs, not only at the end
        packed_while_running |= (out / "results.tar.gz").is_file()
        time.sleep(0.2)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-2000:]
    assert packed_while_running
    assert sorted(p.name for p in out.iterdir()) == ["executed.tar.gz", "results.tar.gz"]
    with tarfile.open(out / "executed.tar.gz") as tar:
        assert "executed/01_complexity.ipynb" in tar.getnames()
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.startswith("data/complexity/") and n.endswith(".csv") for n in names)
    assert any(n.startswith("data/complexity/") and n.endswith(".env.json") for n in names)
    # the state folder the next call on this machine resumes from holds the same results
    assert list((tmp_path / "state" / "complexity").glob("*.csv"))
