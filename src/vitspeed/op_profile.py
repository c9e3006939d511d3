"""Where a core's or a model's CPU time goes by PyTorch operator, beside each operator's counted work.

:mod:`vitspeed.profiling` says which *library routine* the time is spent in (MKL's GEMM, oneDNN,
the OpenMP runtime). This module says which *operator of the forward pass* it is spent in: the call
is repeated under a timing dispatch mode (:class:`OperatorTimer`) that charges each top-level
``aten::`` operator (one the Python code calls, ``aten::linear``, not the ``aten::addmm`` it runs
inside) its wall time on the calling thread. The operators' MACs and elementwise counts come from
:func:`vitspeed.flops.count_flops` of the same call, so each row says how much work an operator does
and how fast it does it (``gmacs_per_s``): the test of readings such as "these narrow products and
elementwise passes run at a lower MAC rate than the convolutions".

Why not ``torch.profiler``: it stores a record per operator in memory it allocates as the call
runs, and those small allocations land in the heap between the call's large tensors. Freed large
blocks are then split, each pass takes fresh pages from the operating system, and whichever
operator first writes a large tensor pays thousands of page faults (the exact Taylor kernel ran
several times slower under the profiler than without it, where it takes none). The timer
keeps one number per operator name, so the heap behaves as in the chapters' timings;
``page_faults_per_pass`` (minor page faults of the process per pass) checks that it does.

Categories (:data:`CATEGORIES`): ``products`` (an operator with counted MACs other than a
normalization: linear, conv, matmul, bmm, einsum, SDPA), ``normalization`` (batch, layer, group
norms: counted as MACs the fvcore way), ``elementwise`` (elementwise ops, reductions, pooling,
softmax), ``data movement`` (the counter's zero-cost ops: copies, cat, gathers, reshapes, padding),
``other`` (any operator the counter has no rule for).

Times are means per forward pass (milliseconds). ``profiled_ms_per_pass`` is the sum over operators;
``wall_ms_per_pass`` also holds the Python code between operators and the timer's own cost (some
microseconds per operator), so it is above the chapters' latency for models of many small
operators; shares within one profile are what this is for. CPU only, eager only (a compiled graph
hides its operators). The process runs with the CPU preset's allocator settings
(:data:`vitspeed.allocator.KEPT_HEAP`), as in every published CPU timing.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["CATEGORIES", "CHAPTER", "OperatorTimer", "operator_category", "count_name", "op_profile",
           "op_profile_rows", "op_profile_many"]

#: results folder under data/
CHAPTER = "op_profiles"
#: operator categories, in display order
CATEGORIES: tuple[str, ...] = ("products", "normalization", "elementwise", "data movement", "other")

_NORMS = {"batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"}
# eager names of convolutions; the traced graph the counter reads calls them all "conv"
_CONVS = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d", "conv_transpose2d",
          "conv_transpose3d"}


def count_name(op: str) -> str:
    """The FLOP counter's name (:attr:`vitspeed.flops.FlopCount.by_operator`) of eager operator ``op``
    (``aten::conv2d`` -> ``conv``, ``aten::matmul`` -> ``matmul``)."""
    name = op.removeprefix("aten::")
    return "conv" if name in _CONVS else name


def operator_category(op: str, macs: int, elementwise: int) -> str:
    """The category (:data:`CATEGORIES`) of eager operator ``op`` given its counted MACs and
    elementwise ops; an operator without counted work is ``data movement`` if the counter knows it
    as zero-cost, else ``other``."""
    from vitspeed.flops import ZERO_COST_OPS

    name = count_name(op)
    if name in _NORMS:
        return "normalization"
    if macs > 0:
        return "products"
    if elementwise > 0:
        return "elementwise"
    if "aten::" + op.removeprefix("aten::") in ZERO_COST_OPS:
        return "data movement"
    return "other"


class OperatorTimer:
    """A ``TorchDispatchMode`` (built on first use, so importing this module does not import torch)
    that times every operator dispatched while it is active: ``times`` maps ``aten::`` names to
    ``{"us": microseconds, "calls": n}``. An operator called inside another one runs with the mode
    off, so only top-level operators are timed, each once. CPU operators run synchronously, so the
    wall time of the call is the operator's time."""

    def __new__(cls):
        from torch.utils._python_dispatch import TorchDispatchMode

        class _Timer(TorchDispatchMode):
            def __init__(self) -> None:
                super().__init__()
                self.times: dict[str, dict[str, float]] = {}

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                t0 = time.perf_counter()
                out = func(*args, **(kwargs or {}))
                elapsed = time.perf_counter() - t0
                entry = self.times.setdefault(func._schema.name, {"us": 0.0, "calls": 0})
                entry["us"] += 1e6 * elapsed
                entry["calls"] += 1
                return out

        return _Timer()


def _check(spec: Mapping[str, Any]) -> None:
    if spec["compiled"]:
        raise ValueError("an operator profile needs the eager call (a compiled graph hides its operators); "
                         "use the routine profile (vitspeed profile --by routine) for compiled calls")


