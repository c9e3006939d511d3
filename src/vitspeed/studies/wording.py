"""How the chapters say a measured ratio in words: the way round that is at least 1, a word, whether the
difference exceeds the spread of the two medians (round by round where the two were timed in the same
rounds), and a number to a few significant digits."""
from __future__ import annotations

import math
from typing import Any

__all__ = ["SOFTMAX_FORM_NAMES", "measured_elsewhere", "times", "word", "noise", "paired_parts", "paired_noise", "rows_noise", "frame_noise",
           "beyond_spread", "verdict", "said", "sig", "joined", "listed", "tied", "tie_note"]


#: The two softmax forms (registry labels) as the prose names them.
SOFTMAX_FORM_NAMES = {"softmax": "fused SDPA", "softmax_explicit": "the explicit form"}


def times(ratio: float) -> float:
    """``ratio`` said the way round that is at least 1 ("2 times slower" rather than "0.5 times"),
    to 3 significant digits (1.18, 39.6; an int from 100 on, 2960 rather than 2960.0), or to 4
    decimals where 3 digits would round a difference away (1.0004, not "1.0 times slower"); nan stays nan."""
    if not math.isfinite(ratio):
        return math.nan
    r = ratio if ratio >= 1 else 1 / ratio
    value = float(f"{r:.3g}")
    if value == 1.0:
        return round(r, 4)
    return int(value) if value >= 100 else value


def word(ratio: float, above: str = "faster", below: str = "slower") -> str:
    """``above`` when ``ratio`` > 1, else ``below``; '-' for nan (a comparison that could not be made)."""
    if not math.isfinite(ratio):
        return "-"
    return above if ratio > 1 else below


def noise(median_a: float, iqr_a: float, median_b: float, iqr_b: float) -> float:
    """The smallest relative difference of two medians this study calls a difference: half the relative
    IQR of each (IQR / median), added. nan when either spread is unknown."""
    return 0.5 * (iqr_a / median_a + iqr_b / median_b)


def _field(row: Any, key: str) -> Any:
    try:
        return row[key]
    except (KeyError, IndexError, TypeError):
        return None


def paired_parts(a: Any, b: Any) -> tuple[float, float]:
    """The two parts of :func:`paired_noise` for result rows ``a`` and ``b`` timed in the same rounds: the
    spread of their round-by-round ratio (:func:`vitspeed.timing.paired_ratio`: half its IQR over its
    median) and the gap between the ratio of their medians and that ratio's median (``|(a/b) / median
    ratio - 1|``), both fractions; (nan, nan) for rows that cannot be paired (no samples, different or
    no ``timing_group``, fewer than three common rounds)."""
    from vitspeed.timing import paired_ratio, parse_samples

    group_a, group_b = _field(a, "timing_group"), _field(b, "timing_group")
    if not isinstance(group_a, str) or not group_a or group_a != group_b:
        return math.nan, math.nan
    ratio_med, spread = paired_ratio(parse_samples(_field(a, "samples_ms")), parse_samples(_field(b, "samples_ms")))
    if not math.isfinite(ratio_med):
        return math.nan, math.nan
    return spread, abs(float(a["median_ms"]) / float(b["median_ms"]) / ratio_med - 1)


def paired_noise(a: Any, b: Any) -> float:
    """The spread of the ratio of two result rows' medians (``a`` over ``b``) when both were timed in one
    interleaved measurement: the same ``timing_group`` and their per-round samples (``samples_ms``)
    kept. It is the spread of the round-by-round ratio, in which the host's slow drifts cancel,
    widened by how far the ratio of the medians lies from that ratio's median, so that the two
    estimates must agree on the side of 1 before a difference is called (:func:`paired_parts`, added).
    nan for rows that cannot be paired."""
    spread, gap = paired_parts(a, b)
    return spread + gap


def rows_noise(a: Any, b: Any) -> float:
    """The smallest relative difference of two result rows' medians (anything with ``median_ms`` and
    ``iqr_ms``: a Series, a dict) this study calls a difference: :func:`paired_noise` when the two were
    timed in the same rounds, else :func:`noise` of their medians and IQRs."""
    paired = paired_noise(a, b)
    return paired if math.isfinite(paired) else noise(a["median_ms"], a["iqr_ms"], b["median_ms"], b["iqr_ms"])


