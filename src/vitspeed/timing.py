"""Latency harness: interleaved timing of callables, whole-model benchmarks and OOM-tolerant sweeps.

Units: :class:`Timing` holds **seconds per call** (``samples``, ``median_s`` ...); the rows made by
:meth:`Timing.row` and :func:`benchmark_model` hold **milliseconds per call** (``median_ms`` ...) and
images per second (``throughput``).

How a measurement is taken (see :func:`measure`):

- every callable runs under ``torch.inference_mode``; the caller prepares its inputs beforehand;
- warm-up calls first, then a calibration that picks how many calls make one sample, so that a CPU
  sample lasts at least ``min_sample_s`` (1 ms by default, well above ``perf_counter``'s
  resolution and the timer's own overhead); on CUDA one call per sample, timed with CUDA events;
- then rounds: each round takes one sample of every callable (A B, then B A, ...), so slow drift
  (clock boost, thermal state, other tenants) hits all of them alike;
- the Python garbage collector is paused during the rounds;
- median and spread (IQR, 10th/90th percentiles) are reported, never the minimum or the mean alone;
- on the CPU, the process's minor page faults during the timed samples, per call
  (``page_faults_per_call``): a call that keeps taking fresh pages (an allocator handing memory back
  to the OS, a fragmented heap) pays the kernel's page-fault cost inside its timing, which is not the
  cost of its arithmetic. On a warm, kept heap it is near 0.
"""
from __future__ import annotations

import contextlib
import gc
import os
import re
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from vitspeed.disturbance import timed_window
from vitspeed.envinfo import dtype_name, resolve_device, resolve_dtype, strict_fp32, tf32_state

__all__ = ["Timing", "measure", "empty_cuda_cache", "GRAPHS_DISABLED", "check_output", "check_result", "benchmark_model", "sweep",
           "is_oom_error", "forward_peak_memory", "SweepIncomplete", "DEADLINE_ENV", "deadline_from_env",
           "cuda_graph_callable", "L2_FLUSH_BYTES", "NonFiniteOutput",
           "usable_cpus", "set_threads", "samples_text", "parse_samples", "paired_ratio",
           "timing_group"]

_MAX_INNER = 1_000_000


