"""Shared machinery of the comparison chapters: models and attention cores timed side by side.

Every comparison times all its candidates in one interleaved measurement (A B C A B C ...), after
checking each output is finite, and records FLOPs (MACs and elementwise ops, batch included),
parameters and peak memory beside median latency and IQR. Sweeps write tidy rows through
:class:`vitspeed.results.ResultsWriter`, resume by run id and record out-of-memory as ``status='oom'``.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import warnings
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
import torch

from vitspeed.attention import build_core
from vitspeed.compiling import CompileFailed, compile_module, no_recompiles
from vitspeed.disturbance import CopyProbe, disturbance_between, disturbance_over, read_counters, take_timed_windows
from vitspeed.envinfo import environment_record, resolve_device, resolve_dtype, strict_fp32, tf32_state
from vitspeed.flops import count_flops, count_params
from vitspeed.models import create_model
from vitspeed.results import ResultsWriter, read_csv
from vitspeed import timing as _timing
from vitspeed.timing import (NonFiniteOutput, check_result, cuda_graph_callable, deadline_from_env,
                             empty_cuda_cache, forward_peak_memory, is_oom_error, measure, samples_text, sweep,
                             timing_group)
from vitspeed.roofline import roof_compute_dtype
from vitspeed.traffic import sdpa_backend, trace_traffic

__all__ = ["Candidate", "compare_models", "compare_models_finite", "compare_cores", "compare_cores_finite",
           "implied_attention", "approximation", "run_sweep", "candidate", "core_grid", "ratio_of"]

Candidate = dict[str, Any]  # {"label", "model" | "attention", "options", "ffn", "ffn_options", "prepare", "compile"}


def candidate(label: str, **spec: Any) -> Candidate:
    """A candidate for :func:`compare_models` (model=..., attention=..., options=...) or
    :func:`compare_cores` (attention=..., options=..., and compile=True to time it compiled by
    :func:`vitspeed.compiling.compile_module`)."""
    return {"label": label, **spec}


def _oom_row(base: dict[str, Any], err: BaseException) -> dict[str, Any]:
    return {**base, "status": "oom", "error": str(err).splitlines()[0][:200] if str(err) else type(err).__name__}


# (model, img_size, attention, options, ffn, ffn_options, prepare) -> per-image counts: a sweep
# over batch sizes and dtypes rebuilds the same model many times; tracing it for FLOPs costs seconds.
_COUNT_CACHE: dict[tuple, dict[str, float]] = {}


def _model_counts(model: torch.nn.Module, cand: Candidate, img_size: int) -> dict[str, float]:
    """gmacs, g_elementwise (per image) and params_m of a candidate's model, cached per configuration."""
    key = (cand["model"], img_size, cand.get("attention"), repr(cand.get("options")), cand.get("ffn"),
           repr(cand.get("ffn_options")), cand.get("prepare"))
    if key not in _COUNT_CACHE:  # traced where the model already is (the timing device): fast, and no
        p = next(iter(model.parameters()), None)  # huge activation has to fit in host memory too
        fc = count_flops(model, torch.zeros(1, 3, img_size, img_size, device=p.device if p is not None else "cpu",
                                            dtype=p.dtype if p is not None else torch.float32))
        _COUNT_CACHE[key] = {"gmacs": fc.macs / 1e9, "g_elementwise": fc.elementwise / 1e9,
                             "params_m": count_params(model) / 1e6}
    return dict(_COUNT_CACHE[key])


