"""Where an attention core's or a model's CPU time goes: sampled by ``perf``, grouped by the code it is in.

Timing says how long a call takes, not which code takes it. When a measurement needs explaining
(fused SDPA barely faster in bfloat16 than in float32 on a CPU whose large bfloat16 matrix products
run four times faster), a sampling profile answers it: ``perf record`` samples the process at
:data:`SAMPLE_HZ` per CPU while it repeats the call, and each sample is attributed to the routine and
library it fell in. Routines are then put in the groups of :data:`GROUPS` (MKL's float32 GEMM, MKL's
bfloat16 GEMM, oneDNN's JIT-generated kernels, the fused-attention kernel's own loops, code
TorchInductor generated, the rest of PyTorch, the OpenMP runtime, the operating system, Python).

The process runs under perf with its events disabled (``perf record -D -1``) and enables them
through perf's control FIFO only around the repeated calls, so imports, model construction, warm-up
and compilation are not in the profile. The allocator settings are those of the CPU preset
(:data:`vitspeed.allocator.KEPT_HEAP`), as in every published CPU timing.

Shares are percentages of the samples taken while the calls ran (both threads' samples together on
two threads). ``ms_per_call`` is the mean wall time of a call under the sampler, a sanity check,
not a latency measurement (the chapters measure latency). Linux only; ``perf`` must be installed and
allowed to sample the user's own processes (``kernel.perf_event_paranoid`` <= 2).
"""
from __future__ import annotations

import inspect
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

__all__ = ["GROUPS", "SAMPLE_HZ", "PERF_ENV", "Group", "ProfilerUnavailable", "perf_binary", "check_perf",
           "parse_report", "group_samples", "profile", "profile_many", "profile_rows", "CHAPTER", "run_worker",
           "checked_calls", "call_columns", "profile_environment", "save_profile"]

#: sampling frequency per CPU (Hz): an odd number, so it does not beat with periodic work
SAMPLE_HZ = 999
#: the perf binary to use (default: ``perf`` on PATH)
PERF_ENV = "VITSPEED_PERF"
#: results folder of the profiles under data/
CHAPTER = "profiles"


@dataclass(frozen=True)
class Group:
    """A group of routines: those whose ``field`` (``dso`` or ``symbol``) matches ``pattern``."""

    name: str
    field: str
    pattern: str


#: First match wins, so the specific groups come before the library-wide ones.
GROUPS: tuple[Group, ...] = (
    # MKL names its routines mkl_blas_<code path>_<routine>: sgemm is float32, *bf16* bfloat16
    Group("MKL float32 GEMM", "symbol", r"^mkl_blas_\w*sgemm"),
    Group("MKL bfloat16 GEMM", "symbol", r"^mkl_blas_\w*bf16"),
    Group("MKL, other", "symbol", r"^mkl_"),
    # oneDNN generates its kernels at run time; perf sees them as anonymous JIT code
    Group("oneDNN JIT kernels", "dso", r"^\[JIT\]|^//anon"),
    Group("fused-attention kernel loops", "symbol", r"flash_attention|_scaled_dot_product"),
    # TorchInductor's C++ code is compiled into shared objects named after a hash
    Group("Inductor-generated code", "dso", r"^c[a-z0-9]{20,}\.so$"),
    Group("PyTorch, other", "dso", r"^libtorch|^libc10|^_C\."),
    Group("OpenMP runtime", "dso", r"^libgomp|^libiomp|^libomp"),
    Group("operating system", "dso", r"^\[kernel"),
    Group("Python", "dso", r"^libpython|^python"),
    Group("other", "dso", r""),
)

_KINDS = ("core", "model")


class ProfilerUnavailable(ValueError):
    """``perf`` is missing or may not sample this process; the message says why and what to do."""


def perf_binary() -> str | None:
    """Path of the perf binary (``$VITSPEED_PERF``, else ``perf`` on PATH), None when there is none."""
    given = os.environ.get(PERF_ENV)
    if given:
        return given if Path(given).is_file() and os.access(given, os.X_OK) else None
    return shutil.which("perf")


