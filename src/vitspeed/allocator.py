"""How the CPU memory allocator's settings change the time of cores that materialize large tensors.

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc serves every block above its
mmap threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps it on ``free``, so an N x N score
map of hundreds of MB is page-faulted (and zeroed by the kernel) again on every call. On CUDA the
caching allocator keeps freed blocks, so no such cost exists there. The study's CPU preset therefore
tells glibc to keep freed memory (:data:`KEPT_HEAP`: serve everything from the heap, never trim it),
the CPU counterpart of the CUDA caching allocator and of the jemalloc/tcmalloc advice of PyTorch's
CPU performance guides. :func:`allocator_comparison` measures what that choice is worth: the same
cores timed in two fresh processes, one with glibc's defaults and one with :data:`KEPT_HEAP`.

Run as a module (``python -m vitspeed.allocator JSON``) it is the probe those processes execute:
it times :func:`vitspeed.studies.compare.compare_cores` with the JSON's keyword arguments and
prints the rows as one JSON line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Sequence

__all__ = ["KEPT_HEAP", "GLIBC_DEFAULT", "ALLOCATOR_VARS", "DEFAULT_LABEL", "KEPT_LABEL", "SETTINGS",
           "allocator_comparison", "allocator_state"]

#: glibc settings that keep freed memory in the process (no per-allocation mmap, no trimming).
KEPT_HEAP: dict[str, str] = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "17179869184"}
GLIBC_DEFAULT: dict[str, str] = {}
#: Variables that change the CPU allocator (removed for the glibc-default process).
ALLOCATOR_VARS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX",
                  "MALLOC_TOP_PAD_", "GLIBC_TUNABLES", "LD_PRELOAD")
DEFAULT_LABEL, KEPT_LABEL = "glibc default", "kept heap"
#: label -> settings (the ``allocator`` column's values); :func:`allocator_comparison` picks the order
SETTINGS = {DEFAULT_LABEL: GLIBC_DEFAULT, KEPT_LABEL: KEPT_HEAP}


def allocator_state(environ: dict[str, str] | None = None) -> str:
    """Name of the allocator setting ``environ`` (default: this process's) selects: 'kept heap' when
    it holds :data:`KEPT_HEAP`, 'glibc default' when it sets none of :data:`ALLOCATOR_VARS`, else
    'custom'."""
    env = os.environ if environ is None else environ
    if all(env.get(k) == v for k, v in KEPT_HEAP.items()):
        return KEPT_LABEL
    return DEFAULT_LABEL if not any(k in env for k in ALLOCATOR_VARS) else "custom"


def allocator_comparison(variants: Sequence[str] = ("softmax", "softmax_explicit"), tokens: int = 1024,
                         dtype: str = "float32", head_dim: int = 64, heads: int = 6, warmup: int = 2,
                         repeats: int = 10, threads: int | None = None, timeout_s: float = 900.0,
                         settings: Sequence[str] = (KEPT_LABEL, DEFAULT_LABEL)) -> list[dict[str, Any]]:
    """Time the cores ``variants`` (registry names) at ``tokens`` on the CPU in two fresh processes,
    one per allocator setting (:data:`SETTINGS`), interleaved within each process as in
    :func:`vitspeed.studies.compare.compare_cores`.

    Rows: those of compare_cores (median_ms / iqr_ms per call, peak_mem_mb, ...) plus ``allocator``
    ('glibc default' or 'kept heap'). ``threads``: CPU threads in the probes (default: this
    process's torch setting). ``settings``: which of :data:`SETTINGS` to probe, in order. The kept
    heap goes first by default: measurements made right after a glibc-default probe ran up to twice
    as slow as on their own (the probe's map-and-unmap churn outlives it). A probe that fails raises
    RuntimeError with its error output.
    """
    import torch

    from vitspeed.attention import get_attention

    for name in variants:
        get_attention(name)  # ValueError naming the valid variants
    args = {"variants": list(variants), "tokens": int(tokens), "dtype": dtype, "head_dim": int(head_dim),
            "heads": int(heads), "warmup": int(warmup), "repeats": int(repeats),
            "threads": int(threads or torch.get_num_threads())}
    unknown = [label for label in settings if label not in SETTINGS]
    if unknown or not settings:
        raise ValueError(f"unknown allocator setting(s) {unknown or list(settings)}; valid choices: "
                         f"{', '.join(SETTINGS)}")
    rows: list[dict[str, Any]] = []
    for label in settings:
        setting = SETTINGS[label]
        env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARS}
        env.update(setting)
        env.pop("VITSPEED_DEADLINE", None)  # a probe is one measurement: it must not stop half-way
        proc = subprocess.run([sys.executable, "-m", "vitspeed.allocator", json.dumps(args)], env=env,
                              capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(f"allocator probe ({label}) failed with status {proc.returncode}: "
                               f"{proc.stderr.strip()[-2000:]}")
        probe_rows = json.loads(proc.stdout.strip().splitlines()[-1])
        rows += [{**row, "allocator": label} for row in probe_rows]
    return rows


def _probe(args: dict[str, Any]) -> list[dict[str, Any]]:
    import torch

    from vitspeed.studies.compare import candidate, compare_cores

    torch.set_num_threads(args["threads"])
    return compare_cores([candidate(v, attention=v) for v in args["variants"]], tokens=args["tokens"],
                         head_dim=args["head_dim"], heads=args["heads"], batch_size=1, device="cpu",
                         dtype=args["dtype"], warmup=args["warmup"], repeats=args["repeats"])


if __name__ == "__main__":
    print(json.dumps(_probe(json.loads(sys.argv[1])), default=str))