def _prepare(fns: dict, rows: dict, label: str, base: dict[str, Any], make_fn, dev: torch.device,
             counts=None, traffic: bool = False) -> None:
    """Build the timed callable (``make_fn()`` moves weights and inputs to the device), count its
    FLOPs there (``counts()`` -> columns), measure its peak memory, check its output and record the
    SDPA backend it uses (and, with ``traffic``, the bytes one call moves, in the timed dtype); a
    candidate that runs out of memory becomes an OOM row, one whose output has NaN/inf a
    ``nonfinite`` row (the others are timed without it, nothing is rebuilt), one that cannot be
    compiled a ``compile_error`` row. A compiled callable carries its eager twin as ``fn.eager``: the SDPA
    backend is read off that (the compiled code is opaque to dispatch tracing), and no traffic is
    traced (a fused loop moves less than the eager ops it replaces; what it moves is not counted)."""
    extra: dict[str, Any] = {}
    try:
        fn = make_fn()
        extra.update(getattr(fn, "compile_info", {}))
        extra.update(counts() if counts is not None else {})  # kept in the row if the forward runs out of memory
        out, peak, _ = forward_peak_memory(fn, dev)
        try:
            check_result(out, name=label)  # the output of that call: no forward run again for it
        except NonFiniteOutput as err:  # NaN/inf (e.g. a kernel overflowing in float16): recorded, not timed
            rows[label] = {**base, **extra, "status": "nonfinite", "error": str(err).splitlines()[0][:200]}
            return
        finally:
            del out
        extra["sdpa_backend"] = sdpa_backend(getattr(fn, "eager", fn))
        if traffic and not hasattr(fn, "eager"):
            moved = trace_traffic(fn)
            extra["bytes_moved"] = moved.total
            extra["compute_dtype"] = roof_compute_dtype(dev.type, base.get("dtype", ""), moved.product_dtype,
                                                        extra["sdpa_backend"])
    except CompileFailed as err:
        rows[label] = {**base, **extra, "status": err.status, "error": str(err)[:200]}
        warnings.warn(f"{label} not timed: {err}", RuntimeWarning, stacklevel=2)
        return
    except BaseException as err:  # noqa: BLE001 - only out-of-memory is recorded, the rest re-raised
        if not is_oom_error(err):
            raise
        rows[label] = _oom_row({**base, **extra}, err)
        return
    fns[label] = fn
    rows[label] = {**base, "peak_mem_mb": peak, **extra}


#: Largest relative difference (max |compiled - eager| / max |eager|) a compiled candidate may show
#: before it is recorded as ``mismatch`` instead of timed: reordered float32 sums differ by ~1e-6,
#: half-precision ones by a few units of their 8-bit mantissa.
COMPILE_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6, torch.bfloat16: 5e-2, torch.float16: 2e-2}


def _compiled_call(module: torch.nn.Module, *inputs: torch.Tensor) -> Callable[[], Any]:
    """A callable running ``module`` compiled on ``inputs`` (:func:`vitspeed.compiling.compile_module`),
    carrying its eager twin (``.eager``) and ``.compile_info``: compile_s, compile_cache_hits and
    compile_rel_err, the largest |compiled - eager| over the largest |eager| on these inputs.
    Raises :class:`~vitspeed.compiling.CompileFailed` (status ``mismatch``) past :data:`COMPILE_TOLERANCE`."""
    fn, info = compile_module(module, *inputs)
    with torch.inference_mode():
        got, want = fn(*inputs), module(*inputs)
        err = float((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-30))
    tol = COMPILE_TOLERANCE.get(want.dtype, 1e-3)
    del got, want
    if not err <= tol:  # also catches nan
        raise CompileFailed(f"compiled {type(module).__name__} differs from eager by {err:.2g} (relative), "
                            f"more than {tol:g}", status="mismatch")

    def call():
        return fn(*inputs)
    call.eager = lambda: module(*inputs)
    call.compile_info = {"compile_s": info["compile_s"], "compile_cache_hits": info["cache_hits"],
                         "compile_rel_err": err}
    return call


def _use_graphs(cuda_graph: bool | None, dev: torch.device, batch_size: int) -> bool:
    """CUDA-graph replay timing: by default (None) on CUDA at batch 1, where launches dominate."""
    if cuda_graph is None:
        return dev.type == "cuda" and batch_size == 1
    if cuda_graph and dev.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a CUDA device, got {str(dev)!r}; valid choices: "
                         "cuda_graph=None (automatic) or False on cpu")
    return bool(cuda_graph)


class _CandidateOOM(RuntimeError):
    """A timed callable ran out of memory; ``label`` says which (the cause is chained)."""

    def __init__(self, label: str) -> None:
        super().__init__(f"{label} ran out of memory while being timed")
        self.label = label


