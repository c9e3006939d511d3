"""Reading the host monitor's series (``vitspeed monitor``, data/host_monitor): how steady the machine is.

Spreads are ``spread_pct`` = 100 x (90th / 10th percentile - 1), for rates and times alike;
correlations are Pearson's r over the ticks of one series.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from vitspeed.studies.wording import noise

__all__ = ["PROBES", "MIN_TICKS", "NO_SERIES", "steadiness", "copy_threshold", "copy_states", "split_by_copy",
           "state_gap", "steadiness_text", "every_series", "recurrence_text", "spells_text"]

#: probe column -> (what it measures, unit)
PROBES = {"copy_gbps": ("memory copy, 64 MiB", "GB/s"),
          "gemm_gflops": ("GEMM 384 x 384, in cache", "GFLOP/s"),
          "model_ms": ("DeiT-S forward, batch 1", "ms"),
          "core_ms": ("explicit softmax core, N = 3136", "ms")}


def steadiness(series: pd.DataFrame) -> pd.DataFrame:
    """One row per probe of one series (one hardware's run): ``probe``, ``measures``, ``unit``,
    ``ticks``, ``median``, ``p10``, ``p90``, ``spread_pct`` and ``r_copy`` / ``r_model``, its
    correlation with the copy bandwidth and with DeiT-S's time (1 for itself)."""
    rows = []
    for probe, (what, unit) in PROBES.items():
        x = series[probe].astype(float)
        p10, p50, p90 = x.quantile([0.1, 0.5, 0.9])
        rows.append({"probe": probe, "measures": what, "unit": unit, "ticks": int(x.notna().sum()),
                     "median": p50, "p10": p10, "p90": p90, "spread_pct": 100 * (p90 / p10 - 1),
                     "r_copy": x.corr(series["copy_gbps"].astype(float)),
                     "r_model": x.corr(series["model_ms"].astype(float))})
    return pd.DataFrame(rows)


def copy_threshold(copy: pd.Series) -> float:
    """The copy bandwidth (GB/s) that separates a series' two levels: the fixed point of "halfway between
    the mean above and the mean below", started at the median (two-means clustering in one dimension,
    Otsu's threshold for a bimodal histogram). On a host that switches between two states it falls in the
    gap between them, where the median falls inside whichever state the host spent more time in."""
    x = copy.astype(float).dropna().to_numpy()
    cut = float(pd.Series(x).median())
    for _ in range(100):
        above, below = x[x > cut], x[x <= cut]
        if len(above) == 0 or len(below) == 0:
            return cut
        nxt = float((above.mean() + below.mean()) / 2)
        if nxt == cut:
            break
        cut = nxt
    return cut


def copy_states(series: pd.DataFrame) -> pd.Series:
    """Each tick's state: "high copy" above :func:`copy_threshold`, else "low copy"."""
    cut = copy_threshold(series.copy_gbps)
    return pd.Series("low copy", index=series.index).where(series.copy_gbps <= cut, "high copy")


def split_by_copy(series: pd.DataFrame) -> pd.DataFrame:
    """The ticks split at :func:`copy_threshold`: per state (``state`` = "high copy" / "low copy") the
    number of ticks, their share of the series (``share_pct``) and the median of every probe and of
    ``steal_pct`` and ``cpu_pressure_pct`` (where the series has them)."""
    state = copy_states(series)
    cols = list(PROBES) + [c for c in ("steal_pct", "cpu_pressure_pct") if c in series]
    grouped = series.assign(state=state).groupby("state")
    out = grouped[cols].median()
    out.insert(0, "share_pct", 100 * grouped.size() / len(series))
    out.insert(0, "ticks", grouped.size())
    return out.reindex(["high copy", "low copy"]).reset_index()


def state_gap(series: pd.DataFrame, probe: str = "model_ms") -> dict[str, float]:
    """How much longer a probe took in the high-copy state than in the low-copy one (:func:`copy_states`):
    ``gap_pct`` = 100 x (median high / median low - 1), negative where it was faster; ``noise_pct``:
    the spread rule used throughout the book (:func:`vitspeed.studies.wording.noise`: half the probe's
    relative IQR within each state, added), in percent; ``clear``: 1.0 where ``|gap_pct|`` exceeds it,
    else 0.0. A state without ticks gives NaN for all three."""
    state = copy_states(series)
    high, low = series[probe][state == "high copy"].astype(float), series[probe][state == "low copy"].astype(float)
    if len(high) == 0 or len(low) == 0:
        return {"gap_pct": float("nan"), "noise_pct": float("nan"), "clear": float("nan")}

    def iqr(x: pd.Series) -> float:
        return float(x.quantile(0.75) - x.quantile(0.25))

    gap = 100.0 * (float(high.median()) / float(low.median()) - 1)
    spread = 100.0 * noise(float(high.median()), iqr(high), float(low.median()), iqr(low))
    return {"gap_pct": gap, "noise_pct": spread, "clear": float(abs(gap) > spread)}


#: fewer ticks than this are no series to read
MIN_TICKS = 4
NO_SERIES = "no host monitor series for this hardware in data/ (run `vitspeed monitor`)"


def _reading(m: dict[str, Any]) -> str:
    if m["model_clear"] and m["model_gap"] > 0:
        core_moved = (", a slightly faster memory-heavy core" if m["core_hi"] < m["core_lo"] else
                      ", a slower memory-heavy core" if m["core_hi"] > m["core_lo"] else "")
        gemm = m.get("gemm_hi", float("nan")), m.get("gemm_lo", float("nan"))
        gemm_moved = (f" and a slower in-cache GEMM ({gemm[0]} against {gemm[1]} GFLOP/s: less compute per "
                      "second, as on a core with a lower clock)" if gemm[0] < gemm[1] else "")
        return (f"Faster copies came with a slower DeiT-S{core_moved}{gemm_moved}. A neighbour's memory "
                "traffic would slow the copies instead; what fits is the hypervisor running our two virtual CPUs "
                "on other physical cores for spells at a time (a reading: nothing in the guest shows where it runs)")
    if m["model_clear"] and m["model_gap"] < 0:
        return "Slower copies came with a slower DeiT-S, as a neighbour's memory traffic would cause"
    return "DeiT-S's time did not differ between the two states beyond its spread within each"


def _counters(m: dict[str, Any]) -> str:
    seen = bool(m["model_clear"])
    same = ("steal_hi" in m and "pressure_hi" in m and abs(m["pressure_hi"] - m["pressure_lo"]) < 1
            and abs(m["steal_hi"] - m["steal_lo"]) < 1)
    if seen and same:
        return (f"Steal and CPU pressure, the two counters the chapters recorded until now, were the same in both "
                f"states (median {m['steal_hi']} and {m['steal_lo']}% steal, {m['pressure_hi']} and "
                f"{m['pressure_lo']}% pressure per tick) and miss this; the copy bandwidth every CPU row now "
                "records (copy_gbps, method page) shows it, which is why a sweep warns when a group's reading is "
                "far from its run's median, in either direction.")
    return ("The copy bandwidth every CPU row now records (copy_gbps, method page) is one more sign of a change, "
            "read beside steal and CPU pressure.")


def steadiness_text(series: pd.DataFrame) -> dict[str, Any]:
    """Numbers and sentences for the book on one series: ``ticks``, ``minutes`` covered, ``tick_s``
    (seconds per tick), the spread and median of every probe (``<probe>_spread``, percent, and
    ``<probe>_median``, 1 decimal), the copy bandwidth separating the two states (``threshold``,
    GB/s, :func:`copy_threshold`), the share of ticks within 10% of it (``between``, percent: few
    where the bandwidth has two levels) and ``levels``, a sentence saying which (two levels when
    fewer than 5%), the share of ticks in the high-copy state (``share_hi``,
    percent), the medians in the high- and low-copy states of :func:`split_by_copy`
    (``model_hi``/``model_lo``, ``core_``, ``copy_``, ``gemm_``, ``steal_`` and ``pressure_``), the
    gap between DeiT-S's two medians (``model_gap``, percent, 1 decimal; ``model_noise``, its spread;
    ``model_clear``, "beyond" or "within" it; :func:`state_gap`), the correlations of DeiT-S's and
    the core's time with the copy bandwidth (``r_model_copy``, ``r_core_copy``, 2 decimals),
    ``reading`` (what the gap suggests, labelled as a reading where it goes beyond the numbers) and
    ``counters`` (whether steal and pressure saw it; ends with its full stop). A series of fewer than
    :data:`MIN_TICKS` ticks gives "-" for every number, :data:`NO_SERIES` as its reading and no
    counters sentence."""
    if len(series) < MIN_TICKS:
        keys = ["ticks", "minutes", "tick_s", "threshold", "between", "share_hi", "model_gap", "model_noise",
                "model_clear", "r_model_copy", "r_core_copy"]
        keys += [f"{p}_{k}" for p in PROBES for k in ("spread", "median")]
        keys += [f"{k}_{h}" for k in ("model", "core", "copy", "gemm", "steal", "pressure") for h in ("hi", "lo")]
        return {**dict.fromkeys(keys, "-"), "levels": "", "reading": NO_SERIES, "counters": ""}
    table = steadiness(series).set_index("probe")
    states = split_by_copy(series).set_index("state")
    cut = copy_threshold(series.copy_gbps)
    out: dict[str, Any] = {"ticks": int(len(series)),
                           "minutes": round(float(series.elapsed_s.max()) / 60, 1),
                           "tick_s": round(float(series.elapsed_s.max()) / (len(series) - 1), 2),
                           "threshold": round(cut, 1),
                           "between": round(float(100 * ((series.copy_gbps - cut).abs() <= 0.1 * cut).mean()), 1),
                           "share_hi": round(float(states.loc["high copy", "share_pct"]), 1)}
    for probe in PROBES:
        out[f"{probe}_spread"] = round(float(table.loc[probe, "spread_pct"]), 1)
        out[f"{probe}_median"] = round(float(table.loc[probe, "median"]), 1)
    for probe, key in (("model_ms", "model"), ("core_ms", "core"), ("copy_gbps", "copy"), ("gemm_gflops", "gemm"),
                       ("steal_pct", "steal"), ("cpu_pressure_pct", "pressure")):
        if probe not in states:
            continue
        out[f"{key}_hi"] = round(float(states.loc["high copy", probe]), 1)
        out[f"{key}_lo"] = round(float(states.loc["low copy", probe]), 1)
    r_model, r_core = table.loc["model_ms", "r_copy"], table.loc["core_ms", "r_copy"]
    out["r_model_copy"] = round(float(r_model), 2) if not math.isnan(r_model) else float("nan")
    out["r_core_copy"] = round(float(r_core), 2) if not math.isnan(r_core) else float("nan")
    out["levels"] = ("The copy bandwidth sits at one of two levels" if out["between"] < 5 else
                     "The copy bandwidth moves between a higher and a lower level, with stretches between them")
    gap = state_gap(series)
    out["model_gap"], out["model_noise"] = round(gap["gap_pct"], 1), round(gap["noise_pct"], 1)
    out["model_clear"] = "beyond" if gap["clear"] == 1.0 else "within"
    out["reading"] = _reading({**out, "model_clear": gap["clear"] == 1.0})
    out["counters"] = _counters({**out, "model_clear": gap["clear"] == 1.0})
    return out


def every_series(monitor: pd.DataFrame) -> pd.DataFrame:
    """One row per series (``run_id``, its UTC start) of a hardware's monitor runs, oldest first: ``minutes``,
    ``ticks``, the median copy bandwidth (GB/s) and DeiT-S time (ms) over the series, the copy bandwidth
    separating its two states (``threshold_gbps``, :func:`copy_threshold`), the share of ticks in the
    high-copy state (``high_copy_pct``), DeiT-S's and the explicit core's medians in each state of
    :func:`split_by_copy` (``model_hi_ms``, ``model_lo_ms``, ``core_hi_ms``, ``core_lo_ms``), the gap
    between DeiT-S's two and its spread (``model_gap_pct``, ``model_noise_pct``; :func:`state_gap`) and
    the correlation of each probe with the copy bandwidth (``r_model_copy``, ``r_core_copy``). Series
    of fewer than :data:`MIN_TICKS` ticks are left out."""
    rows = []
    for run_id, series in monitor.groupby("run_id", sort=True):
        if len(series) < MIN_TICKS:
            continue
        probes = steadiness(series).set_index("probe")
        states = split_by_copy(series).set_index("state")
        gap = state_gap(series)
        rows.append({"run_id": run_id, "minutes": float(series.elapsed_s.max()) / 60, "ticks": len(series),
                     "copy_gbps": probes.loc["copy_gbps", "median"], "model_ms": probes.loc["model_ms", "median"],
                     "threshold_gbps": copy_threshold(series.copy_gbps),
                     "high_copy_pct": states.loc["high copy", "share_pct"],
                     "model_hi_ms": states.loc["high copy", "model_ms"],
                     "model_lo_ms": states.loc["low copy", "model_ms"],
                     "core_hi_ms": states.loc["high copy", "core_ms"],
                     "core_lo_ms": states.loc["low copy", "core_ms"],
                     "model_gap_pct": gap["gap_pct"], "model_noise_pct": gap["noise_pct"],
                     "r_model_copy": probes.loc["model_ms", "r_copy"],
                     "r_core_copy": probes.loc["core_ms", "r_copy"]})
    return pd.DataFrame(rows, columns=["run_id", "minutes", "ticks", "copy_gbps", "model_ms", "threshold_gbps",
                                       "high_copy_pct", "model_hi_ms", "model_lo_ms", "core_hi_ms", "core_lo_ms",
                                       "model_gap_pct", "model_noise_pct", "r_model_copy", "r_core_copy"])


def _span(values: pd.Series, fmt: str = ".1f") -> str:
    lo, hi = float(values.min()), float(values.max())
    return f"{lo:{fmt}}" if f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}} to {hi:{fmt}}"


