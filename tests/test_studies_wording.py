"""vitspeed.studies.wording: how a ratio is said in the chapters' prose."""
import math

import pytest

from vitspeed.studies.wording import times, word


def test_times_says_a_ratio_the_way_round_that_is_at_least_one():
    assert times(2.0) == 2.0 and times(0.5) == 2.0 and times(1.0) == 1.0
    assert times(1 / 3) == 3.0 and times(1.2345) == 1.23
    assert times(39.584) == 39.6 and times(1 / 25.16) == 25.2 and times(2958.4) == 2960 and isinstance(times(2958.4), int)
    assert math.isnan(times(float("nan"))) and math.isnan(times(float("inf")))
    # a difference that three digits would round away keeps four decimals
    assert times(1.0004) == 1.0004 and times(1 / 1.003) == 1.003 and times(1.0) == 1.0


def test_word_names_the_side_of_one_and_marks_missing_comparisons():
    assert word(1.5) == "faster" and word(0.5) == "slower" and word(1.0) == "slower"
    assert word(2.0, "more", "less") == "more" and word(0.9, "more", "less") == "less"
    assert word(float("nan")) == "-"


def test_noise_is_half_the_relative_iqrs_added_and_decides_the_verdict():
    from vitspeed.studies.wording import beyond_spread, noise, verdict

    n = noise(100.0, 4.0, 50.0, 1.0)
    assert n == 0.5 * (0.04 + 0.02)
    assert beyond_spread(1.05, n) and not beyond_spread(1.02, n) and beyond_spread(0.9, n)
    assert not beyond_spread(float("nan"), n) and not beyond_spread(2.0, float("nan"))
    assert verdict(1.05, n) == "slower" and verdict(0.9, n) == "faster"
    assert verdict(1.02, n) == "no different within the spread" and verdict(float("nan"), n) == "not measured"


def test_sig_rounds_to_significant_digits_without_spurious_decimals():
    from vitspeed.studies.wording import sig

    assert sig(921.2) == "921" and sig(29590.0) == "29,600" and sig(872.3) == "872"
    assert sig(14.32) == "14.3" and sig(0.003951) == "0.00395" and sig(0.5064) == "0.506"
    assert sig(100.0) == "100" and sig(1.0) == "1" and sig(float("nan")) == "-"


def test_listed_says_a_repeated_winner_once():
    import pytest

    from vitspeed.studies.wording import listed

    assert listed(["LeViT", "LeViT"], ["batch 1", "batch 8"]) == "LeViT at both"
    assert listed(["a", "b"], ["batch 1", "batch 8"]) == "a at batch 1 and b at batch 8"
    assert listed(["a", "b", "c"], ["x", "y", "z"]) == "a at x, b at y and c at z"
    assert listed(["a"], ["x"]) == "a at x"
    assert listed(["a", "a"], ["b1", "b8"], together="both batch sizes") == "a at both batch sizes"
    assert listed(["a", "a"], ["b1", "b8"], values=["2 times", "3"]) == "a (2 times at b1, 3 at b8)"
    assert listed(["a", "b"], ["b1", "b8"], values=["2 times", "3"]) == "a (2 times) at b1 and b (3) at b8"
    with pytest.raises(ValueError, match="one name"):
        listed(["a"], ["x", "y"])


def test_said_adds_the_caveat_only_inside_the_spread():
    from vitspeed.studies.wording import said

    assert said(1.25, 0.05) == "1.25 times faster"
    assert said(0.8, 0.05) == "1.25 times slower"
    assert said(1.02, 0.05) == "1.02 times faster by the medians, within their spread"
    assert said(float("nan"), 0.05) == "not measured"


def test_rows_noise_reads_two_rows():
    import pandas as pd

    from vitspeed.studies.wording import noise, rows_noise

    a, b = pd.Series({"median_ms": 100.0, "iqr_ms": 4.0}), {"median_ms": 50.0, "iqr_ms": 1.0}
    assert rows_noise(a, b) == noise(100.0, 4.0, 50.0, 1.0) == 0.5 * (0.04 + 0.02)


