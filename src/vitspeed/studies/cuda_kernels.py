"""Where an attention core's time goes on a CUDA GPU, kernel by kernel (data/cuda_kernels).

The scaling chapter's roofline puts the linear cores on the H200 far below their roofs at large
token counts. Timing cannot say why; the kernels can. :func:`measure` runs each core of
:data:`CORES` (batch 1, 6 heads of 64: DeiT-S's geometry, as in the scaling chapter) under
``torch.profiler`` and records every CUDA kernel of one call (launches and device microseconds per
call, means over :data:`PROFILED_CALLS` calls), beside the call's CUDA-event median and IQR (ms).
It also times the linear cores' state product phi(K)^T [V, 1], shape (1, 6, 64, N) @ (1, 6, N, 65)
in IEEE float32, as one batched product and split along N into chunks whose partial products are
summed (``probe='kv_split'`` rows): one batched product of this shape has only six 64 x 65 output
tiles, too few to occupy the GPU's multiprocessors unless the library splits the long reduction.

Medians come from separate, unprofiled calls (:func:`vitspeed.timing.measure`, CUDA events, without
the chapters' L2 flush), so the profiler's own overhead stays out of them.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import pandas as pd
import torch

from vitspeed.results import read_results

__all__ = ["CHAPTER", "MODEL_CHAPTER", "CORES", "KV_CHUNKS", "measure", "measure_models", "load", "short_kernel",
           "dominant_kernels", "kv_split_table", "finding_text", "agreement", "agreement_text", "model_launch_table",
           "model_layout_text"]

CHAPTER = "cuda_kernels"
MODEL_CHAPTER = "cuda_model_kernels"
#: the fused and explicit softmax baselines and the linear cores the roofline puts furthest below their roofs
CORES = ("softmax", "softmax_explicit", "linear_relu", "linear_mean", "efficient", "focused", "taylor2_compact")
KV_CHUNKS = (1, 4, 16, 64)
PROFILED_CALLS = 20


def _event_ms(fn: Callable[[], Any], warmup: int, repeats: int) -> tuple[float, float]:
    """Median and IQR (ms) of ``fn`` on CUDA: :func:`vitspeed.timing.measure`'s CUDA events, each sample
    on an idle device, without its L2 flush (one call repeated back to back, as a profiler sees it)."""
    from vitspeed.timing import measure as time_calls

    t = time_calls({"call": fn}, device="cuda", warmup=warmup, repeats=repeats, flush_cache=False)["call"]
    return t.median_s * 1e3, t.iqr_s * 1e3


def _kernels(fn: Callable[[], Any], calls: int = PROFILED_CALLS) -> list[tuple[str, float, float]]:
    """(kernel name, launches per call, device microseconds per call) of ``fn`` by torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    totals: dict[str, list[float]] = {}
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            t = totals.setdefault(ev.name, [0, 0.0])
            t[0] += 1
            t[1] += getattr(ev, "device_time", None) or getattr(ev, "cuda_time", 0.0)
    return sorted(((n, c / calls, us / calls) for n, (c, us) in totals.items()), key=lambda r: -r[2])


def _write(chapter: str, rows: list[dict[str, Any]], dtypes: Sequence[str], root: str | os.PathLike | None,
           run_id: str | None) -> str:
    """Write ``rows`` with this machine's environment record (all ``dtypes`` named); the CSV's path."""
    from vitspeed.envinfo import environment_record
    from vitspeed.results import ResultsWriter

    record = environment_record("cuda", dtypes[0])
    record["dtype"] = ",".join(dtypes)
    writer = ResultsWriter(chapter, record, run_id=run_id, root=root)
    writer.extend(rows)
    return str(writer.path)