class _CandidateCompileError(RuntimeError):
    """A compiled callable failed while being timed (it had to compile again, say); ``label`` says which."""

    def __init__(self, label: str, cause: BaseException) -> None:
        text = str(cause).strip()
        why = text.splitlines()[0][:160] if text else type(cause).__name__
        super().__init__(f"{label} failed while being timed: {why}")
        self.label = label


def _tagged(label: str, fn):
    """``fn`` whose out-of-memory error names the candidate, so one candidate can be dropped; for a
    compiled callable (one with ``.eager``) any other error is named too (an eager one's propagates)."""
    def call():
        try:
            return fn()
        except BaseException as err:  # noqa: BLE001 - translated when it concerns one candidate, else re-raised
            if is_oom_error(err):
                raise _CandidateOOM(label) from err
            if hasattr(fn, "eager") and isinstance(err, Exception):
                raise _CandidateCompileError(label, err) from err
            raise
    return call


#: Graph replay removes launch overhead, which matters only for short calls: a candidate whose eager
#: median exceeds this (ms) is not captured (its eager time is kept; ``graph_error`` says why). This
#: also keeps large-N groups from holding several N x N graph pools at once.
GRAPH_MAX_MS = 5.0


def _time_all(fns: dict, rows: dict, dev: torch.device, warmup: int, repeats: int, items_per_call: int,
              graphs: bool = False) -> None:
    """Time the prepared callables in one interleaved measurement and fill in their rows; with
    ``graphs``, time their CUDA-graph replays too (a second interleaved measurement, columns
    graph_median_ms / graph_iqr_ms; a callable that cannot be captured gets graph_error).

    A callable that runs out of memory while being timed becomes an OOM row, a compiled one that
    fails (e.g. it would have to compile again) a ``compile_error`` row, and the others are timed
    again without it (the memory check before timing runs one call; warm-up can need more)."""
    # a compiled callable (one with an eager twin) may not compile again inside a timed call
    compiled = any(hasattr(fn, "eager") for fn in fns.values())
    while fns:
        try:
            with no_recompiles() if compiled else contextlib.nullcontext():
                timings = measure({label: _tagged(label, fn) for label, fn in fns.items()}, device=str(dev),
                                  warmup=warmup, repeats=repeats)
            break
        except (_CandidateOOM, _CandidateCompileError) as err:
            kept = {k: v for k, v in rows[err.label].items() if k != "peak_mem_mb"}
            if isinstance(err, _CandidateOOM):
                rows[err.label] = _oom_row(kept, err.__cause__ or err)
            else:
                rows[err.label] = {**kept, "status": "compile_error", "error": str(err)[:200]}
                warnings.warn(str(err), RuntimeWarning, stacklevel=2)
            del fns[err.label]
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                empty_cuda_cache()
    else:
        return
    group = timing_group()
    for label, t in timings.items():
        r = t.row()
        rows[label].update(median_ms=r["median_ms"], iqr_ms=r["iqr_ms"], p10_ms=r["p10_ms"],
                           p90_ms=r["p90_ms"], n=r["n"], throughput=items_per_call / t.median_s,
                           page_faults_per_call=r["page_faults_per_call"], samples_ms=samples_text(t),
                           timing_group=group, status="ok")
    if not graphs:
        return
    if _timing.GRAPHS_DISABLED:
        for label in fns:
            rows[label]["graph_error"] = f"not captured: an earlier capture failed ({_timing.GRAPHS_DISABLED[0]})"
        return
    replays = {}
    empty_cuda_cache()  # hand the eager runs' cached blocks back: each graph keeps its own pool
    short = {}
    for label, fn in fns.items():
        if rows[label]["median_ms"] > GRAPH_MAX_MS:
            rows[label]["graph_error"] = (f"not captured: {rows[label]['median_ms']:.1f} ms eager, launch overhead "
                                          f"negligible above {GRAPH_MAX_MS:g} ms")
        else:
            short[label] = fn
    for label, fn in short.items():
        try:
            replays[label], _ = cuda_graph_callable(fn, dev)
        except RuntimeError as err:  # an op that syncs with the host cannot be captured; nor can a
            # graph whose pool does not fit beside the others (huge N x N maps): the eager timing stands
            message = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            rows[label]["graph_error"] = message
            torch.cuda.synchronize(dev)
            if not is_oom_error(err):  # the allocator may be left mid-capture: no empty_cache, no more captures
                _timing.GRAPHS_DISABLED.append(f"{label}: {message}")
                warnings.warn(f"CUDA-graph capture of {label} failed ({message}); graph replay is off for the "
                              "rest of this process, eager timings are kept", RuntimeWarning, stacklevel=2)
                break
            empty_cuda_cache()
    if replays:
        for label, t in measure(replays, device=str(dev), warmup=warmup, repeats=repeats).items():
            rows[label].update(graph_median_ms=t.median_s * 1e3, graph_iqr_ms=t.iqr_s * 1e3)
    for label in fns:
        if label not in replays and "graph_error" not in rows[label]:
            rows[label]["graph_error"] = f"not captured: an earlier capture failed ({_timing.GRAPHS_DISABLED[0]})"
    del replays
    torch.cuda.synchronize(dev)
    empty_cuda_cache()


