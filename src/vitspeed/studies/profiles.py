"""Where a core's CPU time goes, read from data/profiles (written by ``vitspeed profile``).

The scaling chapter measures that fused SDPA gains almost nothing from bfloat16 on the CPU while
the explicit form gains a lot; the profiles say which code each spends its time in. Shares are
percentages of the samples taken while the calls ran (:mod:`vitspeed.profiling`).
"""
from __future__ import annotations

import pandas as pd

from vitspeed.profiling import CHAPTER, GROUPS
from vitspeed.results import read_results

__all__ = ["load_profiles", "share_table", "fused_precision_text", "F32_GEMM", "BF16_GEMM", "LOOPS"]

F32_GEMM, BF16_GEMM, LOOPS = "MKL float32 GEMM", "MKL bfloat16 GEMM", "fused-attention kernel loops"

def load_profiles(hardware: str | None = None) -> pd.DataFrame:
    """The newest profile run of each hardware (of ``hardware`` only when given), eager and compiled
    rows alike; an empty frame when there is none."""
    prof = read_results(CHAPTER, latest_only=True)
    if hardware is not None and len(prof):
        prof = prof[prof.hardware == hardware]
    return prof.reset_index(drop=True)


def share_table(prof: pd.DataFrame) -> pd.DataFrame:
    """Percent of samples per group (columns, in :data:`~vitspeed.profiling.GROUPS` order, groups no
    profile has left out) for each profiled call (rows: hardware, kind, target, dtype, mode)."""
    if not len(prof):
        return pd.DataFrame()
    def size(row) -> str:
        return f"{int(float(row.tokens))} tokens" if row.kind == "core" else f"{int(float(row.img_size))} px"

    df = prof.assign(mode=prof.compiled.astype(str).map({"True": "compiled", "False": "eager"}),
                     size=[size(r) for r in prof.itertuples()])
    t = df.pivot_table(index=["hardware", "kind", "target", "size", "dtype", "mode"], columns="group",
                       values="share_pct", aggfunc="sum", fill_value=0.0)
    return t[[g.name for g in GROUPS if g.name in t.columns]].round(1)


def _shares(prof: pd.DataFrame, target: str, dtype: str) -> pd.Series | None:
    if not len(prof) or "kind" not in prof:
        return None
    rows = prof[(prof.kind == "core") & (prof.target == target) & (prof.dtype == dtype)
                & (prof.compiled.astype(str) == "False")]
    if not len(rows):
        return None
    rows = rows[rows.tokens.astype(float) == rows.tokens.astype(float).max()]
    return rows.set_index("group").share_pct.astype(float)


def fused_precision_text(prof: pd.DataFrame, low: str = "float32", high: str = "bfloat16") -> str | None:
    """What the profiles of fused and explicit softmax (eager cores, largest profiled token count)
    say about their ``high``-precision time, or None when fused SDPA was not profiled in both
    precisions. ``prof`` holds one hardware's profiles."""
    fused_hi, fused_lo = _shares(prof, "softmax", high), _shares(prof, "softmax", low)
    if fused_hi is None or fused_lo is None:
        return None
    tokens = int(prof[(prof.kind == "core") & (prof.target == "softmax")].tokens.astype(float).max())
    explicit_hi = _shares(prof, "softmax_explicit", high)
    top = fused_hi.idxmax()
    if top == F32_GEMM:
        text = (f"a sampling profile of the cores at {tokens} tokens (the profile section above) shows "
                f"why: in {high}, {fused_hi[F32_GEMM]:.0f}% of fused SDPA's samples fall in MKL's float32 GEMM "
                f"kernel ({fused_lo.get(F32_GEMM, 0.0):.0f}% in {low}), {fused_hi.get(BF16_GEMM, 0.0):.0f}% in MKL's "
                f"{high} GEMM routine and {fused_hi.get(LOOPS, 0.0):.0f}% in the fused kernel's own loops "
                "(softmax, rescaling): the fused kernel hands its block products to MKL's "
                f"{high} GEMM, which on this CPU computes them with its float32 kernel")
    else:
        text = (f"a sampling profile of the cores at {tokens} tokens (the profile section above) puts "
                f"{fused_hi[top]:.0f}% of fused SDPA's {high} samples in {top} "
                f"({fused_lo.get(top, 0.0):.0f}% in {low})")
    if explicit_hi is not None:
        etop = explicit_hi.idxmax()
        text += f", while {explicit_hi[etop]:.0f}% of the explicit form's {high} samples are in {etop}"
    return text