def check_perf() -> str:
    """The perf binary, after checking that it can sample a child process of this user.

    Raises :class:`ProfilerUnavailable` when perf is absent, is not Linux's, or may not sample
    (``kernel.perf_event_paranoid`` above 2 without privileges).
    """
    if not sys.platform.startswith("linux"):
        raise ProfilerUnavailable(f"profiling needs Linux perf; this is {sys.platform}")
    perf = perf_binary()
    if perf is None:
        raise ProfilerUnavailable(f"perf was not found (set {PERF_ENV} or install it: Debian/Ubuntu "
                                  "'linux-perf' or 'linux-tools-generic', conda 'perf')")
    with tempfile.TemporaryDirectory(prefix="vitspeed-perf-") as tmp:
        out = Path(tmp) / "check.data"
        res = subprocess.run([perf, "record", "-q", "-F", str(SAMPLE_HZ), "-o", str(out), "--", sys.executable,
                              "-c", "pass"], capture_output=True, text=True)
        if res.returncode != 0:
            why = (res.stderr.strip().splitlines() or ["no message"])[-1]
            raise ProfilerUnavailable(f"perf cannot sample here ({why}); kernel.perf_event_paranoid must be at "
                                      "most 2, or run with CAP_PERFMON")
    return perf


_LINE = re.compile(r"^\s*([\d.]+)%\s*\|\s*(\d+)\s*\|([^|]*)\|(.*)$")


def parse_report(text: str) -> pd.DataFrame:
    """The rows of ``perf report --no-children --sort dso,sym -F overhead,sample,dso,sym -t '|'``:
    one per (library, routine), with columns ``share_pct`` (of all samples), ``samples``, ``dso``
    and ``symbol`` (perf's ``[.]``/``[k]`` prefix removed). Comment lines are skipped; raises
    ValueError when the text holds no sample line."""
    rows = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            continue
        symbol = re.sub(r"^\[[.kgu]\]\s*", "", m.group(4).strip())
        rows.append({"share_pct": float(m.group(1)), "samples": int(m.group(2)), "dso": m.group(3).strip(),
                     "symbol": symbol})
    if not rows:
        raise ValueError("the perf report holds no samples (was the profiled call too short?)")
    return pd.DataFrame(rows)


def _group_of(dso: str, symbol: str, groups: Sequence[Group]) -> str:
    for g in groups:
        if re.search(g.pattern, symbol if g.field == "symbol" else dso):
            return g.name
    return groups[-1].name


def group_samples(report: pd.DataFrame, groups: Sequence[Group] = GROUPS) -> pd.DataFrame:
    """Samples per group of ``groups`` (first matching group wins), in the groups' order, groups with
    no sample left out: columns ``group``, ``samples``, ``share_pct`` (percent of all samples in
    ``report``) and ``top_symbol``, the routine with the most samples in the group."""
    df = report.assign(group=[_group_of(d, s, groups) for d, s in zip(report.dso, report.symbol)])
    total = int(df.samples.sum())
    out = []
    for name in [g.name for g in groups]:
        part = df[df.group == name]
        if not len(part) or not part.samples.sum():
            continue
        top = part.sort_values("samples", ascending=False).iloc[0]
        out.append({"group": name, "samples": int(part.samples.sum()),
                    "share_pct": 100.0 * float(part.samples.sum()) / total, "top_symbol": top.symbol})
    return pd.DataFrame(out, columns=["group", "samples", "share_pct", "top_symbol"])


