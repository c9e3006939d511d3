"""The roofline of a device, measured, and where each attention core sits under it.

Two ceilings are measured on the device itself, never copied from a datasheet:

- compute: one large square matrix product (n x n by n x n: 2 n^3 FLOPs) in the dtype under study
  (on CUDA in float32 IEEE float32, TF32 off, with the TF32 product measured beside it);
- bandwidth: one large device-to-device copy (``dst.copy_(src)``), counting the bytes read plus the
  bytes written (2 x the tensor's size).

A core measured at median latency t, doing F = 2 x MACs + elementwise FLOPs and moving B bytes
(:mod:`vitspeed.traffic`'s eager-operator model, in the timed dtype) has

- achieved FLOP/s = F / t and achieved bytes/s = B / t;
- arithmetic intensity I = F / B (FLOPs per byte);
- attainable FLOP/s = min(peak FLOP/s, I x peak bytes/s), efficiency = achieved / attainable;
- verdict *memory-bound* when I is below the ridge point peak FLOP/s / peak bytes/s, else
  *compute-bound*.

Caveats the book states with the figure: the matmul peak is the tensor-core roof, which elementwise
work (exp, division) cannot reach; B counts every operator's inputs and outputs, so data that stays
in cache (PyTorch reports 60 MB of L2 on the H200; the environment record gives the card's own size)
makes B an upper bound on DRAM traffic and the verdict conservative (a core called memory-bound here
may be less so).
Units: FLOP/s and bytes/s (rows), ms (latencies).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd
import torch

from vitspeed.envinfo import resolve_device, resolve_dtype, strict_fp32, tf32_state
from vitspeed.timing import empty_cuda_cache, measure

__all__ = ["default_sizes", "measure_ceilings", "roofline", "roof_summary", "roof_mechanism", "other_roofs_text",
           "roof_curve", "MATMUL",
           "COPY", "NEAR_RIDGE", "TF32", "TF32X3", "TENSOR_CORE_FP32_BACKENDS", "roof_compute_dtype"]

MATMUL = "matmul"
COPY = "copy"
#: The pseudo-dtype of a float32 ceiling measured with TF32 tensor-core products allowed.
TF32 = "tfloat32"
#: The pseudo-dtype of the roof of float32 products emulated with three TF32 products each (the split
#: of each operand into a TF32 "big" and "small" part, near-float32 accuracy): a third of the
#: measured :data:`TF32` ceiling, derived by :func:`roofline`, not measured on its own.
TF32X3 = "3xtfloat32"
#: SDPA kernels that compute float32 attention on the tensor cores on a CUDA device of compute
#: capability 8.0 and up regardless of the TF32 flags: the memory-efficient (CUTLASS) kernel uses
#: three TF32 products per float32 product, so its roof is :data:`TF32X3`.
TENSOR_CORE_FP32_BACKENDS = frozenset({"mem_efficient"})


def _cpu_has_amx() -> bool:
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe()) if probe is not None else False


def roof_compute_dtype(device: str, dtype: str, product_dtype: str | None, sdpa_backend: str | None,
                       amx: bool | None = None) -> str | None:
    """The dtype whose matmul ceiling is a core's compute roof: :data:`TF32X3` for float32 SDPA on CUDA in a
    kernel of :data:`TENSOR_CORE_FP32_BACKENDS`; float32 for bfloat16 or float16 SDPA in PyTorch's CPU
    flash kernel on a CPU without AMX tiles (``amx``; None: this machine's); else the dtype its matrix
    products ran in.

    The CPU flash kernel hands its block products to a reduced-precision GEMM that, without AMX, runs
    MKL's float32 kernel: the scaling chapter's sampling profile finds 81% of bfloat16 fused SDPA's
    time there on the study's AMD EPYC (AVX-512 with bf16 instructions), and bfloat16 fused SDPA no
    faster than float32, while an ordinary bfloat16 matmul (oneDNN) runs 4 times faster than float32.
    """
    if device == "cuda" and dtype == "float32" and sdpa_backend in TENSOR_CORE_FP32_BACKENDS:
        return TF32X3
    if device == "cpu" and dtype in ("bfloat16", "float16") and sdpa_backend == "flash_cpu":
        if not (_cpu_has_amx() if amx is None else amx):
            return "float32"
    return product_dtype


def default_sizes(device: str) -> tuple[int, int]:
    """(matmul side n, copy size in bytes) large enough to reach the ceilings of ``device``'s type:
    CUDA 8192 and 2 GiB (far above any L2), CPU 2048 and 256 MiB (above the last-level cache of
    the CPUs the study runs on, and quick on two cores)."""
    return (8192, 2 << 30) if resolve_device(device).type == "cuda" else (2048, 256 << 20)


def measure_ceilings(device: str = "cpu", dtype: str = "float32", matmul_size: int | None = None,
                     copy_bytes: int | None = None, warmup: int = 3, repeats: int = 10) -> list[dict[str, Any]]:
    """Measure the compute and bandwidth ceilings of ``device`` in ``dtype``; two result rows.

    Rows: level='ceiling', attention ('matmul' | 'copy'), label, device, dtype, threads, tf32,
    size (matmul side n, or bytes copied one way), median_ms / iqr_ms / n, flops (matmul: 2 n^3)
    or bytes_moved (copy: 2 x size), flops_per_s or bytes_per_s (at the median), status='ok'.
    The two are timed interleaved, with warm-up (see :func:`vitspeed.timing.measure`). The float32
    matmul is IEEE float32 whatever the caller's TF32 flags (``tf32`` False on CUDA); on CUDA in
    float32 a third row, the same matmul with TF32 allowed (dtype :data:`TF32`), gives the roof of the
    SDPA kernels that use the tensor cores for float32 anyway (:data:`TF32X3`, derived from it).
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev.type)
    n_default, bytes_default = default_sizes(str(dev))
    n = int(matmul_size or n_default)
    nbytes = int(copy_bytes or bytes_default)
    if n < 1 or nbytes < 1:
        raise ValueError(f"matmul_size and copy_bytes must be positive; got {n} and {nbytes}")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dev, dt)  # random data: zeros would flatter the tensor cores
    b = torch.randn(n, n, generator=g).to(dev, dt)
    c = torch.empty(n, n, device=dev, dtype=dt)
    elems = max(1, nbytes // torch.empty((), dtype=dt).element_size())
    src = torch.ones(elems, device=dev, dtype=dt)
    dst = torch.empty_like(src)
    fns = {MATMUL: lambda: torch.mm(a, b, out=c), COPY: lambda: dst.copy_(src)}
    if dev.type == "cuda" and dt == torch.float32:
        def mm_tf32() -> None:  # the same product with TF32 tensor-core math, for TENSOR_CORE_FP32_BACKENDS
            before = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = True
            try:
                torch.mm(a, b, out=c)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = before
        fns[TF32] = mm_tf32
    with strict_fp32():  # the float32 ceiling is IEEE float32; TF32 is a row of its own
        timings = measure(fns, device=str(dev), warmup=warmup, repeats=repeats)
        tf32 = tf32_state(dev, dt)
    base = {"level": "ceiling", "family": "ceiling", "device": dev.type, "dtype": dtype,
            "threads": torch.get_num_threads(), "tf32": tf32, "status": "ok"}
    rows = []
    for name, t in timings.items():
        r = t.row()
        row = {**base, "label": name, "attention": name, "median_ms": r["median_ms"], "iqr_ms": r["iqr_ms"],
               "n": r["n"]}
        if name == TF32:  # a matmul ceiling of its own pseudo-dtype, so roofline() can pick it by compute dtype
            row.update(label="matmul (TF32)", attention=MATMUL, dtype=TF32, tf32=True)
        if name in (MATMUL, TF32):
            row.update(size=n, flops=2.0 * n ** 3, flops_per_s=2.0 * n ** 3 / t.median_s)
        else:
            moved = 2.0 * elems * src.element_size()
            row.update(size=elems * src.element_size(), bytes_moved=moved, bytes_per_s=moved / t.median_s)
        rows.append(row)
    del a, b, c, src, dst, fns
    if dev.type == "cuda":
        empty_cuda_cache()
    return rows


def roofline(results: pd.DataFrame, level: str = "core",
             by: Sequence[str] = ("hardware", "dtype")) -> pd.DataFrame:
    """Place every measured ``level`` row under the ceilings measured in the same ``by`` group.

    Needs rows with status ok of ``level`` (columns macs, elementwise, bytes_moved, median_ms) and
    ceiling rows (:func:`measure_ceilings`). The compute roof is the matrix-product ceiling of the
    dtype the row's products ran in (column compute_dtype, e.g. float32 for a bfloat16 linear core
    that upcasts) when that ceiling was measured on the same hardware, else that of its own dtype;
    the bandwidth roof is the copy ceiling of its own dtype. Adds: roof_dtype (whose matmul ceiling
    is the compute roof), flops (2 x MACs + elementwise), intensity (FLOPs per byte),
    achieved_flops_per_s, achieved_bytes_per_s, peak_flops_per_s, peak_bytes_per_s, ridge (FLOPs
    per byte), attainable_flops_per_s, efficiency (achieved / attainable), pct_peak_flops and
    pct_peak_bytes (percent of each ceiling), bound ('memory' or 'compute'). Groups without both
    ceilings, and rows without bytes_moved, are left out.
    """
    status = results.status.fillna("ok") if "status" in results else pd.Series("ok", index=results.index)
    ok = results[status == "ok"]
    by = [b for b in by if b in ok.columns]
    ceil = ok[ok.level == "ceiling"]
    need = {"macs", "elementwise", "bytes_moved", "median_ms"}
    if ceil.empty or not need <= set(ok.columns):
        return pd.DataFrame()
    flops_peak = (ceil[ceil.attention == MATMUL].groupby(by, dropna=False).flops_per_s.max()
                  .rename("peak_flops_per_s").reset_index())
    if "dtype" in by:  # the 3xTF32 roof: a third of each measured TF32 ceiling
        emulated = flops_peak[flops_peak.dtype == TF32].assign(dtype=TF32X3)
        emulated["peak_flops_per_s"] = emulated.peak_flops_per_s / 3
        flops_peak = pd.concat([flops_peak, emulated], ignore_index=True)
    bytes_peak = (ceil[ceil.attention == COPY].groupby(by, dropna=False).bytes_per_s.max()
                  .rename("peak_bytes_per_s").reset_index())
    df = ok[(ok.level == level) & ok.bytes_moved.notna() & (ok.bytes_moved > 0)]
    if df.empty:
        return df.copy()
    df = df.merge(flops_peak, on=by, how="left").merge(bytes_peak, on=by, how="left")
    df["roof_dtype"] = df.dtype if "dtype" in df else ""
    if "dtype" in by and "compute_dtype" in df:
        # the matmul ceiling of the dtype the products ran in, where one was measured on the same hardware
        other = flops_peak.rename(columns={"dtype": "compute_dtype", "peak_flops_per_s": "_computed_peak"})
        df = df.merge(other, on=[b if b != "dtype" else "compute_dtype" for b in by], how="left")
        found = df._computed_peak.notna()
        df["roof_dtype"] = df.compute_dtype.where(found, df.roof_dtype)
        df["peak_flops_per_s"] = df._computed_peak.where(found, df.peak_flops_per_s)
        df = df.drop(columns="_computed_peak")
    df = df[df.peak_flops_per_s.notna() & df.peak_bytes_per_s.notna()]
    if df.empty:
        return df
    seconds = df.median_ms / 1e3
    df["flops"] = 2.0 * df.macs + df.elementwise
    df["intensity"] = df.flops / df.bytes_moved
    df["achieved_flops_per_s"] = df.flops / seconds
    df["achieved_bytes_per_s"] = df.bytes_moved / seconds
    df["ridge"] = df.peak_flops_per_s / df.peak_bytes_per_s
    df["attainable_flops_per_s"] = [min(p, i * bw) for p, i, bw in
                                    zip(df.peak_flops_per_s, df.intensity, df.peak_bytes_per_s)]
    df["efficiency"] = df.achieved_flops_per_s / df.attainable_flops_per_s
    df["pct_peak_flops"] = 100.0 * df.achieved_flops_per_s / df.peak_flops_per_s
    df["pct_peak_bytes"] = 100.0 * df.achieved_bytes_per_s / df.peak_bytes_per_s
    df["bound"] = ["memory" if i < r else "compute" for i, r in zip(df.intensity, df.ridge)]
    return df


#: A core whose intensity lies within this fraction of the ridge point is called bound one way or the
#: other by less than the ceilings' own run-to-run spread.
NEAR_RIDGE = 0.1


def roof_summary(roof: pd.DataFrame, reference: str = "softmax") -> dict[str, Any]:
    """What the roofline says at the largest token count of one group of :func:`roofline` rows.

    Returns tokens, ridge (FLOPs per byte, of the group's own dtype), n_cores, upcast (the cores
    placed under another dtype's compute roof because their products ran in it), n_memory_bound,
    reference_efficiency and
    reference_intensity (NaN if the reference was not measured), best / worst (the other cores
    closest to and furthest from their roof, with best_efficiency / worst_efficiency as fractions),
    linear_intensity and linear_efficiency (min, max) over the linear family, n_linear /
    n_linear_memory_bound / n_linear_near_ridge (how many linear cores, how many of them memory-bound,
    how many within :data:`NEAR_RIDGE` of their ridge point) and dtype. Raises
    ValueError on an empty frame or one mixing hardware or dtypes.
    """
    if roof.empty:
        raise ValueError("no roofline rows to summarize (no ceilings or no cores with bytes moved)")
    for col in ("hardware", "dtype"):
        if col in roof and roof[col].nunique() > 1:
            raise ValueError(f"roof_summary takes one {col}; got {sorted(roof[col].unique())}: filter first")
    top = roof[roof.tokens == roof.tokens.max()].set_index("attention")
    others = top.drop(index=reference, errors="ignore")
    lin_rows = top[top.family == "linear"] if "family" in top else top.iloc[:0]
    linear = lin_rows.intensity
    ref = top.loc[reference] if reference in top.index else None
    upcast = (top.roof_dtype != top.dtype) if {"roof_dtype", "dtype"} <= set(top.columns) \
        else pd.Series(False, index=top.index)
    own = top[~upcast] if (~upcast).any() else top
    return {
        "tokens": int(top.tokens.iloc[0]), "ridge": float(own.ridge.iloc[0]), "n_cores": int(len(top)),
        "upcast": sorted(top.index[upcast]),
        "n_memory_bound": int((top.bound == "memory").sum()),
        "reference_efficiency": float(ref.efficiency) if ref is not None else math.nan,
        "reference_intensity": float(ref.intensity) if ref is not None else math.nan,
        "best": str(others.efficiency.idxmax()) if len(others) else "",
        "best_efficiency": float(others.efficiency.max()) if len(others) else math.nan,
        "worst": str(others.efficiency.idxmin()) if len(others) else "",
        "worst_efficiency": float(others.efficiency.min()) if len(others) else math.nan,
        "linear_intensity": (float(linear.min()), float(linear.max())) if len(linear) else (math.nan, math.nan),
        "linear_efficiency": ((float(lin_rows.efficiency.min()), float(lin_rows.efficiency.max())) if len(lin_rows)
                              else (math.nan, math.nan)),
        "n_linear": int(len(lin_rows)), "n_linear_memory_bound": int((lin_rows.bound == "memory").sum()),
        "n_linear_near_ridge": int(((lin_rows.intensity / lin_rows.ridge - 1).abs() <= NEAR_RIDGE).sum())
        if len(lin_rows) else 0,
        "dtype": str(top.dtype.iloc[0]) if "dtype" in top else "",
    }


def roof_mechanism(summary: dict[str, Any]) -> str:
    """One sentence on whether the bandwidth roof can explain the linear cores' lag behind their MAC
    count on the device of ``summary`` (:func:`roof_summary`'s output): it can where they are
    memory-bound; where they are compute-bound it cannot, and the sentence gives how far below the
    compute roof they run instead."""
    n, mem = summary.get("n_linear", 0), summary.get("n_linear_memory_bound", 0)
    if not n:
        return ""
    lo, hi = summary["linear_efficiency"]
    at = f"{100 * lo:.0f}% to {100 * hi:.0f}%" if round(100 * lo) != round(100 * hi) else f"{100 * lo:.0f}%"
    where = f" in {summary['dtype']}" if summary.get("dtype") else ""
    near = summary.get("n_linear_near_ridge", 0)
    caveat = (f" ({near} of them lie within {100 * NEAR_RIDGE:.0f}% of the ridge point, where the verdict rests on "
              "ceilings measured with a spread of their own)" if near else "")
    if mem == n:
        return (f"Here{where} all {n} linear cores lie left of the ridge point{caveat}, so the bandwidth roof is what "
                f"holds them back (they run at {at} of it).")
    if mem == 0:
        return (f"Here{where}, though, the ridge point lies below every linear core's intensity{caveat}: by the "
                f"traffic model all {n} are compute-bound, so the bandwidth roof does not explain their late crossover "
                f"on this device; they run at {at} of their roof, held back by something the model leaves out (small, "
                "skinny products that use the machine poorly, and the cost of each eager operator).")
    return (f"Here{where} {mem} of the {n} linear cores lie left of the ridge point and {n - mem} right of it"
            f"{caveat}, so the bandwidth roof explains only part of their lag; they run at {at} of their roofs.")


def other_roofs_text(results: pd.DataFrame, this_hardware: str, batch_size: int = 1) -> str:
    """The roofline verdict (:func:`roof_summary`) at the largest token count of every hardware and
    precision in ``results`` other than ``this_hardware``, at ``batch_size``, as one sentence starting
    with a space; empty when there is none."""
    roof = roofline(results)
    if roof.empty:
        return ""
    roof = roof[(roof.batch_size == batch_size) & (roof.hardware != this_hardware)]
    parts = []
    for (hw, dt), grp in roof.groupby(["hardware", "dtype"]):
        rs = roof_summary(grp)
        lo, hi = rs["linear_efficiency"]
        parts.append(f"on {hw} in {dt} at {rs['tokens']:,} tokens {rs['n_memory_bound']} of the {rs['n_cores']} cores "
                     f"are memory-bound (ridge {rs['ridge']:.1f} FLOPs per byte), fused softmax runs at "
                     f"{100 * rs['reference_efficiency']:.0f}% of its roof and the linear cores at {100 * lo:.0f} to "
                     f"{100 * hi:.0f}% of theirs")
    return (" By the roofline, " + "; ".join(parts) + ".") if parts else ""


def roof_curve(peak_flops_per_s: float, peak_bytes_per_s: float, lo: float, hi: float,
               points: int = 200) -> tuple[list[float], list[float]]:
    """(intensities, attainable FLOP/s) of the roof min(peak, I x bandwidth) on a log grid from
    ``lo`` to ``hi`` FLOPs per byte, for drawing."""
    if not (0 < lo < hi) or points < 2:
        raise ValueError(f"need 0 < lo < hi and points >= 2; got lo={lo}, hi={hi}, points={points}")
    xs = [math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * i / (points - 1)) for i in range(points)]
    return xs, [min(peak_flops_per_s, x * peak_bytes_per_s) for x in xs]
