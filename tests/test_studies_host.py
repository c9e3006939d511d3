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


def test_copy_threshold_falls_in_the_gap_between_two_levels():
    # 3 ticks at about 65 GB/s, 17 at about 37: the median (37) lies inside the low level, the threshold between
    copy = pd.Series([65.0, 66.0, 64.0] + [36.0, 37.0, 38.0] * 5 + [37.0, 36.5])
    cut = host.copy_threshold(copy)
    assert 45 < cut < 56
    assert cut == pytest.approx((copy[copy > 50].mean() + copy[copy < 50].mean()) / 2)
    assert host.copy_threshold(pd.Series([40.0] * 5)) == 40.0  # one level: nothing above it


def test_split_by_copy_compares_the_two_states():
    states = host.copy_states(_two_regimes())
    assert (states == ["low copy"] * 10 + ["high copy"] * 10).all()
    s = host.split_by_copy(_two_regimes()).set_index("state")
    assert list(s.index) == ["high copy", "low copy"] and s.ticks.tolist() == [10, 10]
    assert s.share_pct.tolist() == [50.0, 50.0]
    assert s.loc["high copy", "model_ms"] == pytest.approx(72.1)
    assert s.loc["low copy", "model_ms"] == pytest.approx(60.1)


def test_steadiness_text_rounds_for_the_sentence():
    said = host.steadiness_text(_two_regimes())
    assert said["ticks"] == 20 and said["minutes"] == pytest.approx(1.9)
    assert (said["model_hi"], said["model_lo"]) == (72.1, 60.1)
    assert (said["copy_hi"], said["copy_lo"]) == (60.5, 40.5)
    assert (said["pressure_hi"], said["pressure_lo"], said["steal_hi"]) == (0.5, 0.5, 0.0)
    assert said["share_hi"] == 50.0 and 41 < said["threshold"] < 59
    assert said["between"] == 0.0  # 40-41 and 60-61 GB/s: no tick near the threshold of about 50
    assert said["r_model_copy"] > 0.95 and said["model_ms_spread"] == pytest.approx(20.0, abs=0.5)
    assert said["model_gap"] == 20.0 and said["model_clear"] == "beyond" and said["model_noise"] < 1


def test_steadiness_text_reads_the_correlation_and_the_counters():
    said = host.steadiness_text(_two_regimes())
    assert said["tick_s"] == 6.0
    assert said["reading"].startswith("Faster copies came with a slower DeiT-S")
    assert "a slower in-cache GEMM (180.0 against 195.0 GFLOP/s" in said["reading"]
    assert "(a reading:" in said["reading"]  # the interpretation is labelled as one
    assert said["counters"].startswith("Steal and CPU pressure, the two counters")
    # copy bandwidth and model time moving together the other way: a neighbour's traffic
    flipped = _two_regimes().assign(model_ms=lambda d: 132.0 - d.model_ms)
    assert host.steadiness_text(flipped)["reading"].startswith("Slower copies came with a slower DeiT-S")
    # pressure that differs between the states: the counters sentence does not claim they missed it
    busy = _two_regimes().assign(cpu_pressure_pct=lambda d: [0.5] * 10 + [20.0] * 10)
    assert host.steadiness_text(busy)["counters"].startswith("The copy bandwidth every CPU row")


def test_a_missing_series_gives_placeholders_for_every_key():
    said = host.steadiness_text(_two_regimes().head(3))
    full = host.steadiness_text(_two_regimes())
    assert set(said) == set(full)
    assert said["reading"] == host.NO_SERIES and said["model_hi"] == "-" and said["counters"] == ""


def test_every_series_gives_one_row_per_run_oldest_first():
    first = _two_regimes().assign(run_id="20261122-053848")
    # a later series in which DeiT-S does not follow the copy bandwidth, and a stub too short to read
    later = _two_regimes().assign(run_id="20261123-010000", model_ms=lambda d: 61.0 + 0.1 * (d.tick % 3))
    stub = _two_regimes().head(2).assign(run_id="20261124-000000")
    t = host.every_series(pd.concat([later, stub, first], ignore_index=True))
    assert t.run_id.tolist() == ["20261122-053848", "20261123-010000"]
    assert t.ticks.tolist() == [20, 20] and t.minutes.iloc[0] == pytest.approx(1.9)
    assert t.high_copy_pct.tolist() == [50.0, 50.0]
    assert (t.model_hi_ms.iloc[0], t.model_lo_ms.iloc[0]) == pytest.approx((72.1, 60.1))
    assert t.r_model_copy.iloc[0] > 0.95 and abs(t.r_model_copy.iloc[1]) < 0.5
    assert t.model_gap_pct.iloc[0] == pytest.approx(100 * (72.1 / 60.1 - 1))
    assert t.model_noise_pct.iloc[0] < 1 and abs(t.model_gap_pct.iloc[1]) < t.model_noise_pct.iloc[1]
    said = host.recurrence_text(t)
    assert said.startswith("In 1 of 2 series DeiT-S took longer in the high-copy state (beyond its spread in each)")
    assert "in 1 the two were within that spread" in said and "less" not in said
    assert host.spells_text(t) == "spells in which DeiT-S takes 72.1 instead of 60.1 ms"
    assert host.spells_text(t.iloc[1:]).startswith("no series on record shows")
    assert host.spells_text(t.iloc[:0]) == "no monitor series is on record for this machine"
    assert "spent 50% of a series in the high-copy state, where DeiT-S took 61.1 to 72.1 ms" in said
    # medians 66.1 (the two regimes) and 61.1 ms
    assert f"{100 * (t.model_ms.max() / t.model_ms.min() - 1):.1f}% apart (61.1 to 66.1 ms)" in said


def test_recurrence_text_with_one_or_no_series():
    one = host.every_series(_two_regimes().assign(run_id="20261122-053848"))
    assert host.recurrence_text(one).startswith("One series is on record")
    assert host.recurrence_text(host.every_series(_two_regimes().head(2).assign(run_id="x"))) == host.NO_SERIES


def test_state_gap_compares_the_medians_with_the_spread_in_each_state():
    gap = host.state_gap(_two_regimes())
    assert gap["gap_pct"] == pytest.approx(100 * (72.1 / 60.1 - 1)) and gap["clear"] == 1.0
    # within each state DeiT-S's IQR is under 0.2 ms of 60 and 72: half of each relative IQR, added
    assert 50 * 0.1 / 72.1 < gap["noise_pct"] < 50 * 0.2 / 60.1 + 50 * 0.2 / 72.1
    # a DeiT-S that spreads wider within each state than the gap between them: no clear difference
    wide = _two_regimes().assign(model_ms=lambda d: d.model_ms - 12.0 * (d.tick >= 10) + 8.0 * (d.tick % 2))
    assert host.state_gap(wide)["clear"] == 0.0
    assert host.steadiness_text(wide)["reading"].startswith("DeiT-S's time did not differ between the two states")
    assert host.steadiness_text(wide)["counters"].startswith("The copy bandwidth every CPU row")