def _spec(kind: str, target: str, dtype: str, tokens: int | None, img_size: int | None, batch_size: int,
          heads: int, head_dim: int, compiled: bool, seconds: float, threads: int | None,
          attention: str | None, options: Mapping[str, Any] | None) -> dict[str, Any]:
    from vitspeed.attention import get_attention, validate_options
    from vitspeed.envinfo import resolve_dtype

    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(_KINDS)}, got {kind!r}")
    resolve_dtype(dtype, "cpu")
    if kind == "core":
        validate_options(get_attention(target), dict(options or {}))
        if not tokens or tokens < 1:
            raise ValueError(f"a core profile needs tokens >= 1, got {tokens!r}")
    else:
        from vitspeed.models.registry import get_model_spec

        get_model_spec(target)  # the same names flops and bench take (ValueError naming the valid ones)
        if attention is not None:
            validate_options(get_attention(attention), dict(options or {}))
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if kind == "core" and (heads < 1 or head_dim < 1):
        raise ValueError(f"a core profile needs heads >= 1 and head_dim >= 1, got heads={heads}, head_dim={head_dim}")
    if kind == "model" and (img_size is None or img_size < 1):
        raise ValueError(f"a model profile needs a positive img_size, got {img_size!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1 (or omitted for torch's default), got {threads}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be a finite number > 0, got {seconds}")
    return {"kind": kind, "target": target, "dtype": dtype, "tokens": tokens, "img_size": img_size,
            "batch_size": batch_size, "heads": heads, "head_dim": head_dim, "compiled": bool(compiled),
            "seconds": float(seconds), "threads": threads, "attention": attention, "options": dict(options or {})}


