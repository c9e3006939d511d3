"""Reading the host monitor's series (``vitspeed monitor``, data/host_monitor): how steady the machine is.

Spreads are ``spread_pct`` = 100 x (90th / 10th percentile - 1), for rates and times alike;
correlations are Pearson's r over the ticks of one series.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

__all__ = ["PROBES", "MIN_TICKS", "NO_SERIES", "steadiness", "split_by_copy", "steadiness_text"]

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


def split_by_copy(series: pd.DataFrame) -> pd.DataFrame:
    """The ticks split at the median copy bandwidth: per half (``half`` = "high copy" / "low copy")
    the number of ticks and the median of every probe and of ``steal_pct`` and ``cpu_pressure_pct``
    (where the series has them)."""
    cut = series.copy_gbps.median()
    half = pd.Series("low copy", index=series.index).where(series.copy_gbps <= cut, "high copy")
    cols = list(PROBES) + [c for c in ("steal_pct", "cpu_pressure_pct") if c in series]
    out = series.assign(half=half).groupby("half")[cols].median()
    out.insert(0, "ticks", series.assign(half=half).groupby("half").size())
    return out.reindex(["high copy", "low copy"]).reset_index()


#: fewer ticks than this are no series to read
MIN_TICKS = 4
NO_SERIES = "no host monitor series for this hardware in data/ (run `vitspeed monitor`)"


def _reading(m: dict[str, Any]) -> str:
    r = m["r_model_copy"]
    if r > 0.5:
        core_moved = (" and a slightly faster memory-bound core" if m["core_hi"] < m["core_lo"] else
                      " and a slower memory-bound core" if m["core_hi"] > m["core_lo"] else "")
        return (f"Faster copies came with a slower DeiT-S{core_moved}. A neighbour's memory traffic would "
                "slow the copies instead; what fits is the hypervisor running our two virtual CPUs on other "
                "physical cores for spells at a time (a reading: nothing in the guest shows where it runs)")
    if r < -0.5:
        return "Slower copies came with a slower DeiT-S, as a neighbour's memory traffic would cause"
    return "DeiT-S's time did not follow the copy bandwidth"


def _counters(m: dict[str, Any]) -> str:
    seen = abs(m["r_model_copy"]) > 0.5
    same = ("steal_hi" in m and "pressure_hi" in m and abs(m["pressure_hi"] - m["pressure_lo"]) < 1
            and abs(m["steal_hi"] - m["steal_lo"]) < 1)
    if seen and same:
        return (f"Steal and CPU pressure, the two counters the chapters recorded until now, were the same in both "
                f"halves (median {m['steal_hi']} and {m['steal_lo']}% steal, {m['pressure_hi']} and "
                f"{m['pressure_lo']}% pressure per tick) and miss this; the copy bandwidth every CPU row now "
                "records (copy_gbps, method page) shows it, which is why a sweep warns when a group's reading is "
                "far from its run's median, in either direction")
    return ("The copy bandwidth every CPU row now records (copy_gbps, method page) is one more sign of a change, "
            "read beside steal and CPU pressure")


def steadiness_text(series: pd.DataFrame) -> dict[str, Any]:
    """Numbers and sentences for the book on one series: ``ticks``, ``minutes`` covered, ``tick_s``
    (seconds per tick), the spread and median of every probe (``<probe>_spread``, percent, and
    ``<probe>_median``, 1 decimal), the medians in the high- and low-copy halves of
    :func:`split_by_copy` (``model_hi``/``model_lo``, ``core_``, ``copy_``, ``steal_`` and
    ``pressure_``), the correlations of DeiT-S's and the core's time with the copy bandwidth
    (``r_model_copy``, ``r_core_copy``, 2 decimals), ``reading`` (what the correlation suggests,
    labelled as a reading where it goes beyond the numbers) and ``counters`` (whether steal and
    pressure saw it). A series of fewer than :data:`MIN_TICKS` ticks gives "-" for every number,
    :data:`NO_SERIES` as its reading and no counters sentence."""
    if len(series) < MIN_TICKS:
        keys = ["ticks", "minutes", "tick_s", "r_model_copy", "r_core_copy"]
        keys += [f"{p}_{k}" for p in PROBES for k in ("spread", "median")]
        keys += [f"{k}_{h}" for k in ("model", "core", "copy", "steal", "pressure") for h in ("hi", "lo")]
        return {**dict.fromkeys(keys, "-"), "reading": NO_SERIES, "counters": ""}
    table = steadiness(series).set_index("probe")
    halves = split_by_copy(series).set_index("half")
    out: dict[str, Any] = {"ticks": int(len(series)),
                           "minutes": round(float(series.elapsed_s.max()) / 60, 1),
                           "tick_s": round(float(series.elapsed_s.max()) / (len(series) - 1), 2)}
    for probe in PROBES:
        out[f"{probe}_spread"] = round(float(table.loc[probe, "spread_pct"]), 1)
        out[f"{probe}_median"] = round(float(table.loc[probe, "median"]), 1)
    for probe, key in (("model_ms", "model"), ("core_ms", "core"), ("copy_gbps", "copy"),
                       ("steal_pct", "steal"), ("cpu_pressure_pct", "pressure")):
        if probe not in halves:
            continue
        out[f"{key}_hi"] = round(float(halves.loc["high copy", probe]), 1)
        out[f"{key}_lo"] = round(float(halves.loc["low copy", probe]), 1)
    r_model, r_core = table.loc["model_ms", "r_copy"], table.loc["core_ms", "r_copy"]
    out["r_model_copy"] = round(float(r_model), 2) if not math.isnan(r_model) else float("nan")
    out["r_core_copy"] = round(float(r_core), 2) if not math.isnan(r_core) else float("nan")
    out["reading"] = _reading(out)
    out["counters"] = _counters(out)
    return out