def compare_models(candidates: Sequence[Candidate], img_size: int = 224, batch_size: int = 1,
                   device: str = "cpu", dtype: str = "float32", warmup: int = 3,
                   repeats: int = 10, cuda_graph: bool | None = None) -> list[dict[str, Any]]:
    """Time whole models interleaved at one (resolution, batch, dtype); one row per candidate.

    A candidate's optional ``prepare`` (callable model -> model) runs right after the model is
    built, before counting and timing (e.g. :func:`vitspeed.models.hvit.merge_ffns`).

    Row: label, model, attention, img_size, batch_size, device, dtype, threads, tf32, median_ms,
    iqr_ms, p10_ms, p90_ms (ms per batch), throughput (images/s), peak_mem_mb (rise during one
    forward), gmacs and g_elementwise (per image, batch 1), params_m (millions), sdpa_backend (see
    :func:`vitspeed.traffic.sdpa_backend`), status; with CUDA-graph replay (``cuda_graph``: default
    on CUDA at batch 1) graph_median_ms and graph_iqr_ms, or graph_error. Candidates with
    ``compile=True`` are timed compiled, as in :func:`compare_cores` (``compiled``, ``compile_s``,
    ``compile_rel_err``; ``status='compile_error'`` when the compiler fails).
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev.type)
    graphs = _use_graphs(cuda_graph, dev, batch_size)
    any_compiled = any(c.get("compile") for c in candidates)
    fns, rows = {}, {}
    for cand in candidates:
        label = cand["label"]
        base = {"label": label, "model": cand["model"], "attention": cand.get("attention") or "stock",
                "img_size": img_size, "batch_size": batch_size, "device": dev.type, "dtype": dtype,
                "threads": torch.get_num_threads(), "tf32": tf32_state(dev, dt)}
        if any_compiled:
            base["compiled"] = bool(cand.get("compile"))
        model = create_model(cand["model"], img_size=img_size, attention=cand.get("attention"),
                             attention_options=cand.get("options"), ffn=cand.get("ffn"),
                             ffn_options=cand.get("ffn_options"))
        if cand.get("prepare") is not None:  # e.g. fold re-parameterizable branches for inference
            model = cand["prepare"](model)

        def make_fn(model=model, compiled=bool(cand.get("compile"))):
            m = model.to(dev, dt).eval()
            x = torch.randn(batch_size, 3, img_size, img_size, device=dev, dtype=dt)
            return _compiled_call(m, x) if compiled else (lambda: m(x))

        _prepare(fns, rows, label, base, make_fn, dev,
                 counts=lambda model=model, cand=cand: _model_counts(model, cand, img_size))
    _time_all(fns, rows, dev, warmup, repeats, items_per_call=batch_size, graphs=graphs)
    return [rows[c["label"]] for c in candidates]


def _finite(compare, candidates: Sequence[Candidate], failed_fields, **kwargs: Any) -> list[dict[str, Any]]:
    """Run ``compare``; a candidate whose output has NaN/inf becomes a ``status='nonfinite'`` row
    (``failed_fields(candidate)`` gives its identifying columns) and the rest are timed again without it.
    The comparisons here record such a candidate themselves before timing; this catches a
    ``compare`` that raises instead (every candidate is then prepared again)."""
    remaining = list(candidates)
    failed: dict[str, dict[str, Any]] = {}
    while True:
        try:
            rows = compare(remaining, **kwargs) if remaining else []
            break
        except NonFiniteOutput as err:
            bad = next((c for c in remaining if c["label"] == err.name), None)
            if bad is None:
                raise
            failed[bad["label"]] = {**failed_fields(bad), "batch_size": kwargs.get("batch_size", 1),
                                    "dtype": kwargs.get("dtype", "float32"), "status": "nonfinite",
                                    "error": str(err).splitlines()[0][:200]}
            remaining = [c for c in remaining if c["label"] != bad["label"]]
    by_label = {r["label"]: r for r in rows}
    return [by_label.get(c["label"]) or failed[c["label"]] for c in candidates]


def compare_models_finite(candidates: Sequence[Candidate], **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`compare_models`, but a candidate whose output has NaN/inf becomes a ``status='nonfinite'`` row.

    The others are then timed together without it (e.g. a model overflowing in float16), instead of
    the whole group failing. ``kwargs`` are those of :func:`compare_models`; rows keep candidate order.
    """
    return _finite(compare_models, candidates,
                   lambda c: {"label": c["label"], "model": c["model"], "attention": c.get("attention") or "stock",
                              "img_size": kwargs.get("img_size", 224)}, **kwargs)