def usable_cpus() -> int:
    """How many CPUs this process may run on (its affinity mask where the OS has one, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def set_threads(threads: int) -> int:
    """Set torch's intra-op CPU thread count; returns the previous one.

    Raises ValueError below 1. Warns (RuntimeWarning) above :func:`usable_cpus`: the threads then
    share cores and the latency measured is that of oversubscription, not of more parallelism.
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1 (or None for torch's default), got {threads}")
    cpus = usable_cpus()
    if threads > cpus:
        warnings.warn(f"threads={threads} exceeds the {cpus} CPUs this process may use: the threads share cores "
                      "and the timings measure oversubscription", RuntimeWarning, stacklevel=2)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    return old


@dataclass
class Timing:
    """Summary of the samples of one callable; all values in **seconds per call**.

    ``samples`` are per-call times (each sample's duration divided by ``calls_per_sample``);
    ``page_faults_per_call``: minor page faults of the whole process per timed call (CPU timings on
    systems with ``getrusage``; None otherwise);
    percentiles use linear interpolation (numpy's default); ``iqr_s`` = q75 - q25.
    """

    samples: list[float]
    calls_per_sample: int = 1
    page_faults_per_call: float | None = None
    median_s: float = field(init=False)
    iqr_s: float = field(init=False)
    p10_s: float = field(init=False)
    p90_s: float = field(init=False)
    mean_s: float = field(init=False)
    n: int = field(init=False)

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a Timing needs at least one sample")
        arr = np.asarray(self.samples, dtype=np.float64)
        q10, q25, q50, q75, q90 = np.percentile(arr, [10, 25, 50, 75, 90])
        self.median_s = float(q50)
        self.iqr_s = float(q75 - q25)
        self.p10_s = float(q10)
        self.p90_s = float(q90)
        self.mean_s = float(arr.mean())
        self.n = int(arr.size)

    def row(self) -> dict[str, Any]:
        """The summary in **milliseconds per call**: median_ms, iqr_ms, p10_ms, p90_ms, mean_ms, n,
        calls_per_sample, page_faults_per_call."""
        return {"median_ms": self.median_s * 1e3, "iqr_ms": self.iqr_s * 1e3, "p10_ms": self.p10_s * 1e3,
                "p90_ms": self.p90_s * 1e3, "mean_ms": self.mean_s * 1e3, "n": self.n,
                "calls_per_sample": self.calls_per_sample, "page_faults_per_call": self.page_faults_per_call}


def samples_text(timing: Timing) -> str:
    """A Timing's samples in **milliseconds per call**, in the order taken (in an interleaved measurement
    one per round, every callable in the same rounds), space-separated, 4 significant digits: what a
    results row keeps so that two callables timed together can be compared round by round
    (:func:`paired_ratio`)."""
    return " ".join(f"{s * 1e3:.4g}" for s in timing.samples)


def timing_group() -> str:
    """A fresh id (8 hex digits) for one interleaved measurement: results rows timed in the same rounds
    carry the same ``timing_group``, and only such rows are compared round by round
    (:func:`paired_ratio`); rows of different measurements, even of one run, saw different moments."""
    return uuid.uuid4().hex[:8]


def parse_samples(text: Any) -> list[float]:
    """The samples (ms) of :func:`samples_text`; an empty list for a missing value (NaN, None, "")."""
    if not isinstance(text, str) or not text.strip():
        return []
    return [float(x) for x in text.split()]


def paired_ratio(num: Sequence[float], den: Sequence[float], min_rounds: int = 3) -> tuple[float, float]:
    """Median and spread of the round-by-round ratio ``num[i] / den[i]`` of two callables timed in the same
    interleaved measurement, over the rounds both took part in (the first ``min(len)`` samples). Both
    samples of a round saw the same moment of the machine, so its slow drifts (a shared host's states,
    other work) cancel in the ratio where they widen each median's own spread. Spread: half the ratio's
    IQR over its median, the convention of one median's spread in this study (a fraction, not percent).
    Fewer than ``min_rounds`` common rounds give (nan, nan)."""
    k = min(len(num), len(den))
    if k < min_rounds:
        return float("nan"), float("nan")
    ratios = np.asarray(num[:k], dtype=float) / np.asarray(den[:k], dtype=float)
    q1, q2, q3 = np.percentile(ratios, [25, 50, 75])
    return float(q2), float(0.5 * (q3 - q1) / q2)


def _as_device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else resolve_device(device)


def _device_context(dev: torch.device) -> contextlib.AbstractContextManager:
    # CUDA events and streams belong to the *current* device: make it the one being timed.
    return torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _minor_faults() -> int | None:
    """Minor page faults of this process (all its threads) so far; None without ``getrusage``."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _time_cpu(fn: Callable[[], Any], inner: int) -> float:
    """Seconds for ``inner`` back-to-back calls, by the monotonic nanosecond clock."""
    start = time.perf_counter_ns()
    for _ in range(inner):
        fn()
    return (time.perf_counter_ns() - start) * 1e-9


def _calibrate(fn: Callable[[], Any], dev: torch.device, min_sample_s: float) -> int:
    """Calls per sample so that one sample lasts >= min_sample_s (1, 2, 5, 10, 20, 50 ... like timeit)."""
    if min_sample_s <= 0:
        return 1
    inner = 1
    while inner < _MAX_INNER:
        for step in (1, 2, 5):
            n = inner * step
            _sync(dev)
            start = time.perf_counter_ns()
            for _ in range(n):
                fn()
            _sync(dev)
            if (time.perf_counter_ns() - start) * 1e-9 >= min_sample_s:
                return n
        inner *= 10
    return _MAX_INNER


#: bytes read before each CUDA sample to evict the L2 cache (several times the 50 to 60 MB of an
#: H100/H200; the environment record states the card's own size as ``gpu_l2_mb``)
L2_FLUSH_BYTES = 256 * 2**20


def measure(fns: dict[str, Callable[[], Any]], device: str | torch.device = "cpu", warmup: int = 5,
            repeats: int = 30, min_time_s: float = 0.0, interleave: bool = True, progress: bool = False,
            min_sample_s: float | None = None, max_repeats: int | None = None,
            flush_cache: bool | None = None) -> dict[str, Timing]:
    """Time each zero-argument callable; returns name -> :class:`Timing` (seconds per call).

    ``warmup`` calls per callable first, then calibration (CPU: calls per sample so one sample lasts
    at least ``min_sample_s``, default 1 ms; CUDA: default 0, one call per sample), then rounds of one
    sample per callable, A B / B A ... when ``interleave`` (else all samples of A, then of B).
    Rounds continue past ``repeats`` until every callable has been sampled for ``min_time_s``
    seconds in total, up to ``max_repeats`` samples (default 10 x repeats).  On CUDA each sample is
    timed with a pair of CUDA events on the current stream, starting on a synchronized (idle) device
    so that every sample includes its own launch overhead; on CPU ``time.perf_counter_ns`` is used.
    On the CPU each Timing also counts the process's minor page faults per timed call (read between
    samples, outside the timed window). The machine's steal and pressure counters are read around the
    timed rounds (:func:`vitspeed.disturbance.timed_window`), for the sweep that records them.
    Callables should not allocate their inputs: everything they do is timed. ``flush_cache``
    (default: on CUDA) reads a buffer of :data:`L2_FLUSH_BYTES` before each sample, untimed, so that
    no sample finds the previous one's inputs and weights in the GPU's L2 cache (60 MB on an H200
    holds a bfloat16 DeiT-S); reading rather than writing it leaves clean lines behind, so the sample
    does not pay for writing the flush buffer back to memory. The device is idle again before the
    sample starts.
    """
    if not fns:
        raise ValueError("measure needs at least one callable; got an empty dict")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0; got repeats={repeats}, warmup={warmup}")
    if min_time_s < 0:
        raise ValueError(f"min_time_s must be >= 0 seconds; got {min_time_s}")
    dev = _as_device(device)
    if min_sample_s is None:
        min_sample_s = 1e-3 if dev.type == "cpu" else 0.0
    max_repeats = max(repeats, max_repeats if max_repeats is not None else 10 * repeats)
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    faults = {name: 0 for name in names}
    if flush_cache is None:
        flush_cache = dev.type == "cuda"
    if flush_cache and dev.type != "cuda":
        raise ValueError(f"flush_cache=True needs a CUDA device, got {str(dev)!r}; valid choices: None or False")
    with torch.inference_mode(), _device_context(dev):
        scrub = torch.zeros(L2_FLUSH_BYTES // 4, dtype=torch.float32, device=dev) if flush_cache else None
        sink = torch.empty((), dtype=torch.float32, device=dev) if flush_cache else None
        for name in names:
            for _ in range(warmup):
                fns[name]()
        _sync(dev)
        inner = {name: _calibrate(fns[name], dev, min_sample_s) for name in names}
        _sync(dev)

        def enough(name: str) -> bool:
            got = samples[name]
            return len(got) >= max_repeats or (len(got) >= repeats and sum(got) * inner[name] >= min_time_s)

        def one_round(order: Sequence[str]) -> None:
            if dev.type == "cuda":
                for name in order:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    # Start every sample on an idle device: otherwise the host queues a callable's
                    # kernels while the previous one still runs, and only the first callable of a
                    # round pays its launch overhead (launch-bound ones would look faster the later
                    # they come in the round).
                    if scrub is not None:
                        torch.sum(scrub, dim=0, out=sink)  # a read of the whole buffer, nothing to write back
                    torch.cuda.synchronize(dev)
                    start.record()
                    for _ in range(inner[name]):
                        fns[name]()
                    end.record()
                    end.synchronize()
                    samples[name].append(start.elapsed_time(end) * 1e-3 / inner[name])
            else:
                for name in order:
                    before = _minor_faults()  # read outside the timed window
                    samples[name].append(_time_cpu(fns[name], inner[name]) / inner[name])
                    after = _minor_faults()
                    if before is not None and after is not None:
                        faults[name] += after - before

        bar = _progress_bar(total=len(names) * repeats, desc="timing", enabled=progress)
        gc_was_enabled = gc.isenabled()
        gc.collect()
        gc.disable()
        try:
            with timed_window():  # steal and pressure while timing, for the sweep's record
                if interleave:
                    r = 0
                    while not all(enough(name) for name in names):
                        pending = [name for name in names if not enough(name)]
                        shift = r % len(pending)
                        one_round(pending[shift:] + pending[:shift])
                        bar.update(len(pending))
                        r += 1
                else:
                    for name in names:
                        while not enough(name):
                            one_round([name])
                            bar.update(1)
        finally:
            if gc_was_enabled:
                gc.enable()
            bar.close()
    counted = dev.type == "cpu" and _minor_faults() is not None
    return {name: Timing(samples[name], calls_per_sample=inner[name],
                         page_faults_per_call=faults[name] / (len(samples[name]) * inner[name]) if counted else None)
            for name in names}


def _progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar, off when not ``enabled`` or when ``TQDM_DISABLE`` is set (the runner sets it, so that
    executed chapters hold no progress bars; an explicit ``disable=False`` would override tqdm's own check)."""
    from tqdm import tqdm
    off = not enabled or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    return tqdm(total=total, desc=desc, disable=off, leave=False)


