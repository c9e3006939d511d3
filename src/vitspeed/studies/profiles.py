"""Where a core's or a model's CPU time goes, read from data/profiles (written by ``vitspeed profile``).

The scaling chapter measures that fused SDPA gains almost nothing from bfloat16 on the CPU while
the explicit form gains a lot, and the hybrids chapter that a GMAC costs the hybrids far more at
batch 1 than at batch 8; the profiles say which code the time is spent in. Shares are
percentages of the samples taken while the calls ran (:mod:`vitspeed.profiling`).
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import pandas as pd

from vitspeed.profiling import CHAPTER, GROUPS
from vitspeed.results import read_results

__all__ = ["load_profiles", "newest_calls", "call_size", "share_table", "fused_precision_text", "waiting_shares", "waiting_text", "F32_GEMM",
           "BF16_GEMM", "LOOPS", "WAITING", "CALL_KEY"]

F32_GEMM, BF16_GEMM, LOOPS = "MKL float32 GEMM", "MKL bfloat16 GEMM", "fused-attention kernel loops"
#: time that is neither arithmetic nor memory traffic of an operator: a thread spinning in the OpenMP
#: runtime (waiting for work, or for the other thread at the end of a parallel region) and the Python
#: interpreter (dispatching the next operator)
WAITING = ("OpenMP runtime", "Python")

#: what identifies one profiled call within a hardware
CALL_KEY = ["kind", "target", "attention", "tokens", "img_size", "batch_size", "dtype", "compiled", "threads"]


def load_profiles(hardware: str | None = None, roots: Sequence[str | os.PathLike] | None = None) -> pd.DataFrame:
    """Every profiled call of every hardware (of ``hardware`` only when given), from all its profile
    runs: a call profiled in several runs is taken from the newest (greatest run id, a UTC time).
    An empty frame when there is none. ``roots``: as for :func:`vitspeed.results.read_results`."""
    return newest_calls(read_results(CHAPTER, roots=roots), CALL_KEY, hardware)


def newest_calls(prof: pd.DataFrame, call_key: Sequence[str], hardware: str | None = None) -> pd.DataFrame:
    """The rows of ``prof`` (profile rows of any runs) from the newest run (greatest ``run_id``, a
    UTC time) of each call, a call being the hardware and the ``call_key`` columns present; of
    ``hardware`` only when given. All of the newest run's rows of a call are kept (its groups,
    operators or rounds)."""
    if not len(prof):
        return prof
    if hardware is not None:
        prof = prof[prof.hardware == hardware]
    key = ["hardware"] + [c for c in call_key if c in prof]
    ids = ["|".join(map(str, row)) for row in prof[key].itertuples(index=False)]
    newest = prof.assign(_call=ids).groupby("_call").run_id.transform("max")
    return prof[prof.run_id == newest].reset_index(drop=True)


def call_size(row) -> str:
    """The size of a profiled call as the tables print it: ``"4096 tokens"`` for a core, ``"224 px"``
    for a model (``row`` has ``kind``, ``tokens`` and ``img_size``)."""
    return f"{int(float(row.tokens))} tokens" if row.kind == "core" else f"{int(float(row.img_size))} px"


def share_table(prof: pd.DataFrame) -> pd.DataFrame:
    """Percent of samples per group (columns, in :data:`~vitspeed.profiling.GROUPS` order, groups no
    profile has left out) for each profiled call (rows: hardware, kind, target, size (tokens or image
    side), batch size, dtype, mode)."""
    if not len(prof):
        return pd.DataFrame()

    df = prof.assign(mode=prof.compiled.astype(str).map({"True": "compiled", "False": "eager"}),
                     size=[call_size(r) for r in prof.itertuples()])
    t = df.pivot_table(index=["hardware", "kind", "target", "size", "batch_size", "dtype", "mode"], columns="group",
                       values="share_pct", aggfunc="sum", fill_value=0.0)
    return t[[g.name for g in GROUPS if g.name in t.columns]].round(1)


def _eager(prof: pd.DataFrame) -> pd.DataFrame:
    return prof[prof.compiled.astype(str) == "False"]


def _shares(prof: pd.DataFrame, target: str, dtype: str) -> pd.Series | None:
    if not len(prof) or "kind" not in prof:
        return None
    rows = _eager(prof)
    rows = rows[(rows.kind == "core") & (rows.target == target) & (rows.dtype == dtype)]
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


def waiting_shares(prof: pd.DataFrame) -> pd.DataFrame:
    """Percent of each eager model profile's samples in the :data:`WAITING` groups (``waiting_pct``),
    one row per hardware, model, batch size and dtype (columns ``hardware``, ``target``,
    ``batch_size``, ``dtype``, ``waiting_pct``); empty when no model was profiled."""
    if not len(prof) or "kind" not in prof:
        return pd.DataFrame(columns=["hardware", "target", "batch_size", "dtype", "waiting_pct"])
    m = _eager(prof)
    m = m[m.kind == "model"]
    m = m.assign(waiting=m.share_pct.astype(float).where(m.group.isin(WAITING), 0.0),
                 batch_size=m.batch_size.astype(int))
    out = m.groupby(["hardware", "target", "batch_size", "dtype"], as_index=False).waiting.sum()
    return out.rename(columns={"waiting": "waiting_pct"})


def waiting_text(prof: pd.DataFrame, names: Mapping[str, str], reference: str, b_lo: int, b_hi: int,
                 dtype: str = "float32") -> str | None:
    """Whether the profiles bear out that small operators leave the CPU waiting, which a larger
    batch spreads: the :data:`WAITING` share of each profiled model other than ``reference`` at
    batches ``b_lo`` and ``b_hi``, against ``reference``'s. ``prof`` holds one hardware's profiles;
    ``names`` maps model names to the labels to print. None when ``reference`` or no other model was
    profiled at both batches, or when ``b_lo`` is not below ``b_hi``. It bears it out when every other
    model waits more than ``reference`` at ``b_lo`` and its share falls more than ``reference``'s by
    ``b_hi``."""
    if b_lo >= b_hi:
        return None
    w = waiting_shares(prof)
    w = w[w.dtype == dtype].set_index(["target", "batch_size"]).waiting_pct
    both = [t for t in dict.fromkeys(w.index.get_level_values(0)) if (t, b_lo) in w.index and (t, b_hi) in w.index]
    if reference not in both or len(both) < 2:
        return None
    others = [t for t in both if t != reference]
    ref_lo, ref_hi = w[(reference, b_lo)], w[(reference, b_hi)]
    holds = all(w[(t, b_lo)] > ref_lo and w[(t, b_lo)] - w[(t, b_hi)] > ref_lo - ref_hi for t in others)

    def listed(b: int) -> str:
        return ", ".join(f"{names.get(t, t)} {w[(t, b)]:.0f}%" for t in others)

    verdict = "bears this out" if holds else "does not clearly bear this out"
    return (f"A CPU profile of these models (the profile section above) {verdict}: at batch {b_lo} the "
            "share of the samples spent in the OpenMP runtime (a thread waiting for work or for the other "
            "thread) or in the Python interpreter (dispatching the next operator) is "
            f"{listed(b_lo)}, against {names.get(reference, reference)} {ref_lo:.0f}%; at batch {b_hi} it is "
            f"{listed(b_hi)}, against {ref_hi:.0f}%.")