def measure(tokens: Sequence[int] = (4096, 36864), dtypes: Sequence[str] = ("float32", "bfloat16"),
            cores: Sequence[str] = CORES, root: str | os.PathLike | None = None, run_id: str | None = None,
            warmup: int = 5, repeats: int = 30) -> str:
    """Profile ``cores`` and the split state product on the CUDA device; returns the CSV's path.

    Rows go to ``<root>/cuda_kernels/<hardware>__<run id>.csv`` (root: the results folder, see
    :func:`vitspeed.results.write_root`) with the environment record beside them. float32 runs
    with TF32 off, as in every chapter. Raises ValueError naming the valid choices for an unknown
    core or dtype, and when no CUDA device is visible; nothing is written then.
    """
    from vitspeed.attention.registry import build_core, list_attentions
    from vitspeed.envinfo import resolve_dtype, strict_fp32

    if not torch.cuda.is_available():
        raise ValueError("cuda_kernels.measure needs a CUDA device; none is visible (valid devices here: cpu only)")
    unknown = sorted(set(cores) - set(list_attentions()))
    if unknown:
        raise ValueError(f"unknown attention {unknown}; valid: {', '.join(list_attentions())}")
    dev = torch.device("cuda")
    dts = {name: resolve_dtype(name, "cuda") for name in dtypes}
    rows: list[dict[str, Any]] = []
    with strict_fp32(), torch.no_grad():
        for name, dt in dts.items():
            for n in tokens:
                g = torch.Generator().manual_seed(0)
                q, k, v = (torch.randn(1, 6, int(n), 64, generator=g).to(dev, dt) for _ in range(3))
                for core_name in cores:
                    core = build_core(core_name, head_dim=64, num_heads=6).to(dev, dt).eval()

                    def call(core=core, q=q, k=k, v=v):
                        return core(q, k, v)

                    med, iqr = _event_ms(call, warmup, repeats)
                    for kernel, launches, us in _kernels(call):
                        rows.append({"probe": "kernel", "attention": core_name, "dtype": name, "tokens": int(n),
                                     "median_ms": med, "iqr_ms": iqr, "kernel": kernel[:200],
                                     "launches": launches, "device_us": us})
                    del core
        for n in tokens:
            g = torch.Generator().manual_seed(0)
            kt = torch.randn(1, 6, 64, int(n), generator=g).to(dev)
            v1 = torch.randn(1, 6, int(n), 65, generator=g).to(dev)
            ref = kt @ v1
            for chunks in KV_CHUNKS:
                if int(n) % chunks:
                    continue
                size = int(n) // chunks

                def split(size=size, chunks=chunks):
                    if chunks == 1:
                        return kt @ v1
                    a = kt.reshape(1, 6, 64, chunks, size).transpose(2, 3)  # (1, 6, chunks, 64, size)
                    return (a @ v1.reshape(1, 6, chunks, size, 65)).sum(2)

                err = float((split() - ref).abs().max() / ref.abs().max())
                med, iqr = _event_ms(split, warmup, repeats)
                rows.append({"probe": "kv_split", "attention": "", "dtype": "float32", "tokens": int(n),
                             "chunks": chunks, "median_ms": med, "iqr_ms": iqr, "rel_err": err})
    return _write(CHAPTER, rows, dtypes, root, run_id)


def load(roots: Sequence[str | os.PathLike] | None = None) -> pd.DataFrame:
    """The newest kernel breakdown of every hardware in the results folders; empty when there is none."""
    return read_results(CHAPTER, roots=roots, latest_only=True)



def short_kernel(name: str) -> str:
    """A kernel's name as a table prints it: template arguments and parameter lists dropped,
    namespaces kept to the last component (``void at::native::reduce_kernel<512, 1, ...>(...)`` ->
    ``reduce_kernel``); library GEMM kernels keep their name (it carries the tile shape)."""
    s = name.strip()
    if s.startswith("void "):
        s = s[5:]
    s = s.replace("(anonymous namespace)::", "")
    depth, out = 0, []
    for ch in s:  # drop everything inside <...> (nested) and from the first '(' on
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(depth - 1, 0)
        elif ch == "(" and depth == 0:
            break
        elif depth == 0:
            out.append(ch)
    s = "".join(out)
    return s.split("::")[-1] or name