def profile(kind: str, target: str, dtype: str = "float32", tokens: int | None = None, img_size: int = 224,
            batch_size: int = 1, heads: int = 6, head_dim: int = 64, compiled: bool = False, seconds: float = 3.0,
            threads: int | None = None, attention: str | None = None,
            options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Profile one call on the CPU for ``seconds``: an attention core (``kind='core'``, ``target`` a
    variant, random (batch, heads, tokens, head_dim) q, k, v) or a model (``kind='model'``,
    ``target`` a model name, ``attention`` an optional variant swapped in, a batch of ``img_size``
    images), eager or compiled with ``torch.compile``.

    Returns ``calls``, ``seconds`` (wall time of the profiled loop), ``ms_per_call`` (mean, under the
    sampler), ``total_samples``, ``groups`` (:func:`group_samples`) and ``symbols``
    (:func:`parse_report`). Raises :class:`ProfilerUnavailable` without perf, ValueError for bad input.
    """
    spec = _spec(kind, target, dtype, tokens, img_size if kind == "model" else None, batch_size, heads, head_dim,
                 compiled, seconds, threads, attention, options)
    perf = check_perf()
    with tempfile.TemporaryDirectory(prefix="vitspeed-profile-") as tmp:
        ctl, ack, data = (os.path.join(tmp, n) for n in ("ctl", "ack", "perf.data"))
        os.mkfifo(ctl)
        os.mkfifo(ack)
        prefix = [perf, "record", "-q", "-F", str(SAMPLE_HZ), "-D", "-1", "--control", f"fifo:{ctl},{ack}", "-o",
                  data, "--"]
        loop = run_worker("vitspeed.profiling", spec, tmp, prefix,
                          {"VITSPEED_PROFILE_CTL": ctl, "VITSPEED_PROFILE_ACK": ack})
        rep = subprocess.run([perf, "report", "-i", data, "--no-children", "--sort", "dso,sym", "-F",
                              "overhead,sample,dso,sym", "--stdio", "-g", "none", "--percent-limit", "0", "-t", "|"],
                             capture_output=True, text=True)
        if rep.returncode != 0:
            raise RuntimeError(f"perf report failed: {rep.stderr.strip()[-300:]}")
    symbols = parse_report(rep.stdout)
    return {**loop, "total_samples": int(symbols.samples.sum()), "groups": group_samples(symbols),
            "symbols": symbols.sort_values("samples", ascending=False).reset_index(drop=True)}


def run_worker(module: str, spec: Mapping[str, Any], tmp: str, prefix: Sequence[str] = (),
               extra_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run ``python -m module SPEC_JSON`` (after ``prefix``, e.g. a perf command line) in a fresh
    process with the CPU preset's allocator settings (:data:`vitspeed.allocator.KEPT_HEAP`) and this
    package first on its path, and return the JSON object the process wrote to the file named by
    ``$VITSPEED_PROFILE_RESULT`` (in ``tmp``). ValueError with the process's message when it failed on a
    ValueError (bad input it found, such as an image size the model cannot take), else RuntimeError with
    the process's last lines when it fails."""
    from vitspeed.allocator import KEPT_HEAP

    result = os.path.join(tmp, "result.json")
    env = {**os.environ, **KEPT_HEAP, **(extra_env or {}), "VITSPEED_PROFILE_RESULT": result}
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    res = subprocess.run([*prefix, sys.executable, "-m", module, json.dumps(spec)], env=env, capture_output=True,
                         text=True)
    if res.returncode != 0 or not os.path.exists(result):
        lines = (res.stderr or res.stdout).strip().splitlines()
        if lines and lines[-1].startswith("ValueError: "):  # bad input found while building: the user's error
            raise ValueError(lines[-1].removeprefix("ValueError: "))
        tail = "\n".join(lines[-5:])
        raise RuntimeError(f"profiling {spec['kind']} {spec['target']} failed (status {res.returncode}): {tail}")
    with open(result, encoding="utf-8") as fh:
        return json.load(fh)


def _arguments(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` completed with :func:`profile`'s defaults (TypeError for an unknown key)."""
    bound = inspect.signature(profile).bind(**cfg)
    bound.apply_defaults()
    return dict(bound.arguments)


def checked_calls(configs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The configs (keyword arguments of :func:`profile`) completed with its defaults, every one
    checked (ValueError naming the valid choices) before any is run."""
    calls = [_arguments(cfg) for cfg in configs]
    for args in calls:
        _spec(**{**args, "img_size": args["img_size"] if args["kind"] == "model" else None})
    return calls


def call_columns(args: Mapping[str, Any], threads: int) -> dict[str, Any]:
    """The columns that name a profiled call in a results row (tokens for a core, image size for a
    model, the other left empty)."""
    core = args["kind"] == "core"
    return {"kind": args["kind"], "target": args["target"], "attention": args["attention"] or "",
            "dtype": args["dtype"], "tokens": args["tokens"] if core else "",
            "img_size": "" if core else args["img_size"], "batch_size": args["batch_size"], "threads": threads}


def profile_environment(threads: int | None, profiler: str) -> dict[str, Any]:
    """The environment record of a profile: this machine's, with the allocator the profiled process
    ran with (the kept heap, whatever this process has) and the ``profiler`` used."""
    from vitspeed.allocator import KEPT_HEAP, allocator_state
    from vitspeed.envinfo import environment_record

    env = environment_record("cpu", "float32", threads)
    env["cpu_allocator"] = allocator_state({**os.environ, **KEPT_HEAP})
    env["env_vars"] = {**env.get("env_vars", {}), **KEPT_HEAP}
    env["profiler"] = profiler
    return env


def save_profile(chapter: str, make_rows, run_id: str | None = None, root: str | os.PathLike | None = None) -> Path:
    """Write the rows and environment record ``make_rows()`` returns to
    ``data/<chapter>/<hardware>__<run id>.csv`` (with its ``.env.json``) in one go: nothing is
    written when it raises, and an existing file of that run id is refused before it runs."""
    from vitspeed.envinfo import environment_record
    from vitspeed.results import ResultsWriter

    writer = ResultsWriter(chapter, environment_record("cpu"), run_id=run_id, root=root)
    if writer.resumed:
        raise ValueError(f"{writer.path} exists already; choose another run id")
    rows, writer.env_record = make_rows()
    writer.extend(rows)
    return writer.path


def profile_rows(configs: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Profile every config (keyword arguments of :func:`profile`) and return the tidy rows (one per
    config and group: the config's columns, ``group``, ``samples``, ``share_pct``, ``top_symbol``,
    ``total_samples``, ``calls``, ``ms_per_call``) and the environment record of the machine.
    All configs are checked before the first is profiled."""
    rows = []
    for args in checked_calls(configs):
        got = profile(**args)
        base = {**call_columns(args, got["threads"]), "compiled": bool(args["compiled"]), "calls": got["calls"],
                "ms_per_call": got["ms_per_call"], "total_samples": got["total_samples"]}
        rows += [{**base, **g} for g in got["groups"].to_dict("records")]
    threads = rows[0]["threads"] if rows else None
    return rows, profile_environment(threads, f"perf record -F {SAMPLE_HZ} (cpu-clock or cycles)")


def profile_many(configs: Sequence[Mapping[str, Any]], run_id: str | None = None,
                 root: str | os.PathLike | None = None) -> Path:
    """:func:`profile_rows`, then the rows written in one go to ``data/profiles/<hardware>__<run id>.csv``
    (with its ``.env.json``); nothing is written when any profile fails. Returns the CSV's path."""
    return save_profile(CHAPTER, lambda: profile_rows(configs), run_id, root)


# ---------------------------------------------------------------------------------------------------
# The profiled process: builds the call, warms it up, and repeats it with perf's events enabled.

def _build_call(spec: Mapping[str, Any]):
    """(module, inputs, call) of a checked spec: the call runs the module, compiled if asked, on the inputs."""
    import torch

    from vitspeed.envinfo import resolve_dtype

    dt = resolve_dtype(spec["dtype"], "cpu")
    g = torch.Generator().manual_seed(0)
    if spec["kind"] == "core":
        from vitspeed.attention import build_core

        core = build_core(spec["target"], head_dim=spec["head_dim"], num_heads=spec["heads"], **spec["options"])
        hq = getattr(core, "num_computed", spec["heads"])
        shapes = [(spec["batch_size"], hq, spec["tokens"], spec["head_dim"])] * 2 + [
            (spec["batch_size"], spec["heads"], spec["tokens"], spec["head_dim"])]
        module = core.to(dt).eval()
        inputs = tuple(torch.randn(s, generator=g).to(dt) for s in shapes)
    else:
        from vitspeed.models import create_model

        kw = {"attention": spec["attention"]} if spec["attention"] else {}
        if spec["options"]:
            kw["attention_options"] = spec["options"]
        module = create_model(spec["target"], img_size=spec["img_size"], **kw).to(dt).eval()
        inputs = (torch.randn(spec["batch_size"], 3, spec["img_size"], spec["img_size"], generator=g).to(dt),)
    if spec["compiled"]:
        from vitspeed.compiling import compile_module

        fn, _ = compile_module(module, *inputs)
    else:
        fn = module
    return module, inputs, lambda: fn(*inputs)


def _worker(spec: Mapping[str, Any]) -> None:
    import torch

    from vitspeed.timing import set_threads

    if spec["threads"]:
        set_threads(spec["threads"])
    threads = torch.get_num_threads()
    _, _, call = _build_call(spec)
    with torch.inference_mode():
        for _ in range(3):
            call()
        with open(os.environ["VITSPEED_PROFILE_CTL"], "w") as ctl, open(os.environ["VITSPEED_PROFILE_ACK"]) as ack:
            ctl.write("enable\n")
            ctl.flush()
            ack.readline()
            t0, calls = time.perf_counter(), 0
            while time.perf_counter() - t0 < spec["seconds"]:
                call()
                calls += 1
            elapsed = time.perf_counter() - t0
            ctl.write("disable\n")
            ctl.flush()
            ack.readline()
    with open(os.environ["VITSPEED_PROFILE_RESULT"], "w", encoding="utf-8") as fh:
        json.dump({"calls": calls, "seconds": elapsed, "ms_per_call": 1e3 * elapsed / calls, "threads": threads}, fh)


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