# (attention, options, tokens, head_dim, heads, batch) -> counts of a core, as _COUNT_CACHE for models
_CORE_COUNT_CACHE: dict[tuple, dict[str, int]] = {}


def compare_cores(candidates: Sequence[Candidate], tokens: int, head_dim: int = 64, heads: int = 6,
                  batch_size: int = 1, device: str = "cpu", dtype: str = "float32", warmup: int = 3,
                  repeats: int = 10, seed: int = 0, cuda_graph: bool | None = None) -> list[dict[str, Any]]:
    """Time attention cores alone on random (B, heads, N, head_dim) q, k, v, interleaved.

    Row: label, attention, tokens, head_dim, heads, batch_size, device, dtype, threads, tf32,
    median_ms, iqr_ms, throughput (calls/s), peak_mem_mb, macs and elementwise (whole batch),
    bytes_moved (one call, in the timed dtype; :func:`vitspeed.traffic.trace_traffic`), compute_dtype
    (the dtype its matrix products ran in: float32 for a bfloat16 core that upcasts), sdpa_backend,
    status; graph_median_ms / graph_iqr_ms (or graph_error) as in :func:`compare_models`.

    When any candidate has ``compile=True``, every row also has ``compiled`` (bool), and compiled
    rows have ``compile_s`` (seconds of the first, compiling call; :func:`vitspeed.compiling.compile_module`),
    ``compile_cache_hits`` (graphs found in the compiler's cache) and ``compile_rel_err`` (max
    |compiled - eager| / max |eager| on the timed inputs). A core the compiler fails on gets
    ``status='compile_error'``, one whose compiled output differs from eager beyond
    :data:`COMPILE_TOLERANCE` ``status='mismatch'``, and the others are timed. No compiled core may
    compile again while timed (:func:`vitspeed.compiling.no_recompiles`): one that would is dropped
    as a ``compile_error`` row and the rest are timed again.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev.type)
    graphs = _use_graphs(cuda_graph, dev, batch_size)
    any_compiled = any(c.get("compile") for c in candidates)
    g = torch.Generator().manual_seed(seed)
    fns, rows = {}, {}
    # every candidate gets the same q, k, v (per role and shape), drawn once and placed on the device once
    drawn: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}
    placed: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}

    def input_(role: str, shape: tuple[int, ...], on_device: bool = False) -> torch.Tensor:
        key = (role, shape)
        if key not in drawn:
            drawn[key] = torch.randn(shape, generator=g)
        if not on_device:
            return drawn[key]
        if key not in placed:
            placed[key] = drawn[key].to(dev, dt)
        return placed[key]

    for cand in candidates:
        label = cand["label"]
        base = {"label": label, "attention": cand["attention"], "tokens": tokens, "head_dim": head_dim,
                "heads": heads, "batch_size": batch_size, "device": dev.type, "dtype": dtype,
                "threads": torch.get_num_threads(), "tf32": tf32_state(dev, dt)}
        if any_compiled:
            base["compiled"] = bool(cand.get("compile"))
        core = build_core(cand["attention"], head_dim=head_dim, num_heads=heads, **(cand.get("options") or {}))
        hq = getattr(core, "num_computed", heads)
        # q and k of the computed heads (hallucinated attention computes fewer), v of all heads
        roles = [("q", (batch_size, hq, tokens, head_dim)), ("k", (batch_size, hq, tokens, head_dim)),
                 ("v", (batch_size, heads, tokens, head_dim))]
        for role, shape in roles:
            input_(role, shape)  # drawn in candidate order, so the values do not depend on which ran first
        key = (cand["attention"], repr(cand.get("options")), tokens, head_dim, heads, batch_size)

        def make_fn(core=core, roles=roles, compiled=bool(cand.get("compile"))):
            c = core.to(dev, dt).eval()
            q, k, v = (input_(role, shape, on_device=True) for role, shape in roles)
            return _compiled_call(c, q, k, v) if compiled else (lambda: c(q, k, v))

        def counts(core=core, roles=roles, key=key) -> dict[str, int]:
            # traced on the timing device (where make_fn put the core); counts do not depend on the
            # values or the dtype, so they are cached across dtypes
            if key not in _CORE_COUNT_CACHE:
                fc = count_flops(core.eval(), tuple(input_(role, shape, on_device=True) for role, shape in roles))
                _CORE_COUNT_CACHE[key] = {"macs": fc.macs, "elementwise": fc.elementwise}
            return _CORE_COUNT_CACHE[key]

        _prepare(fns, rows, label, base, make_fn, dev, counts=counts, traffic=True)
    _time_all(fns, rows, dev, warmup, repeats, items_per_call=1, graphs=graphs)
    return [rows[c["label"]] for c in candidates]


def compare_cores_finite(candidates: Sequence[Candidate], **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`compare_cores`, but a core whose output has NaN/inf becomes a ``status='nonfinite'`` row.

    The others are then timed together without it (e.g. a kernel overflowing in float16), as in
    :func:`compare_models_finite`; ``kwargs`` are those of :func:`compare_cores`; rows keep candidate order.
    """
    return _finite(compare_cores, candidates,
                   lambda c: {"label": c["label"], "attention": c["attention"], "tokens": kwargs.get("tokens")},
                   **kwargs)