def dominant_kernels(df: pd.DataFrame) -> pd.DataFrame:
    """Per hardware, core, dtype and token count: the call's median (ms), the kernels' device time per
    call (``kernels_ms``), the number of launches, and the kernel taking most of it (``top_kernel``,
    shortened) with its share of the kernels' time (``top_pct``) and its time (``top_ms``)."""
    k = df[df.probe == "kernel"] if "probe" in df else df.iloc[:0]
    out = []
    for key, g in k.groupby(["hardware", "attention", "dtype", "tokens"], sort=False):
        g = g.sort_values("device_us", ascending=False)
        total = float(g.device_us.sum())
        top = g.iloc[0]
        out.append(dict(zip(["hardware", "attention", "dtype", "tokens"], key),
                        median_ms=float(top.median_ms), kernels_ms=total / 1e3, launches=float(g.launches.sum()),
                        top_kernel=short_kernel(str(top.kernel)), top_ms=float(top.device_us) / 1e3,
                        top_pct=100 * float(top.device_us) / total if total else float("nan")))
    cols = ["hardware", "attention", "dtype", "tokens", "median_ms", "kernels_ms", "launches", "top_kernel", "top_ms",
            "top_pct"]
    return pd.DataFrame(out, columns=cols)


def kv_split_table(df: pd.DataFrame) -> pd.DataFrame:
    """The state product's median (ms) per hardware and token count (rows) and number of chunks along
    N (columns; 1 = one batched product)."""
    kv = df[df.probe == "kv_split"] if "probe" in df else df.iloc[:0]
    if not len(kv):
        return pd.DataFrame()
    kv = kv.assign(tokens=kv.tokens.astype(int), chunks=kv.chunks.astype(int))
    return kv.pivot_table(index=["hardware", "tokens"], columns="chunks", values="median_ms")


def row_err(df: pd.DataFrame, hardware: str, tokens: int, chunks: int) -> str:
    """The split product's largest relative deviation from the one product, as text (``"1e-06"``)."""
    kv = df[(df.probe == "kv_split") & (df.hardware == hardware)]
    kv = kv[(kv.tokens.astype(int) == tokens) & (kv.chunks.astype(float) == chunks)]
    return f"{float(kv.rel_err.iloc[0]):.0e} relative" if len(kv) and "rel_err" in kv else "rounding"


def finding_text(df: pd.DataFrame, hardware: str) -> str:
    """What the breakdown says on ``hardware`` at its largest token count: which kernel the linear
    cores spend most of their time in and what splitting the state product along N saves. Empty
    when ``hardware`` has no breakdown."""
    dom = dominant_kernels(df[df.hardware == hardware]) if len(df) else dominant_kernels(df)
    kv = kv_split_table(df[df.hardware == hardware]) if len(df) else pd.DataFrame()
    if not len(dom):
        return ""
    n = int(dom.tokens.max())
    lin = dom[(dom.tokens == n) & ~dom.attention.isin(["softmax", "softmax_explicit"])]
    if not len(lin):
        return ""
    # the kernel most calls spend the largest part of their time in (ties: the one taking more time)
    tally = lin.groupby("top_kernel").top_ms.agg(["size", "sum"]).sort_values(["size", "sum"], ascending=False)
    common = tally.index[0]
    same, rest = lin[lin.top_kernel == common], lin[lin.top_kernel != common]
    text = (f"At {n:,} tokens on {hardware}, {len(same)} of the {len(lin)} linear core calls profiled "
            f"({lin.attention.nunique()} cores in {lin.dtype.nunique()} precisions) spend the largest part of "
            f"their kernel time in one kernel, `{common}`: {same.top_ms.min():.2f} to {same.top_ms.max():.2f} ms, "
            f"{same.top_pct.min():.0f} to {same.top_pct.max():.0f}% of it")
    others = [f"{a} in `{k}`" for a, k in rest.groupby("attention", sort=False).top_kernel.first().items()]
    text += f" (the others: {', '.join(others)})." if others else "."
    if len(kv) and (hardware, n) in kv.index and 1 in kv.columns:
        row = kv.loc[(hardware, n)].dropna()
        best_chunks = int(row.idxmin())
        if best_chunks != 1:
            text += (f" That is the state product phi(K)^T [V, 1], a (64 x {n:,}) by ({n:,} x 65) product per "
                     f"head: as one batched product it takes {row[1]:.2f} ms, split along N into "
                     f"{best_chunks} chunks whose partial products are summed {row[best_chunks]:.2f} ms "
                     f"({row[1] / row[best_chunks]:.1f} times faster, the same result to {row_err(df, hardware, n, best_chunks)}). "
                     "As one product it has a handful of output tiles, which leave most multiprocessors idle; "
                     "at this size the linear cores lose most of their time to how that product is launched, "
                     "which no term of the roofline counts.")
        else:
            text += " Splitting the state product along N does not make it faster here."
    return text