def test_rows_noise_pairs_rows_timed_in_the_same_rounds():
    import pandas as pd

    from vitspeed.studies.wording import beyond_spread, frame_noise, noise, paired_noise, paired_parts, rows_noise

    # a host that drifts from 10 to 14 ms and back while b stays 3% faster in every round
    drift = [10.0, 11.0, 12.0, 13.0, 14.0, 13.0, 12.0, 11.0]
    a_s, b_s = drift, [x / 1.03 for x in drift]
    text = lambda xs: " ".join(f"{x:.6g}" for x in xs)  # noqa: E731
    a = {"median_ms": 12.0, "iqr_ms": 2.0, "samples_ms": text(a_s), "timing_group": "g1"}
    b = {"median_ms": 12.0 / 1.03, "iqr_ms": 2.0 / 1.03, "samples_ms": text(b_s), "timing_group": "g1"}
    unpaired = noise(a["median_ms"], a["iqr_ms"], b["median_ms"], b["iqr_ms"])
    assert unpaired > 0.15  # the drift hides the 3% in each median's own spread
    assert paired_noise(a, b) == pytest.approx(0.0, abs=1e-5)  # every round says 1.03
    assert rows_noise(a, b) == paired_noise(a, b)
    assert beyond_spread(a["median_ms"] / b["median_ms"], rows_noise(a, b))
    assert not beyond_spread(a["median_ms"] / b["median_ms"], unpaired)

    # rows of different measurements (or without samples) are not paired: the unpaired rule
    other = {**b, "timing_group": "g2"}
    assert math.isnan(paired_noise(a, other)) and rows_noise(a, other) == unpaired
    bare = {k: b[k] for k in ("median_ms", "iqr_ms")}
    assert math.isnan(paired_noise(a, bare)) and rows_noise(a, bare) == unpaired
    assert math.isnan(paired_noise({**a, "timing_group": float("nan")}, {**b, "timing_group": float("nan")}))

    # the ratio of the medians must agree with the rounds: a gap between the two widens the spread
    odd = {**a, "median_ms": b["median_ms"] * 0.99}  # medians say a is faster, every round says slower
    assert paired_noise(odd, b) == pytest.approx(abs(0.99 / 1.03 - 1), rel=1e-3)
    assert paired_parts(odd, b) == pytest.approx((0.0, abs(0.99 / 1.03 - 1)), rel=1e-3, abs=1e-5)
    assert all(math.isnan(x) for x in paired_parts(a, other))
    assert not beyond_spread(odd["median_ms"] / b["median_ms"], paired_noise(odd, b))

    # frame_noise: each row against its reference_ columns
    frame = pd.DataFrame([{**a, "reference_ms": b["median_ms"], "reference_iqr_ms": b["iqr_ms"],
                           "reference_samples_ms": b["samples_ms"], "reference_timing_group": "g1"},
                          {**a, "reference_ms": b["median_ms"], "reference_iqr_ms": b["iqr_ms"],
                           "reference_samples_ms": b["samples_ms"], "reference_timing_group": "g2"}])
    assert frame_noise(frame) == pytest.approx([0.0, unpaired], abs=1e-5)
    old = frame.drop(columns=["samples_ms", "timing_group", "reference_samples_ms", "reference_timing_group"])
    assert frame_noise(old) == pytest.approx([unpaired, unpaired])


def test_tied_names_the_rows_within_the_spread_of_the_best():
    import pandas as pd

    from vitspeed.studies.wording import tie_note, tied

    rows = pd.DataFrame({"median_ms": [10.0, 10.3, 12.0], "iqr_ms": [1.0, 1.0, 0.1]}, index=["a", "b", "c"])
    assert tied(rows, "a") == ["b"]  # 3% apart against a 9.8% spread; c is 20% slower against 5.4%
    assert tie_note(tied(rows, "a")) == " (b within the spread of it)" and tie_note([]) == ""


def test_joined_lists_items_as_prose():
    from vitspeed.studies.wording import joined
    assert joined([]) == "" and joined(["a"]) == "a"
    assert joined(["a", "b"]) == "a and b" and joined(["a", "b", "c"]) == "a, b and c"


def test_measured_elsewhere_joins_the_parts_or_says_nothing():
    from vitspeed.studies.wording import measured_elsewhere

    assert measured_elsewhere(["on a, x", "on b, y"]) == "Measured elsewhere: on a, x; on b, y."
    assert measured_elsewhere(["on a: 1"], "ratios") == "Measured elsewhere (ratios): on a: 1."
    assert measured_elsewhere([]) == ""