def core_grid(rows: pd.DataFrame, dtype: str, **match: Any) -> tuple[int, int, pd.DataFrame, pd.DataFrame]:
    """The core rows of one run in ``dtype`` (``kind == 'core'``, status ok, and every column named in
    ``match`` equal to its value) as two token x label tables, median ms and MACs, with the smallest
    and largest token count at which fused softmax (label ``softmax``) was measured: (n_lo, n_hi,
    ms, macs). Rows that are not ok (out of memory, non-finite) are left out. Raises ValueError when
    fused softmax was never measured there."""
    df = rows[(rows.kind == "core") & (rows.dtype == dtype)]
    if "status" in df:
        df = df[df.status.fillna("ok") == "ok"]
    for col, value in match.items():
        df = df[df[col].astype(type(value)) == value]
    df = df.assign(tokens=df.tokens.astype(int))
    ref_tokens = sorted(df[df.label == "softmax"].tokens.unique())
    if not ref_tokens:
        where = "".join(f" at {col.replace('_', ' ')} {value}" for col, value in match.items())
        raise ValueError(f"no fused softmax core measured in {dtype}{where}; "
                         f"dtypes present: {sorted(rows.dtype.unique())}")
    ms = df.pivot_table(index="tokens", columns="label", values="median_ms", aggfunc="median")
    macs = df.pivot_table(index="tokens", columns="label", values="macs", aggfunc="median")
    return int(ref_tokens[0]), int(ref_tokens[-1]), ms, macs


def ratio_of(values: pd.Series, a: str, b: str) -> float:
    """``values[a] / values[b]``, nan when either is missing (e.g. a variant out of memory there)."""
    return float(values[a] / values[b]) if a in values.index and b in values.index else math.nan