def frame_noise(df: Any, prefix: str = "reference_") -> list[float]:
    """:func:`rows_noise` of each row of ``df`` against the reference its ``prefix``-ed columns describe
    (``reference_ms``, ``reference_iqr_ms`` and, where kept, ``reference_samples_ms`` and
    ``reference_timing_group``), in row order."""
    out = []
    for _, row in df.iterrows():
        ref = {"median_ms": row[f"{prefix}ms"], "iqr_ms": row[f"{prefix}iqr_ms"],
               "samples_ms": _field(row, f"{prefix}samples_ms"), "timing_group": _field(row, f"{prefix}timing_group")}
        out.append(rows_noise(row, ref))
    return out


def beyond_spread(ratio: float, rel_noise: float) -> bool:
    """True when the ratio of two medians differs from 1 by more than ``rel_noise`` (see :func:`noise`);
    False for a nan ratio or an unknown spread, which cannot show a difference."""
    return bool(math.isfinite(ratio) and math.isfinite(rel_noise) and abs(ratio - 1) > rel_noise)


def verdict(ratio: float, rel_noise: float, above: str = "slower", below: str = "faster") -> str:
    """``above``/``below`` for a ratio beyond the spread on that side of 1, "no different within the
    spread" inside it, "not measured" for a nan ratio."""
    if not math.isfinite(ratio):
        return "not measured"
    if not beyond_spread(ratio, rel_noise):
        return "no different within the spread"
    return above if ratio > 1 else below


def said(ratio: float, rel_noise: float, above: str = "faster", below: str = "slower") -> str:
    """A ratio of medians in words, with the caveat when it is inside the two medians' spread:
    "1.25 times faster", or "1.02 times faster by the medians, within their spread"."""
    text = f"{times(ratio)} times {word(ratio, above, below)}"
    if not math.isfinite(ratio):
        return "not measured"
    return text if beyond_spread(ratio, rel_noise) else f"{text} by the medians, within their spread"


def sig(value: float, digits: int = 3) -> str:
    """``value`` rounded to ``digits`` significant digits, written without a spurious ".0" and with
    thousands separators: 921.2 -> "921", 29590 -> "29,600", 0.003951 -> "0.00395"; nan -> "-"."""
    if not math.isfinite(value):
        return "-"
    rounded = float(f"{value:.{digits}g}")
    if abs(rounded) >= 10 ** (digits - 1):
        return f"{rounded:,.0f}"
    return f"{rounded:.{digits}g}"


def joined(parts: list[str]) -> str:
    """Items as prose: "a", "a and b", "a, b and c"; "" for none."""
    if not parts:
        return ""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def listed(names: list[str], settings: list[str], values: list[str] | None = None,
           together: str = "both") -> str:
    """Who came first in each of several settings, said once when it is the same everywhere.

    (["a", "a"], ["batch 1", "batch 8"]) -> "a at both"; (["a", "b"], ...) -> "a at batch 1 and b at
    batch 8". With ``values`` (already worded): "a (1.96 times at batch 1, 1.35 at batch 8)" or
    "a (1.96 times) at batch 1 and b (1.35) at batch 8". ``together`` names all the settings at once.
    """
    if not names or len(names) != len(settings) or (values is not None and len(values) != len(names)):
        raise ValueError("listed() needs one name (and value) per setting, and at least one")

    if len(set(names)) == 1:
        if values is not None:
            return f"{names[0]} (" + ", ".join(f"{v} at {s}" for v, s in zip(values, settings)) + ")"
        return f"{names[0]} at {settings[0] if len(names) == 1 else together}"
    if values is not None:
        return joined([f"{n} ({v}) at {s}" for n, v, s in zip(names, values, settings)])
    return joined([f"{n} at {s}" for n, s in zip(names, settings)])


def tied(rows: Any, best: str) -> list[str]:
    """The names (``rows``' index; each row with ``median_ms`` and ``iqr_ms``) other than ``best`` whose
    median is no different from ``best``'s within the two medians' spread, in ``rows``' order."""
    ref = rows.loc[best]
    return [str(name) for name in rows.index if name != best
            and not beyond_spread(float(rows.loc[name, "median_ms"] / ref["median_ms"]), rows_noise(rows.loc[name], ref))]


def tie_note(names: list[str]) -> str:
    """" (a, b within the spread of it)" after the name of a fastest, or "" when nothing ties with it."""
    return f" ({', '.join(names)} within the spread of it)" if names else ""


def measured_elsewhere(parts: list[str], what: str = "") -> str:
    """The chapters' sentence on hardware other than the narrated one: ``"Measured elsewhere: a; b."``
    (``what``, when given, in brackets after "elsewhere"), or "" when ``parts`` is empty."""
    if not parts:
        return ""
    return f"Measured elsewhere{f' ({what})' if what else ''}: " + "; ".join(parts) + "."
