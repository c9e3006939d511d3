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
    assert {"steal_pct", "cpu_pressure_pct", "copy_gbps"} <= set(rows.columns) and len(rows) == 2
    assert (rows.copy_gbps > 0).all()


def test_a_sweep_warns_about_a_disturbed_config(tmp_path, monkeypatch):
    import pytest

    from vitspeed.studies import compare

    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(compare, "disturbance_between",
                        lambda before, after: {"steal_pct": 0.0, "cpu_pressure_pct": 42.0})
    monkeypatch.setattr(compare, "CopyProbe", lambda: (lambda: 40.0))  # a steady memory bus
    with pytest.warns(RuntimeWarning, match=r"'tokens': 64}.*busy or changed \(cpu_pressure_pct 42.0\)"):
        rows = compare.run_sweep("scaling", [{"level": "x", "n": 1}],
                                 lambda cfg: [{"level": cfg["level"], "n": cfg["n"], "tokens": 64, "median_ms": 1.0}],
                                 key_fields=("n",), run_id="20260101-000001")
    assert rows.cpu_pressure_pct.iloc[0] == 42.0


def test_copy_probe_reads_a_plausible_bandwidth_and_keeps_its_buffers():
    import math

    import pytest

    from vitspeed.disturbance import CopyProbe

    probe = CopyProbe(nbytes=8 * 2**20 + 3, repeats=3)
    assert probe.nbytes == 8 * 2**20  # whole float32 elements
    first = probe()
    buf = probe._src
    second = probe()
    assert probe._src is buf  # allocated once: later readings take no page faults
    for gbps in (first, second):
        assert math.isfinite(gbps) and 0.05 < gbps < 5000  # any machine: between 50 MB/s and 5 TB/s
    probe.close()
    assert probe._src is None
    with pytest.raises(ValueError, match="repeats >= 1"):
        CopyProbe(repeats=0)


def test_copy_probe_counts_bytes_read_and_written(monkeypatch):
    from vitspeed import disturbance

    ticks = iter(range(0, 10**9, 10**6))  # every clock reading 1 ms after the previous one
    monkeypatch.setattr(disturbance.time, "perf_counter_ns", lambda: next(ticks))
    probe = disturbance.CopyProbe(nbytes=4 * 2**20, repeats=1)
    assert probe() == 2 * 4 * 2**20 / 1e6  # 8 MiB moved in 1 ms, in GB/s


def test_sweep_rows_record_the_copy_bandwidth_on_the_cpu(tmp_path, monkeypatch):
    from vitspeed.studies import compare

    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    readings = iter([40.0, 39.0, 41.04, 20.0])

    class FakeProbe:
        def __call__(self):
            return next(readings)

    monkeypatch.setattr(compare, "CopyProbe", FakeProbe)
    import pytest
    with pytest.warns(RuntimeWarning, match=r"'tokens': 3}.*busy or changed \(copy_gbps 20.0 against a run median of 39.5"):
        rows = compare.run_sweep("scaling", [{"level": "x", "n": n} for n in (1, 2, 3)],
                                 lambda cfg: [{"level": cfg["level"], "n": cfg["n"], "tokens": cfg["n"],
                                               "median_ms": 1.0}],
                                 key_fields=("n",), run_id="20260101-000002")
    # each config: the lower of the readings before and after it
    assert rows.sort_values("n").copy_gbps.tolist() == [39.0, 39.0, 20.0]


