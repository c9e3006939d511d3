"""Reading the host monitor's series (``vitspeed monitor``, data/host_monitor): how steady the machine is.

Spreads are ``spread_pct`` = 100 x (90th / 10th percentile - 1), for rates and times alike;
correlations are Pearson's r over the ticks of one series.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

__all__ = ["PROBES", "steadiness", "split_by_copy", "steadiness_text"]

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


def steadiness_text(series: pd.DataFrame) -> dict[str, Any]:
    """Numbers for the book's sentence on one series: minutes covered, the spread of every probe
    (``<probe>_spread``, percent, 1 decimal), DeiT-S's and the core's median ms in the high- and
    low-copy halves (``model_hi``/``model_lo``, ``core_hi``/``core_lo``, also ``copy_``, ``steal_``
    and ``pressure_``, the medians of steal and CPU pressure per tick), the correlations of DeiT-S's
    and the core's time with the copy bandwidth (``r_model_copy``, ``r_core_copy``, 2 decimals)."""
    table = steadiness(series).set_index("probe")
    halves = split_by_copy(series).set_index("half")
    out: dict[str, Any] = {"ticks": int(len(series)),
                           "minutes": round(float(series.elapsed_s.max()) / 60, 1)}
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
    return out