def _non_finite_count(out: Any) -> int:
    """Number of NaN/inf elements in the floating tensors of a (nested) output."""
    if isinstance(out, torch.Tensor):
        if out.is_floating_point() or out.is_complex():
            return int((~torch.isfinite(out)).sum().item())
        return 0
    if isinstance(out, dict):
        return sum(_non_finite_count(v) for v in out.values())
    if isinstance(out, (list, tuple)):
        return sum(_non_finite_count(v) for v in out)
    return 0


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else ()
    for v in values:
        t = _first_tensor(v)
        if t is not None:
            return t
    return None


class NonFiniteOutput(ValueError):
    """A callable's output has NaN or inf values (:func:`check_output`); ``name`` says whose."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


def check_result(out: Any, name: str = "the callable", shape: Sequence[int] | None = None) -> None:
    """:func:`check_output` on an output already computed (a tensor, or a dict/list/tuple of them):
    :class:`NonFiniteOutput` if any floating value is NaN/inf, ValueError when ``shape`` is given and
    the first tensor has another shape."""
    bad = _non_finite_count(out)
    if bad:
        raise NonFiniteOutput(f"output of {name} contains {bad} non-finite value(s) (NaN or inf); "
                              "refusing to time a broken computation", name)
    if shape is not None:
        t = _first_tensor(out)
        got = tuple(t.shape) if t is not None else None
        if got != tuple(shape):
            raise ValueError(f"output of {name} has shape {got}, expected {tuple(shape)}")


def check_output(fn: Callable[[], Any], name: str = "the callable", shape: Sequence[int] | None = None) -> None:
    """Run ``fn`` once under inference_mode; :class:`NonFiniteOutput` (a ValueError) if any floating
    output is NaN/inf, ValueError when ``shape`` is given and the first output tensor has another
    shape.  Call it before timing."""
    with torch.inference_mode():
        out = fn()
    check_result(out, name, shape)


# --------------------------------------------------------------------------- memory

def _vm_hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            match = re.search(r"VmHWM:\s+(\d+)\s+kB", fh.read())
        return int(match.group(1)) * 1024 if match else None
    except OSError:
        return None


def _malloc_trim() -> bool:
    """Give the C heap's free memory back to the OS (glibc ``malloc_trim(0)``), so that a resident-set
    rise measures what a call needs even when the allocator is told to keep freed memory."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):  # not glibc
        return False