def recurrence_text(table: pd.DataFrame) -> str:
    """A sentence on whether the series of :func:`every_series` agree: in how many DeiT-S took longer in
    the high-copy state beyond its spread (the pattern :func:`steadiness_text` reads as the hypervisor
    moving the vCPUs), in how many the other way, in how many neither; the range of the share of time in
    the high-copy state and of DeiT-S's median (ms) in each state; and how far apart the series' DeiT-S
    medians are (percent)."""
    n = len(table)
    if n == 0:
        return NO_SERIES
    if n == 1:
        return "One series is on record; whether its pattern recurs at other times needs another"
    clear = table.model_gap_pct.abs() > table.model_noise_pct
    slower = int((clear & (table.model_gap_pct > 0)).sum())
    faster = int((clear & (table.model_gap_pct < 0)).sum())
    parts = [f"In {slower} of {n} series DeiT-S took longer in the high-copy state (beyond its spread in each)"]
    if faster:
        parts.append(f"in {faster} less")
    if n - slower - faster:
        parts.append(f"in {n - slower - faster} the two were within that spread")
    gap = 100 * (table.model_ms.max() / table.model_ms.min() - 1)
    return ("; ".join(parts) + f". The host spent {_span(table.high_copy_pct, '.0f')}% of a series in the "
            f"high-copy state, where DeiT-S took {_span(table.model_hi_ms)} ms, against "
            f"{_span(table.model_lo_ms)} ms in the low-copy state; so the series' DeiT-S medians are "
            f"{gap:.1f}% apart ({table.model_ms.min():.1f} to {table.model_ms.max():.1f} ms), which depends on "
            "how long each caught the host in each state")


def spells_text(table: pd.DataFrame) -> str:
    """A phrase for the book from :func:`every_series`: DeiT-S's medians in the two states (ms), over the
    series in which it took clearly longer in the high-copy state ("spells in which DeiT-S takes 67.4 to
    70.3 instead of 60.0 to 64.3 ms"), or, where none did, that no series shows it, or that this
    machine has no series on record (the monitor probes a host; a GPU's runs have none)."""
    if len(table) == 0:
        return "no monitor series is on record for this machine"
    slow = table[(table.model_gap_pct > table.model_noise_pct)]
    if len(slow) == 0:
        return "no series on record shows DeiT-S clearly slower in one of the host's states"
    return f"spells in which DeiT-S takes {_span(slow.model_hi_ms)} instead of {_span(slow.model_lo_ms)} ms"