def op_profile(kind: str, target: str, dtype: str = "float32", tokens: int | None = None, img_size: int = 224,
               batch_size: int = 1, heads: int = 6, head_dim: int = 64, compiled: bool = False, seconds: float = 3.0,
               threads: int | None = None, attention: str | None = None,
               options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Time one eager call on the CPU by operator for about ``seconds`` (same arguments as
    :func:`vitspeed.profiling.profile`; ``compiled=True`` is a ValueError).

    Returns ``passes`` (forward passes profiled), ``threads``, ``wall_ms_per_pass`` (mean wall time
    of a pass under the timer), ``page_faults_per_pass`` (minor page faults of the process per
    pass: memory the allocator took fresh from the OS, whose first touch is paid inside an operator)
    and ``operators``: a list of dicts with ``operator`` (``aten::``
    name), ``category``, ``calls_per_pass``, ``ms_per_pass``, ``macs`` and ``elementwise`` (per pass,
    from the FLOP counter). Raises ValueError for bad input."""
    from vitspeed.profiling import _spec, run_worker

    spec = _spec(kind, target, dtype, tokens, img_size if kind == "model" else None, batch_size, heads, head_dim,
                 compiled, seconds, threads, attention, options)
    _check(spec)
    with tempfile.TemporaryDirectory(prefix="vitspeed-opprofile-") as tmp:
        return run_worker("vitspeed.op_profile", spec, tmp)


def op_profile_rows(configs: Sequence[Mapping[str, Any]], rounds: int = 1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Profile every config (keyword arguments of :func:`op_profile`) ``rounds`` times, interleaved
    (all configs once, then again), so that a burst of machine noise falls on one round of every config
    rather than on every round of one; return the tidy rows (one per round, config and operator: the
    config's columns, ``round``, ``operator``, ``category``, ``calls_per_pass``, ``ms_per_pass``,
    ``share_pct`` (of the summed operator time), ``macs``, ``elementwise``, ``gmacs_per_s`` (empty
    without MACs), ``passes``, ``profiled_ms_per_pass``, ``wall_ms_per_pass``,
    ``page_faults_per_pass``) and the environment record of the machine. All configs are checked
    before the first runs."""
    from vitspeed.profiling import call_columns, checked_calls, profile_environment

    if int(rounds) != rounds or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    calls = checked_calls(configs)
    for args in calls:
        _check(args)
    rows = []
    for rnd, args in ((r, a) for r in range(int(rounds)) for a in calls):
        got = op_profile(**args)
        total = sum(o["ms_per_pass"] for o in got["operators"])
        base = {**call_columns(args, got["threads"]), "round": rnd, "passes": got["passes"],
                "profiled_ms_per_pass": total, "wall_ms_per_pass": got["wall_ms_per_pass"],
                "page_faults_per_pass": got["page_faults_per_pass"]}
        for o in got["operators"]:
            rate = o["macs"] / (o["ms_per_pass"] * 1e6) if o["macs"] and o["ms_per_pass"] > 0 else ""
            rows.append({**base, **o, "share_pct": 100.0 * o["ms_per_pass"] / total if total else 0.0,
                         "gmacs_per_s": rate})
    threads = rows[0]["threads"] if rows else None
    return rows, profile_environment(threads, "vitspeed.op_profile.OperatorTimer (a TorchDispatchMode): "
                                              "top-level aten operators, wall time")


def op_profile_many(configs: Sequence[Mapping[str, Any]], rounds: int = 1, run_id: str | None = None,
                    root: str | os.PathLike | None = None) -> Path:
    """:func:`op_profile_rows`, then the rows written in one go to
    ``data/op_profiles/<hardware>__<run id>.csv`` (with its ``.env.json``); nothing is written when
    any profile fails. Returns the CSV's path."""
    from vitspeed.profiling import save_profile

    return save_profile(CHAPTER, lambda: op_profile_rows(configs, rounds), run_id, root)


# ---------------------------------------------------------------------------------------------------
# The profiled process.

def _worker(spec: Mapping[str, Any]) -> None:
    import torch

    from vitspeed.flops import count_flops
    from vitspeed.profiling import _build_call
    from vitspeed.timing import set_threads

    if spec["threads"]:
        set_threads(spec["threads"])
    threads = torch.get_num_threads()
    module, inputs, call = _build_call(spec)
    counted = count_flops(module, inputs).by_operator
    with torch.inference_mode():
        t0 = time.perf_counter()
        for _ in range(3):
            call()
        per_pass = (time.perf_counter() - t0) / 3
        passes = max(3, int(spec["seconds"] / max(per_pass, 1e-6)))
        timer = OperatorTimer()
        with timer:
            call()  # one pass under the timer before counting: the mode's own first-use costs
        timer.times.clear()
        with timer:
            faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            for _ in range(passes):
                call()
            elapsed = time.perf_counter() - t0
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    times = timer.times
    seen = set()
    operators = []
    for op, t in sorted(times.items(), key=lambda kv: -kv[1]["us"]):
        name = count_name(op)
        work = counted.get(name, {"macs": 0, "elementwise": 0}) if name not in seen else {"macs": 0, "elementwise": 0}
        seen.add(name)
        operators.append({"operator": op, "category": operator_category(op, work["macs"], work["elementwise"]),
                          "calls_per_pass": t["calls"] / passes, "ms_per_pass": t["us"] / passes / 1e3,
                          "macs": int(work["macs"]), "elementwise": int(work["elementwise"])})
    missing = sorted(set(counted) - seen)
    for name in missing:  # counted work no eager operator of that name did: shown, never dropped
        work = counted[name]
        operators.append({"operator": "aten::" + name, "category": operator_category(name, work["macs"],
                                                                                     work["elementwise"]),
                          "calls_per_pass": 0.0, "ms_per_pass": 0.0, "macs": int(work["macs"]),
                          "elementwise": int(work["elementwise"])})
    with open(os.environ["VITSPEED_PROFILE_RESULT"], "w", encoding="utf-8") as fh:
        json.dump({"passes": passes, "threads": threads, "wall_ms_per_pass": 1e3 * elapsed / passes,
                   "page_faults_per_pass": faults / passes, "operators": operators}, fh)


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