def _reset_vm_hwm() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return _vm_hwm_bytes() is not None
    except OSError:
        return False


class _RssSampler:
    """Fallback: sample the process RSS in a background thread every ``interval_s`` (may miss short peaks)."""

    def __init__(self, interval_s: float = 1e-3) -> None:
        import psutil
        self._proc = psutil.Process()
        self._interval = interval_s
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


@contextlib.contextmanager
def _quiet_stderr_fd() -> Iterator[None]:
    """File descriptor 2 sent to /dev/null for the duration: silences C++ libraries' logging (Python's
    own warnings and exceptions are unaffected, as are writes outside the block)."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2: nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _cpu_tensor_peak(fn: Callable[[], Any]) -> tuple[Any, int | None]:
    """Run ``fn`` once under the profiler's memory tracking; return (output, peak bytes).

    The peak is the highest running sum, in time order, of the sizes of the CPU tensor allocations
    (positive) and frees (negative) PyTorch's allocator reports during the call: the CPU counterpart
    of ``max_memory_allocated - memory_allocated``, independent of what the C heap kept from earlier
    work. ``None`` where the profiler gives no allocation records.
    """
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Pp]rofiler.*")
        with _quiet_stderr_fd():  # kineto logs a CUDA probe error on a machine without a GPU
            prof.__enter__()
        try:
            out = fn()
        finally:
            with _quiet_stderr_fd():
                prof.__exit__(None, None, None)
    try:
        records = sorted((ev.start_ns(), ev.nbytes()) for ev in prof.profiler.kineto_results.events()
                         if ev.name() == "[memory]")
    except AttributeError:  # a profiler without kineto's raw events
        return out, None
    if not records:
        return out, None
    level = peak = 0
    for _, nbytes in records:
        level += nbytes
        peak = max(peak, level)
    return out, peak


def forward_peak_memory(fn: Callable[[], Any], dev: torch.device) -> tuple[Any, float | None, str]:
    """Run ``fn`` once (twice on CUDA); return (output, peak memory increase in MiB, method).

    Both devices count tensor memory, not pages, so variants compare regardless of what ran before.
    CUDA (``cuda_max_allocated``): ``max_memory_allocated`` during a second call minus
    ``memory_allocated`` before it (activations and per-call workspaces, not the weights already
    there, nor the library workspaces the first call allocates once per process).
    CPU (``cpu_tensor_peak``): the highest level, above the level before the call, of the bytes held
    by tensors PyTorch's allocator handed out during the call (its allocation and free records under
    ``torch.profiler``); memory a library allocates on its own (oneDNN's weight caches) is not seen.
    Where the profiler gives no records, the rise of the process's peak resident set (``rss_hwm``,
    VmHWM reset just before, after ``malloc_trim``) or of its sampled RSS (``rss_sampled``): those
    count pages and depend on what the C heap kept, an indication only.
    """
    if dev.type == "cuda":
        with torch.inference_mode():
            fn()  # one-time lazy allocations (cuBLAS/cuDNN workspaces) are not the forward's memory
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        with torch.inference_mode():
            out = fn()
        torch.cuda.synchronize(dev)
        return out, (torch.cuda.max_memory_allocated(dev) - before) / 2**20, "cuda_max_allocated"
    with torch.inference_mode():
        out, peak_bytes = _cpu_tensor_peak(fn)
    if peak_bytes is not None:
        return out, peak_bytes / 2**20, "cpu_tensor_peak"
    import psutil
    proc = psutil.Process()
    gc.collect()
    _malloc_trim()
    if _reset_vm_hwm():
        before = proc.memory_info().rss
        with torch.inference_mode():
            out = fn()
        peak = _vm_hwm_bytes() or before
        return out, max(peak - before, 0) / 2**20, "rss_hwm"
    before = proc.memory_info().rss
    with _RssSampler() as sampler, torch.inference_mode():
        out = fn()
    return out, max(sampler.peak - before, 0) / 2**20, "rss_sampled"


# --------------------------------------------------------------------------- models

def cuda_graph_callable(fn: Callable[[], Any], device: str | torch.device) -> tuple[Callable[[], Any], Any]:
    """Capture one call of the zero-argument ``fn`` (static inputs) as a CUDA graph on ``device``.

    Returns (replay, static_output): calling ``replay`` re-runs the captured kernels on whatever the
    inputs hold and refreshes ``static_output`` in place.  Warm-up runs on a side stream first, as
    the PyTorch docs require (lazy initialisation and cuBLAS/cuDNN autotuning must not be captured).
    A callable that synchronizes with the host or allocates on the CPU cannot be captured: the
    RuntimeError propagates.
    """
    dev = _as_device(device)
    with torch.inference_mode(), _device_context(dev):
        stream = torch.cuda.Stream(device=dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream(dev).wait_stream(stream)
        torch.cuda.synchronize(dev)
        graph = torch.cuda.CUDAGraph()
        caller_stream = torch.cuda.current_stream(dev)
        try:
            with torch.cuda.graph(graph):
                static_out = fn()
        except BaseException:
            # a capture that fails in capture_end leaves the capture stream current: take it back
            torch.cuda.set_stream(caller_stream)
            raise
    return graph.replay, static_out


def benchmark_model(model: nn.Module, input_shape: Sequence[int], device: str = "cpu", dtype: str = "float32",
                    batch_size: int = 1, threads: int | None = None, warmup: int = 5, repeats: int = 30,
                    cuda_graph: bool = False, channels_last: bool = False, min_time_s: float = 0.0,
                    seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Latency of one forward pass of ``model`` on a random batch; returns one result row.

    ``input_shape`` excludes the batch dimension (e.g. ``(3, 224, 224)``).  The model is moved in
    place to the device and cast with ``model.to(dtype)`` (weights and activations really are in that
    dtype; no autocast, so no per-op casts are timed; float32 is IEEE float32, TF32 off, see
    :func:`vitspeed.envinfo.strict_fp32`), switched to eval, and its output is checked
    for NaN/inf before timing.  CPU threads: ``torch.set_num_threads(threads)`` for the duration of
    the call (restored afterwards); default, and recorded, is torch's current setting.  Note that
    ``torch.utils.benchmark.Timer`` would silently use ONE thread.  ``cuda_graph`` replays a captured
    CUDA graph (GPU batch-1 latency is launch-bound otherwise); CUDA only.

    Row: device, dtype, batch_size, threads, channels_last, cuda_graph, tf32 (CUDA fp32 only),
    input_shape, median_ms / iqr_ms / p10_ms / p90_ms / mean_ms (milliseconds per batch), n,
    calls_per_sample, throughput (images per second = batch_size / median), peak_mem_mb (rise of
    peak memory during the first forward, in MiB; see ``mem_method``), status='ok'.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if cuda_graph and dev.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a CUDA device, got device {str(dev)!r}; valid choices: "
                         "cuda_graph=False on cpu, or a cuda device")
    shape = (batch_size, *(int(s) for s in input_shape))
    if channels_last and len(shape) != 4:
        raise ValueError(f"channels_last needs an image input (C, H, W); got input_shape {tuple(input_shape)}")

    old_threads = set_threads(threads) if threads is not None else torch.get_num_threads()
    try:
        with _device_context(dev), strict_fp32():
            memory_format = torch.channels_last if channels_last else torch.contiguous_format
            model = model.eval().to(device=dev, dtype=dt)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            gen = torch.Generator().manual_seed(seed)
            x = torch.randn(shape, generator=gen).to(device=dev, dtype=dt)
            x = x.contiguous(memory_format=memory_format)

            def forward() -> Any:
                return model(x)

            out, peak_mb, mem_method = forward_peak_memory(forward, dev)
            check_result(out, type(model).__name__, None)
            del out
            fn: Callable[[], Any] = forward
            if cuda_graph:
                fn, static_out = cuda_graph_callable(forward, dev)
                fn()
                torch.cuda.synchronize(dev)
                check_result(static_out, f"{type(model).__name__} (CUDA graph replay)", None)
            timing = measure({"model": fn}, dev, warmup=warmup, repeats=repeats, min_time_s=min_time_s,
                             progress=progress)["model"]
            used_threads = torch.get_num_threads()
            tf32 = tf32_state(dev, dt)  # inside strict_fp32: the state the timing ran under
    finally:
        torch.set_num_threads(old_threads)

    row: dict[str, Any] = {
        "device": str(dev), "dtype": dtype_name(dt), "batch_size": batch_size, "threads": used_threads,
        "channels_last": channels_last, "cuda_graph": cuda_graph,
        "tf32": tf32,
        "input_shape": "x".join(str(s) for s in input_shape),
    }
    row.update(timing.row())
    row["throughput"] = batch_size / timing.median_s
    row["peak_mem_mb"] = peak_mb
    row["mem_method"] = mem_method
    row["status"] = "ok"
    return row


# --------------------------------------------------------------------------- sweeps

def is_oom_error(err: BaseException) -> bool:
    """True for out-of-memory failures: torch's OutOfMemoryError, MemoryError, or a RuntimeError saying
    "out of memory" (CUDA) or "can't allocate memory" (torch's CPU allocator)."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(err, oom_type):
        return True
    if isinstance(err, MemoryError):
        return True
    text = str(err).lower()
    # CUDA says "out of memory"; torch's CPU allocator says "can't allocate memory".
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


#: Set (to a note of what failed) after a CUDA-graph capture failed: with torch 2.11 a capture that
#: fails in capture_end can leave the caching allocator believing a capture is under way, and
#: ``torch.cuda.empty_cache`` then raises an internal assert. Every caller empties the cache through
#: :func:`empty_cuda_cache`, which does nothing once this is set.
GRAPHS_DISABLED: list[str] = []


def empty_cuda_cache() -> bool:
    """``torch.cuda.empty_cache()`` unless a failed CUDA-graph capture may have left the allocator
    mid-capture (:data:`GRAPHS_DISABLED`); returns whether the cache was emptied."""
    if GRAPHS_DISABLED or not torch.cuda.is_available():
        return False
    torch.cuda.empty_cache()
    return True


def _free_memory() -> None:
    gc.collect()
    empty_cuda_cache()


DEADLINE_ENV = "VITSPEED_DEADLINE"


class SweepIncomplete(RuntimeError):
    """A sweep stopped at its deadline with configurations left; rerun with the same run id to resume."""


def deadline_from_env() -> float | None:
    """The deadline in ``$VITSPEED_DEADLINE`` (seconds since the epoch, as ``time.time()``), or None.

    ``vitspeed run --time-budget`` sets it for the notebooks it executes, so that a long sweep can be
    split over several calls of bounded length.
    """
    text = os.environ.get(DEADLINE_ENV, "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"${DEADLINE_ENV} must be seconds since the epoch (a number); got {text!r}") from None


def sweep(configs: Iterable[dict[str, Any]], run_one: Callable[[dict[str, Any]], dict[str, Any]],
          done: set | None = None, progress: bool = True, key_fields: Sequence[str] | None = None,
          desc: str = "sweep", deadline: float | None = None) -> Iterator[dict[str, Any]]:
    """Run ``run_one`` on each config and yield ``{**config, **result}`` rows (status 'ok' unless set).

    Out-of-memory (see :func:`is_oom_error`) yields ``{**config, status='oom', error=<message>}`` and
    the sweep goes on; any other exception propagates.  Configs whose key
    (:func:`vitspeed.results.config_key` over ``key_fields``, default all the config's fields,
    sorted) is in ``done`` are skipped, so a resumed run does only what is missing.  With a
    ``deadline`` (``time.time()`` seconds), no configuration is *started* after it: the sweep raises
    :class:`SweepIncomplete` once the rows finished so far have been yielded (a configuration already
    running is finished, so leave a margin of the longest one).
    """
    from vitspeed.results import config_key

    configs = list(configs)
    done = done or set()
    bar = _progress_bar(total=len(configs), desc=desc, enabled=progress)
    try:
        for i, config in enumerate(configs):
            fields = list(key_fields) if key_fields is not None else sorted(config)
            if config_key(config, fields) in done:
                bar.update(1)
                continue
            if deadline is not None and time.time() >= deadline:
                left = sum(config_key(c, list(key_fields) if key_fields is not None else sorted(c)) not in done
                           for c in configs[i:])
                raise SweepIncomplete(f"{desc}: time budget reached with {left} of {len(configs)} configurations "
                                      "left; run again with the same run id to resume")
            oom_message = None
            try:
                result = run_one(dict(config))
            except BaseException as err:  # narrowed just below; everything else re-raised
                if not is_oom_error(err):
                    raise
                oom_message = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
            if oom_message is not None:
                _free_memory()  # after the except block, so the traceback's tensors are released
                row = {**config, "status": "oom", "error": oom_message}
            else:
                row = {**config, **result}
                row.setdefault("status", "ok")
            bar.update(1)
            yield row
    finally:
        bar.close()
