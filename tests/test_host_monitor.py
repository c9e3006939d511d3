"""vitspeed.host_monitor and `vitspeed monitor`: a time series of the host's probes."""
import json
import math
import time
import types

import pytest

from vitspeed import host_monitor
from vitspeed.cli import main
from vitspeed.results import read_csv

TINY = {"model": "deit_tiny_patch16_224", "core": ("softmax_explicit", 64, 2, 16)}
PROBES = ("copy_gbps", "gemm_gflops", "model_ms", "core_ms")


def test_monitor_ticks_until_the_time_is_up(monkeypatch):
    # a fake clock, 0.15 s per reading, so the count of ticks does not depend on the machine's speed
    readings = iter(0.15 * i for i in range(1000))
    clock = types.SimpleNamespace(monotonic=lambda: next(readings), perf_counter_ns=time.perf_counter_ns)
    monkeypatch.setattr(host_monitor, "time", clock)
    rows = host_monitor.monitor(0.5, threads=1, **TINY)
    # t0 = 0; ticks start at 0.15, 0.45 (checks at 0.30, 0.60): the check at 0.60 ends the series
    assert [r["tick"] for r in rows] == [0, 1]
    assert [r["elapsed_s"] for r in rows] == pytest.approx([0.15, 0.45])
    for r in rows:
        assert r["threads"] == 1
        for probe in PROBES:
            assert math.isfinite(r[probe]) and r[probe] > 0, (probe, r[probe])
        assert {"steal_pct", "cpu_pressure_pct"} <= set(r)
    # an explicit 64-token core is far cheaper than DeiT-T's forward
    assert sorted(r["core_ms"] for r in rows)[len(rows) // 2] < sorted(r["model_ms"] for r in rows)[len(rows) // 2]


def test_monitor_takes_at_least_one_tick_and_refuses_no_time():
    assert len(host_monitor.monitor(1e-9, threads=1, **TINY)) == 1
    for bad in (0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="seconds must be a finite number > 0"):
            host_monitor.monitor(bad)


def test_saved_series_names_its_probes_and_refuses_a_used_run_id(tmp_path):
    path = host_monitor.save_monitor(0.3, threads=1, run_id="20260101-000000", root=tmp_path, **TINY)
    assert path.parent.name == "host_monitor" and path.name.endswith("__20260101-000000.csv")
    rows = read_csv(path)
    assert len(rows) >= 1 and (rows.model == "deit_tiny_patch16_224").all()
    assert (rows.core == "softmax_explicit").all() and (rows.core_tokens == 64).all()
    env = json.loads(path.with_suffix(".env.json").read_text())
    assert env["profiler"] == "host monitor" and env["cpu_allocator"] == "kept heap"
    with pytest.raises(ValueError, match="exists already"):
        host_monitor.save_monitor(0.3, threads=1, run_id="20260101-000000", root=tmp_path, **TINY)


@pytest.mark.parametrize("argv, message", [
    (["monitor", "--seconds", "0"], "--seconds must be a finite number > 0"),
    (["monitor", "--seconds", "inf"], "--seconds must be a finite number > 0"),
    (["monitor", "--seconds", "1", "--threads", "0"], "--threads must be at least 1"),
])
def test_cli_refuses_bad_input_with_status_2_and_writes_nothing(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
