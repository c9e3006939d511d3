"""vitspeed.studies.host: spreads, correlations and the copy-bandwidth split of a host monitor series."""
import pandas as pd
import pytest

from vitspeed.studies import host


def _two_regimes():
    """Ten ticks on slow-copy, fast-compute cores, then ten on fast-copy, slow-compute ones."""
    rows = []
    for i in range(20):
        moved = i >= 10
        rows.append({"tick": i, "elapsed_s": 6.0 * i, "copy_gbps": (60.0 if moved else 40.0) + i % 2,
                     "gemm_gflops": 180.0 if moved else 195.0, "model_ms": (72.0 if moved else 60.0) + 0.1 * (i % 3),
                     "core_ms": 100.0 + (i % 4), "steal_pct": 0.0, "cpu_pressure_pct": 0.5 if i % 5 else 9.0})
    return pd.DataFrame(rows)


def test_steadiness_reports_spread_and_correlation_per_probe():
    t = host.steadiness(_two_regimes()).set_index("probe")
    assert list(t.index) == list(host.PROBES)
    assert (t.ticks == 20).all()
    assert t.loc["copy_gbps", "median"] == pytest.approx(50.5)
    # 10th and 90th percentiles fall inside the two regimes: 72.x / 60.x - 1
    assert t.loc["model_ms", "spread_pct"] == pytest.approx(100 * (72.0 / 60.0 - 1), abs=0.5)
    assert t.loc["model_ms", "r_copy"] > 0.95  # faster copies came with a slower model here
    assert t.loc["gemm_gflops", "r_model"] < -0.95
    assert t.loc["copy_gbps", "r_copy"] == pytest.approx(1.0)
    assert abs(t.loc["core_ms", "r_copy"]) < 0.5


def test_split_by_copy_compares_the_two_halves():
    s = host.split_by_copy(_two_regimes()).set_index("half")
    assert list(s.index) == ["high copy", "low copy"] and s.ticks.tolist() == [10, 10]
    assert s.loc["high copy", "model_ms"] == pytest.approx(72.1)
    assert s.loc["low copy", "model_ms"] == pytest.approx(60.1)


def test_steadiness_text_rounds_for_the_sentence():
    said = host.steadiness_text(_two_regimes())
    assert said["ticks"] == 20 and said["minutes"] == pytest.approx(1.9)
    assert (said["model_hi"], said["model_lo"]) == (72.1, 60.1)
    assert (said["copy_hi"], said["copy_lo"]) == (60.5, 40.5)
    assert (said["pressure_hi"], said["pressure_lo"], said["steal_hi"]) == (0.5, 0.5, 0.0)
    assert said["r_model_copy"] > 0.95 and said["model_ms_spread"] == pytest.approx(20.0, abs=0.5)


def test_steadiness_text_reads_the_correlation_and_the_counters():
    said = host.steadiness_text(_two_regimes())
    assert said["tick_s"] == 6.0
    assert said["reading"].startswith("Faster copies came with a slower DeiT-S")
    assert "(a reading:" in said["reading"]  # the interpretation is labelled as one
    assert said["counters"].startswith("Steal and CPU pressure, the two counters")
    # copy bandwidth and model time moving together the other way: a neighbour's traffic
    flipped = _two_regimes().assign(model_ms=lambda d: 132.0 - d.model_ms)
    assert host.steadiness_text(flipped)["reading"].startswith("Slower copies came with a slower DeiT-S")
    # pressure that differs between the halves: the counters sentence does not claim they missed it
    busy = _two_regimes().assign(cpu_pressure_pct=lambda d: [0.5] * 10 + [20.0] * 10)
    assert host.steadiness_text(busy)["counters"].startswith("The copy bandwidth every CPU row")


def test_a_missing_series_gives_placeholders_for_every_key():
    said = host.steadiness_text(_two_regimes().head(3))
    full = host.steadiness_text(_two_regimes())
    assert set(said) == set(full)
    assert said["reading"] == host.NO_SERIES and said["model_hi"] == "-" and said["counters"] == ""
