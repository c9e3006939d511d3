"""vitspeed.studies.wording: how a ratio is said in the chapters' prose."""
import math

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
    with pytest.raises(ValueError):
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