def agreement(df: pd.DataFrame, scaling: pd.DataFrame, hardware: str) -> pd.DataFrame:
    """The breakdown's medians against the scaling chapter's core medians of the same calls (batch 1,
    same core, dtype and token count) on ``hardware``: per token count, how many calls compared, the
    lowest and highest ratio breakdown / scaling, and the lowest and highest share of a call's median
    that its kernels' device time makes up (percent; the rest is the host launching them). Empty
    when nothing matches."""
    dom = dominant_kernels(df[df.hardware == hardware]) if len(df) else dominant_kernels(df)
    cols = ["tokens", "n", "ratio_min", "ratio_max", "kernel_pct_min", "kernel_pct_max"]
    need = {"level", "batch_size", "attention", "dtype", "tokens", "median_ms", "hardware"}
    if not len(dom) or not need <= set(scaling.columns):
        return pd.DataFrame(columns=cols)
    s = scaling[(scaling.hardware == hardware) & (scaling.level == "core") & (scaling.batch_size.astype(float) == 1)]
    s = s.assign(tokens=s.tokens.astype(float).astype(int))[["attention", "dtype", "tokens", "median_ms"]]
    m = dom.assign(tokens=dom.tokens.astype(int)).merge(s, on=["attention", "dtype", "tokens"],
                                                        suffixes=("", "_scaling"))
    if not len(m):
        return pd.DataFrame(columns=cols)
    m["ratio"] = m.median_ms / m.median_ms_scaling
    m["kernel_pct"] = 100 * m.kernels_ms / m.median_ms
    out = m.groupby("tokens").agg(n=("ratio", "size"), ratio_min=("ratio", "min"), ratio_max=("ratio", "max"),
                                  kernel_pct_min=("kernel_pct", "min"), kernel_pct_max=("kernel_pct", "max"))
    out = out.reset_index()
    return out[cols]


def agreement_text(table: pd.DataFrame) -> str:
    """One sentence on :func:`agreement`'s table: how far the breakdown's medians lie from the scaling
    chapter's at each token count. Empty for an empty table."""
    if not len(table):
        return ""
    parts = [f"at {int(r.tokens):,} tokens {r.ratio_min:.2f} to {r.ratio_max:.2f} times the scaling chapter's "
             f"median ({int(r.n)} calls; the kernels' device time is {min(r.kernel_pct_min, 100):.0f} to "
             f"{min(r.kernel_pct_max, 100):.0f}% of a call)" for r in table.itertuples()]
    text = ("The breakdown's own medians (CUDA events, one call repeated back to back, where the scaling chapter "
            "interleaves all cores) are " + "; ".join(parts) + ".")
    loose = table[(table.ratio_min < 0.8) | (table.ratio_max > 1.25)]
    if len(loose):
        text += (" Where the kernels make up a small part of a call, its time is mostly the host launching them, "
                 "and that part depends on how the calls are timed (the scaling chapter's CUDA-graph column "
                 "removes it).")
    return text


