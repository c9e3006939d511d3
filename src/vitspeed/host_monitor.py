"""How steady is this machine? A time series of four probes, for reading between-run differences.

A chapter's interleaved rounds protect the comparisons *within* a measured group; numbers from
different groups, runs or chapters also carry whatever the host did in between. On a shared virtual
machine that can be much (see the conclusions chapter). :func:`monitor` repeats, for a given time,
one *tick* of four probes and the disturbance counters:

- ``copy_gbps``: host memory bandwidth, :class:`vitspeed.disturbance.CopyProbe` (GB/s, bytes read
  plus written);
- ``gemm_gflops``: a 384 x 384 float32 matrix product, small enough to stay in cache (GFLOP/s, 2
  flops per multiply-add; median of 5 samples of 10 products): the cores' arithmetic speed;
- ``model_ms``: DeiT-S forward, batch 1, 224 px (ms per call, median of 3): a compute-bound model;
- ``core_ms``: the explicit softmax core (``softmax_explicit``) at 3136 tokens, 6 heads of 64
  (ms per call, median of 3): its 3136 x 3136 maps stream through main memory (memory-heavy, though
  its arithmetic intensity is on the compute side of the roofline's ridge);
- ``steal_pct`` and ``cpu_pressure_pct`` over the tick (:mod:`vitspeed.disturbance`).

``vitspeed monitor`` runs it in a fresh process with the CPU preset's allocator
(:data:`vitspeed.allocator.KEPT_HEAP`) and writes ``data/host_monitor/<hardware>__<run id>.csv``.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["monitor", "monitor_rows", "save_monitor", "MONITOR_MODEL", "MONITOR_CORE", "GEMM_SIZE"]

#: the compute-bound model of a tick (timm name), batch 1 at 224 px
MONITOR_MODEL = "deit_small_patch16_224"
#: the memory-heavy core of a tick: (variant, tokens, heads, head size)
MONITOR_CORE = ("softmax_explicit", 3136, 6, 64)
#: side of the square float32 matrices of the GEMM probe (3 x 576 KiB: resident in a 2 MiB L2 or L3)
GEMM_SIZE = 384


def _median_ms(call, n: int = 3) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - start) * 1e-6)
    return statistics.median(times)


def monitor(seconds: float, threads: int | None = None, model: str = MONITOR_MODEL,
            core: tuple[str, int, int, int] = MONITOR_CORE) -> list[dict[str, Any]]:
    """Ticks of the probes (module docstring) in this process until ``seconds`` have passed (at least
    one tick); one dict per tick: ``tick``, ``elapsed_s`` (start of the tick), ``copy_gbps``,
    ``gemm_gflops``, ``model_ms``, ``core_ms``, ``steal_pct``, ``cpu_pressure_pct``, ``threads``.
    Everything is built and warmed up before the first tick. ValueError for ``seconds`` <= 0."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be a finite number > 0, got {seconds}")
    import torch

    from vitspeed.attention import build_core
    from vitspeed.disturbance import CopyProbe, disturbance_between, read_counters
    from vitspeed.models import create_model
    from vitspeed.timing import set_threads

    if threads:
        set_threads(threads)
    g = torch.Generator().manual_seed(0)
    net = create_model(model, img_size=224).eval()
    image = torch.randn(1, 3, 224, 224, generator=g)
    name, tokens, heads, head_dim = core
    attn = build_core(name, head_dim=head_dim, num_heads=heads).eval()
    q, k, v = (torch.randn(1, heads, tokens, head_dim, generator=g) for _ in range(3))
    a, b = (torch.randn(GEMM_SIZE, GEMM_SIZE, generator=g) for _ in range(2))
    c = torch.empty(GEMM_SIZE, GEMM_SIZE)
    probe = CopyProbe()

    def gemm_gflops() -> float:
        rates = []
        for _ in range(5):
            start = time.perf_counter_ns()
            for _ in range(10):
                torch.mm(a, b, out=c)
            rates.append(10 * 2 * GEMM_SIZE**3 / (time.perf_counter_ns() - start))  # flops per ns = GFLOP/s
        return statistics.median(rates)

    rows = []
    with torch.inference_mode():
        for _ in range(2):  # warm-up: first calls allocate and pick kernels
            net(image), attn(q, k, v), gemm_gflops(), probe()
        t0 = time.monotonic()
        while not rows or time.monotonic() - t0 < seconds:
            before, start = read_counters(), time.monotonic()
            row = {"tick": len(rows), "elapsed_s": round(start - t0, 3), "copy_gbps": probe(),
                   "gemm_gflops": gemm_gflops(), "model_ms": _median_ms(lambda: net(image)),
                   "core_ms": _median_ms(lambda: attn(q, k, v))}
            row.update(disturbance_between(before, read_counters()))
            row["threads"] = torch.get_num_threads()
            rows.append(row)
    return rows


def monitor_rows(seconds: float, threads: int | None = None, model: str = MONITOR_MODEL,
                 core: tuple[str, int, int, int] = MONITOR_CORE) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """:func:`monitor` in a fresh process with the kept heap; returns (rows, environment record).
    Each row also names the probes' model and core (``model``, ``core``, ``core_tokens``,
    ``core_heads``, ``core_head_dim``). ValueError for a non-positive ``seconds`` or ``threads``."""
    from vitspeed.profiling import profile_environment, run_worker

    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"--seconds must be a finite number > 0, got {seconds}")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    with tempfile.TemporaryDirectory() as tmp:
        got = run_worker("vitspeed.host_monitor", {"kind": "monitor", "target": "host", "seconds": seconds,
                                                   "threads": threads, "model": model, "core": list(core)}, tmp)
    name, tokens, heads, head_dim = core
    rows = [{**r, "model": model, "core": name, "core_tokens": tokens, "core_heads": heads,
             "core_head_dim": head_dim} for r in got["rows"]]
    return rows, profile_environment(rows[0]["threads"], "host monitor")


def save_monitor(seconds: float, threads: int | None = None, run_id: str | None = None,
                 root: str | os.PathLike | None = None, **probes: Any) -> Path:
    """Run :func:`monitor_rows` (``probes``: its ``model`` and ``core``) and write
    ``data/host_monitor/<hardware>__<run id>.csv`` with its environment record; nothing is written
    when it fails, and an existing run id is refused. Returns the CSV's path."""
    from vitspeed.profiling import save_profile

    return save_profile("host_monitor", lambda: monitor_rows(seconds, threads, **probes), run_id=run_id, root=root)


def _worker(spec: dict[str, Any]) -> None:
    rows = monitor(spec["seconds"], spec.get("threads"), model=spec["model"], core=tuple(spec["core"]))
    with open(os.environ["VITSPEED_PROFILE_RESULT"], "w", encoding="utf-8") as fh:
        json.dump({"rows": rows}, fh)


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
