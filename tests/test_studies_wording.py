"""vitspeed.studies.wording: how a ratio is said in the chapters' prose."""
import math

from vitspeed.studies.wording import times, word


def test_times_says_a_ratio_the_way_round_that_is_at_least_one():
    assert times(2.0) == 2.0 and times(0.5) == 2.0 and times(1.0) == 1.0
    assert times(1 / 3) == 3.0 and times(1.2345) == 1.23
    assert math.isnan(times(float("nan"))) and math.isnan(times(float("inf")))


def test_word_names_the_side_of_one_and_marks_missing_comparisons():
    assert word(1.5) == "faster" and word(0.5) == "slower" and word(1.0) == "slower"
    assert word(2.0, "more", "less") == "more" and word(0.9, "more", "less") == "less"
    assert word(float("nan")) == "-"