def measure_models(models: Sequence[str] = ("efficientvit_b1", "deit_small_patch16_224"),
                   batch_sizes: Sequence[int] = (1, 64), dtypes: Sequence[str] = ("float32", "bfloat16"),
                   root: str | os.PathLike | None = None, run_id: str | None = None, warmup: int = 3,
                   repeats: int = 10, img_size: int = 224) -> str:
    """Every CUDA kernel of one forward pass of whole models (as the hybrids chapter builds them: timm
    or study models, convolution-BatchNorm pairs folded in EfficientViT and QT-ViT), with launches
    and device time per pass, beside the pass's CUDA-event median and IQR (ms). Rows go to
    ``<root>/cuda_model_kernels/<hardware>__<run id>.csv``; returns its path. ValueError (nothing
    written) without a CUDA device or for an unknown model or dtype."""
    from vitspeed.envinfo import resolve_dtype, strict_fp32
    from vitspeed.models import create_model
    from vitspeed.studies.hybrids import MODELS, fold_conv_bn

    if not torch.cuda.is_available():
        raise ValueError("cuda_kernels.measure_models needs a CUDA device; none is visible (valid devices here: cpu only)")
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; valid: {', '.join(MODELS)}")
    dts = {name: resolve_dtype(name, "cuda") for name in dtypes}
    rows: list[dict[str, Any]] = []
    with strict_fp32(), torch.no_grad():
        for name in models:
            for b in batch_sizes:
                for dt_name, dt in dts.items():
                    model = create_model(name, img_size=img_size)
                    if name.startswith(("efficientvit_", "qtvit_")):
                        model = fold_conv_bn(model)
                    model = model.to("cuda", dt).eval()
                    x = torch.randn(int(b), 3, img_size, img_size, device="cuda", dtype=dt)

                    def call(model=model, x=x):
                        return model(x)

                    med, iqr = _event_ms(call, warmup, repeats)
                    for kernel, launches, us in _kernels(call, calls=5):
                        rows.append({"model": name, "batch_size": int(b), "dtype": dt_name, "img_size": img_size,
                                     "median_ms": med, "iqr_ms": iqr, "kernel": kernel[:200], "launches": launches,
                                     "device_us": us})
                    del model, x
    return _write(MODEL_CHAPTER, rows, dtypes, root, run_id)


def model_launch_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per hardware, model, batch and dtype: the pass's median (ms), its kernels' device time (ms),
    the kernel launches per pass, and how many of them are memory-layout conversions (cuDNN's
    ``nchwToNhwc`` / ``nhwcToNchw`` kernels, launched around a convolution it runs in channels-last
    layout on a channels-first model)."""
    out = []
    for key, g in df.groupby(["hardware", "model", "batch_size", "dtype"], sort=True):
        layout = g.kernel.astype(str).str.contains("nchwToNhwc|nhwcToNchw", regex=True)
        out.append(dict(zip(["hardware", "model", "batch_size", "dtype"], key), median_ms=float(g.median_ms.iloc[0]),
                        kernels_ms=float(g.device_us.sum()) / 1e3, launches=float(g.launches.sum()),
                        layout_launches=float(g.launches[layout].sum())))
    return pd.DataFrame(out, columns=["hardware", "model", "batch_size", "dtype", "median_ms", "kernels_ms", "launches",
                                      "layout_launches"])


def model_layout_text(table: pd.DataFrame, hardware: str) -> str:
    """What :func:`model_launch_table` says on ``hardware``: per model and batch, the launches of a
    float32 pass against a lower-precision one and how many of the latter are layout conversions.
    Empty when ``hardware`` has no rows or no model was measured in float32 and another dtype."""
    t = table[table.hardware == hardware] if len(table) else table
    parts = []
    for (model, b), g in t.groupby(["model", "batch_size"], sort=True):
        g = g.set_index("dtype")
        if "float32" not in g.index or len(g) < 2:
            continue
        f = g.loc["float32"]
        for dt, r in g.drop(index="float32").iterrows():
            parts.append(f"{model} at batch {int(b)} launches {f.launches:.0f} kernels per pass in float32 "
                         f"({f.median_ms:.2f} ms) and {r.launches:.0f} in {dt} ({r.median_ms:.2f} ms), "
                         f"{r.layout_launches:.0f} of them layout conversions")
    if not parts:
        return ""
    return (f"On {hardware}, " + "; ".join(parts) + ". A layout conversion is cuDNN's `nchwToNhwc` or "
            "`nhwcToNchw` kernel, launched around a convolution it runs in channels-last layout on a model "
            "kept channels-first; where a model's lower-precision pass launches many of them, its timing "
            "measures the conversions and their launches as much as the convolutions' arithmetic, and a "
            "channels-last model (not measured here) would avoid them.")