def implied_attention(attention: str, q: torch.Tensor, k: torch.Tensor, **options: Any) -> torch.Tensor:
    """The (B, h, N, N) attention matrix a variant applies, read off by feeding V = identity.

    Every variant's output is (implied matrix) @ V, so with V = I_N the output is the matrix
    itself. Options that add a V-only path (FLatten's depthwise conv) must be disabled by the caller.
    """
    B, h, N, d = q.shape
    core = build_core(attention, head_dim=d, num_heads=h, **options).to(q.dtype)
    eye = torch.eye(N, dtype=q.dtype).expand(B, h, N, N)
    with torch.no_grad():
        return core(q, k, eye)


def approximation(candidates: Sequence[Candidate], tokens: int = 196, head_dim: int = 64, heads: int = 6,
                  batch_size: int = 2, seed: int = 0, reference: str = "softmax") -> list[dict[str, Any]]:
    """How closely each variant reproduces ``reference`` attention on the same random q, k, v.

    q, k, v are standard normal (so q.k/sqrt(d) is standard normal: softmax rows are moderately
    peaked). Row: label, rel_error = ||O - O_ref|| / ||O_ref|| (Frobenius, float64), row_entropy
    (mean Shannon entropy in nats of the implied attention rows, negative weights clipped at 0) and
    the reference's entropy; uniform rows have entropy ln N.
    """
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch_size, heads, tokens, head_dim, generator=g, dtype=torch.float64) for _ in range(3))

    def entropy(a: torch.Tensor) -> float:
        p = a.clamp_min(0)
        p = p / p.sum(-1, keepdim=True).clamp_min(1e-30)
        return float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean())

    ref_map = implied_attention(reference, q, k)
    ref_out = ref_map @ v
    rows = []
    for cand in candidates:
        opts = dict(cand.get("options") or {})
        if cand["attention"] == "focused":
            opts.setdefault("kernel_size", 0)
        amap = implied_attention(cand["attention"], q, k, **opts)
        out = amap @ v
        rows.append({"label": cand["label"], "attention": cand["attention"], "tokens": tokens,
                     "head_dim": head_dim, "rel_error": float((out - ref_out).norm() / ref_out.norm()),
                     "row_entropy": entropy(amap), "reference_entropy": entropy(ref_map),
                     "uniform_entropy": math.log(tokens)})
    return rows


#: Percent of steal or CPU pressure above which a measured group is reported as disturbed.
DISTURBED_PCT = 10.0

#: A group whose copy bandwidth (``copy_gbps``) is below this fraction of the median reading of its
#: run so far, or above its inverse, is reported as disturbed. Both ways: on a shared host a
#: neighbour's traffic lowers it, and the hypervisor moving our virtual CPUs to other cores can
#: raise it while compute gets slower (seen on the machine of the published CPU runs).
COPY_DEVIATION = 0.75


def too_busy(pct: float | None) -> bool:
    """Whether a steal or CPU-pressure reading (percent) exceeds :data:`DISTURBED_PCT`; False for none."""
    return pct is not None and pct > DISTURBED_PCT


def copy_deviates(copy_gbps: float | None, reference_gbps: float | None) -> bool:
    """Whether a copy-bandwidth reading (GB/s) lies off ``reference_gbps`` (a run's median reading) by
    more than :data:`COPY_DEVIATION` either way; False when either is missing (None or NaN)."""
    if copy_gbps is None or reference_gbps is None or math.isnan(copy_gbps) or math.isnan(reference_gbps) \
            or not reference_gbps:
        return False
    return not COPY_DEVIATION * reference_gbps <= copy_gbps <= reference_gbps / COPY_DEVIATION