def test_a_sweep_with_steady_copy_bandwidth_does_not_warn(tmp_path, monkeypatch):
    import warnings

    from vitspeed.studies import compare

    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(compare, "CopyProbe", lambda: (lambda: 40.0))
    monkeypatch.setattr(compare, "disturbance_between",
                        lambda before, after: {"steal_pct": 0.0, "cpu_pressure_pct": 0.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        rows = compare.run_sweep("scaling", [{"level": "x", "n": 1}, {"level": "x", "n": 2}],
                                 lambda cfg: [{"level": cfg["level"], "n": cfg["n"], "median_ms": 1.0}],
                                 key_fields=("n",), run_id="20260101-000003")
    assert rows.copy_gbps.tolist() == [40.0, 40.0]


def test_a_sweep_warns_when_the_copy_bandwidth_jumps_up(tmp_path, monkeypatch):
    """The hypervisor moving the virtual CPUs can raise the copy bandwidth while compute slows."""
    import pytest

    from vitspeed.studies import compare

    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    readings = iter([40.0, 40.0, 40.0, 70.0, 70.0])

    class FakeProbe:
        def __call__(self):
            return next(readings)

    monkeypatch.setattr(compare, "CopyProbe", FakeProbe)
    monkeypatch.setattr(compare, "disturbance_between",
                        lambda before, after: {"steal_pct": 0.0, "cpu_pressure_pct": 0.0})
    with pytest.warns(RuntimeWarning, match=r"'tokens': 4}.*copy_gbps 70.0 against a run median of 40.0") as rec:
        rows = compare.run_sweep("scaling", [{"level": "x", "n": n} for n in (1, 2, 3, 4)],
                                 lambda cfg: [{"level": cfg["level"], "n": cfg["n"], "tokens": cfg["n"],
                                               "median_ms": 1.0}],
                                 key_fields=("n",), run_id="20260101-000004")
    assert len([w for w in rec if "copy_gbps" in str(w.message)]) == 1  # only the group after the jump
    assert rows.sort_values("n").copy_gbps.tolist() == [40.0, 40.0, 40.0, 70.0]


def test_disturbance_over_several_windows_weighs_them_by_their_time():
    from vitspeed.disturbance import disturbance_over

    quiet = (Counters(0.0, 0.0, 0.0), Counters(9.0, 0.0, 0.0))  # 9 s, nothing waited
    busy = (Counters(50.0, 1.0, 1.0), Counters(51.0, 1.2, 1.5))  # 1 s, half of it waited
    assert disturbance_over([quiet, busy], cpus=2) == {"steal_pct": 1.0, "cpu_pressure_pct": 5.0}
    assert disturbance_over([busy], cpus=2) == disturbance_between(*busy, cpus=2) == {"steal_pct": 10.0,
                                                                                      "cpu_pressure_pct": 50.0}
    assert disturbance_over([]) == {"steal_pct": None, "cpu_pressure_pct": None}
    no_steal = (Counters(0.0, None, 0.0), Counters(1.0, None, 0.1))
    assert disturbance_over([quiet, no_steal], cpus=2) == {"steal_pct": None, "cpu_pressure_pct": 1.0}


def test_measure_records_its_timed_rounds_as_one_window():
    from vitspeed.disturbance import take_timed_windows
    from vitspeed.timing import measure

    take_timed_windows()
    measure({"a": lambda: sum(range(100)), "b": lambda: sum(range(200))}, warmup=1, repeats=3)
    windows = take_timed_windows()
    assert len(windows) == 1
    before, after = windows[0]
    assert after.wall_s > before.wall_s
    assert take_timed_windows() == []  # taken once


def test_a_sweep_counts_steal_and_pressure_over_the_timed_rounds_only(tmp_path, monkeypatch):
    import pytest

    import vitspeed.disturbance as D
    from vitspeed.studies import compare
    from vitspeed.timing import measure

    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(compare, "CopyProbe", lambda: (lambda: 40.0))
    # a fake machine: its clock moves 1 ms per timed call; pressure accrues only while a group is set up
    clock = {"t": 0.0, "waited": 0.0}
    fake = lambda: Counters(clock["t"], 0.0, clock["waited"])  # noqa: E731
    monkeypatch.setattr(D, "read_counters", fake)
    monkeypatch.setattr(compare, "read_counters", fake)

    def set_up():  # 10 s of building a model, half of it with a task waiting for a CPU
        clock["t"] += 10.0
        clock["waited"] += 5.0

    def timed_group(cfg):
        set_up()
        measure({"x": lambda: clock.__setitem__("t", clock["t"] + 1e-3)}, warmup=0, repeats=3)
        return [{"n": cfg["n"], "median_ms": 1.0}]

    def untimed_group(cfg):
        set_up()
        return [{"n": cfg["n"], "median_ms": 1.0}]

    rows = compare.run_sweep("scaling", [{"n": 1}], timed_group, key_fields=("n",), run_id="20260101-000002")
    assert rows.cpu_pressure_pct.iloc[0] == 0.0  # the set-up's 50% is outside the timed rounds
    # a group that times nothing through measure is judged over the whole config
    with pytest.warns(RuntimeWarning, match=r"busy or changed \(cpu_pressure_pct 50.0\)"):
        rows = compare.run_sweep("scaling", [{"n": 2}], untimed_group, key_fields=("n",), run_id="20260101-000003")
    assert rows.cpu_pressure_pct.iloc[0] == 50.0
