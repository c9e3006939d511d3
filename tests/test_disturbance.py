"""vitspeed.disturbance: steal and CPU pressure between two readings of the system's counters."""
import os

from vitspeed.disturbance import Counters, disturbance_between, read_counters


def _files(tmp_path, steal_ticks, pressure_us):
    stat = tmp_path / "stat"
    stat.write_text(f"cpu  100 0 50 1000 5 0 2 {steal_ticks} 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    pressure = tmp_path / "pressure"
    pressure.write_text(f"some avg10=0.00 avg60=0.00 avg300=0.00 total={pressure_us}\n"
                        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    return stat, pressure


def test_counters_are_read_from_proc_stat_and_pressure(tmp_path):
    stat, pressure = _files(tmp_path, steal_ticks=250, pressure_us=3_000_000)
    c = read_counters(stat, pressure)
    assert c.steal_s == 250 / os.sysconf("SC_CLK_TCK") and c.pressure_s == 3.0


def test_missing_counters_read_as_none_and_give_none(tmp_path):
    c = read_counters(tmp_path / "absent", tmp_path / "absent")
    assert c.steal_s is None and c.pressure_s is None
    assert disturbance_between(c, Counters(c.wall_s + 1, None, None)) == {"steal_pct": None, "cpu_pressure_pct": None}


def test_disturbance_is_a_share_of_the_interval():
    before = Counters(wall_s=10.0, steal_s=1.0, pressure_s=5.0)
    after = Counters(wall_s=20.0, steal_s=2.0, pressure_s=7.5)
    d = disturbance_between(before, after, cpus=2)
    assert d == {"steal_pct": 5.0, "cpu_pressure_pct": 25.0}  # 1 s of 2 x 10 s; 2.5 s of 10 s
    assert disturbance_between(after, after) == {"steal_pct": None, "cpu_pressure_pct": None}


def test_sweep_rows_record_the_disturbance(tmp_path, monkeypatch):
    from vitspeed.studies.compare import run_sweep

    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    rows = run_sweep("scaling", [{"level": "x", "n": 1}, {"level": "x", "n": 2}],
                     lambda cfg: [{"level": cfg["level"], "n": cfg["n"], "median_ms": 1.0}], key_fields=("n",),
                     run_id="20260101-000000")
    assert {"steal_pct", "cpu_pressure_pct"} <= set(rows.columns) and len(rows) == 2


def test_a_sweep_warns_about_a_disturbed_config(tmp_path, monkeypatch):
    import pytest

    from vitspeed.studies import compare

    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(compare, "disturbance_between",
                        lambda before, after: {"steal_pct": 0.0, "cpu_pressure_pct": 42.0})
    with pytest.warns(RuntimeWarning, match=r"'tokens': 64}.*busy \(cpu_pressure_pct 42.0\)"):
        rows = compare.run_sweep("scaling", [{"level": "x", "n": 1}],
                                 lambda cfg: [{"level": cfg["level"], "n": cfg["n"], "tokens": 64, "median_ms": 1.0}],
                                 key_fields=("n",), run_id="20260101-000001")
    assert rows.cpu_pressure_pct.iloc[0] == 42.0