def _warn_if_disturbed(chapter: str, rows: Sequence[dict[str, Any]], disturbed: dict[str, Any],
                       copy_reference: float | None = None) -> None:
    worst = {k: v for k, v in disturbed.items() if k in ("steal_pct", "cpu_pressure_pct") and too_busy(v)}
    copy = disturbed.get("copy_gbps")
    odd_copy = copy_deviates(copy, copy_reference)
    if (worst or odd_copy) and rows:
        keys = {k: rows[0].get(k) for k in ("level", "kind", "model", "tokens", "img_size", "batch_size", "dtype")
                if rows[0].get(k) is not None}
        why = [f"{k} {v}" for k, v in worst.items()]
        causes = ["other work competed with it"] if worst else []
        if odd_copy:
            why.append(f"copy_gbps {copy} against a run median of {copy_reference:.1f}")
            causes.append("the host's memory system ran differently from the rest of the run")
        warnings.warn(f"{chapter}: {keys} was measured while the machine was busy or changed "
                      f"({', '.join(why)}); {' and '.join(causes)}, "
                      "so re-run it on an idle machine before reading its timings", RuntimeWarning, stacklevel=3)


def run_sweep(chapter: str, configs: Iterable[dict[str, Any]], run_group, key_fields: Sequence[str],
              device: str = "cpu", dtypes: Iterable[str] = ("float32",), run_id: str | None = None) -> pd.DataFrame:
    """Run ``run_group(config) -> rows`` for every config, writing rows to data/<chapter>.

    Measured under :func:`vitspeed.envinfo.strict_fp32` (float32 is IEEE float32 on CUDA; the
    environment record and every row's ``tf32`` say so). Resumes an interrupted run with the same
    ``run_id`` (configs already written are skipped);
    a config that runs out of memory as a whole is recorded with status 'oom'. Every row gets
    ``steal_pct`` and ``cpu_pressure_pct`` over the timed rounds of its config
    (:func:`vitspeed.disturbance.disturbance_over` the windows :func:`vitspeed.timing.measure` recorded;
    over the whole config where none were) and, on the CPU, ``copy_gbps``: the lower of
    two :class:`vitspeed.disturbance.CopyProbe` readings of the memory bandwidth, just before and just
    after the config (GB/s). A config measured with more than :data:`DISTURBED_PCT` percent of steal or
    pressure, or with a copy bandwidth off the median reading of the run so far by more than
    :data:`COPY_DEVIATION` either way, gets a RuntimeWarning naming it. Returns this run's rows.
    Past the deadline in ``$VITSPEED_DEADLINE`` (set by ``vitspeed run --time-budget``) no new config
    starts: :class:`vitspeed.timing.SweepIncomplete` is raised with the finished rows written.
    """
    dev = resolve_device(device)
    dtypes = list(dtypes)
    if not dtypes:
        raise ValueError("run_sweep needs at least one dtype; valid names: float32, bfloat16, float16")
    for dt in dtypes:
        resolve_dtype(dt, dev.type)
    with strict_fp32():  # fp32 rows are IEEE fp32 on CUDA (TF32 off for matmuls and convolutions)
        # environment_record takes one dtype; the run's list is recorded as text.
        env = environment_record(str(dev), dtypes[0])
        env["dtype"] = ",".join(dtypes)
        writer = ResultsWriter(chapter, env, run_id=run_id)
        done = writer.done_keys(key_fields)
        probe = CopyProbe() if dev.type == "cpu" else None
        copy_before = probe() if probe else None
        copy_readings = [copy_before]
        take_timed_windows()  # what was timed before this sweep is not its concern
        before = read_counters()
        for result in sweep(list(configs), lambda cfg: {"rows": run_group(cfg)}, done=done,
                            key_fields=key_fields, desc=chapter, deadline=deadline_from_env()):
            # how disturbed the machine was while this config was timed (building models and counting
            # their FLOPs excluded; the whole config where nothing went through measure): every row says so
            timed = take_timed_windows()
            disturbed = disturbance_over(timed) if timed else disturbance_between(before, read_counters())
            if probe is not None:
                copy_after = probe()
                disturbed["copy_gbps"] = round(min(copy_before, copy_after), 1)
                copy_readings.append(copy_after)
                copy_before = copy_after
            rows = result["rows"] if "rows" in result else [result]
            writer.extend([{**row, **disturbed} for row in rows])
            _warn_if_disturbed(chapter, rows, disturbed,
                               statistics.median(copy_readings) if probe is not None else None)
            before = read_counters()
    return read_csv(writer.path) if writer.path.exists() else pd.DataFrame()
