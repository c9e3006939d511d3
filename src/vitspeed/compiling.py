"""``torch.compile`` for the timed callables: one graph, static shapes, compile time kept apart.

Every variant runs in eager PyTorch by default, where each elementwise step of a kernelized
attention is its own pass over memory while fused SDPA is one kernel. The compiled candidates ask
how much of that gap a compiler closes: TorchInductor fuses elementwise chains into generated loops
(C++/OpenMP on the CPU, Triton on CUDA). A candidate is compiled with ``fullgraph=True`` (a graph
break raises instead of silently running part of the core eagerly) and ``dynamic=False`` (code
specialised to the timed shape, as a deployment would), and called once under ``inference_mode``,
the mode every timed call runs in, so that the timed calls find their code already generated. The
inputs must be the tensors the timed calls use (made outside inference mode): dynamo guards on a
tensor's dispatch keys, and an inference tensor would not match them.

Compile times are those of a cold compiler: each process compiles into a fresh cache directory of
its own (removed at exit), so ``compile_s`` does not depend on what an earlier run left on disk;
``VITSPEED_KEEP_COMPILE_CACHE=1`` keeps the user's cache instead (faster, and the times then say so
through ``cache_hits``).
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Iterator

import torch

__all__ = ["CompileFailed", "compile_module", "warm_compiler", "no_recompiles", "RECOMPILE_LIMIT",
           "KEEP_CACHE_ENV"]

#: Compiled candidates of one class share one code object, and dynamo compiles at most its recompile
#: limit (8 by default) of specialisations per code object (past it, with ``fullgraph=True``, it
#: raises; without, it would run the rest eagerly). A comparison group compiles a dozen cores of one
#: base class, so the limit is raised while compiling.
RECOMPILE_LIMIT = 256

#: set to 1 to compile with the user's own (possibly warm) inductor and Triton caches
KEEP_CACHE_ENV = "VITSPEED_KEEP_COMPILE_CACHE"

_WARM: list[str] = []
_FAILED: dict[str, str] = {}  # device type -> why nothing can be compiled there (asked once per process)
_CACHE: list[str] = []


class CompileFailed(RuntimeError):
    """``torch.compile`` could not compile a candidate (no C++ compiler, a graph break, ...), or its
    compiled output differs from the eager one; ``status`` is the row status to record
    (``compile_error`` or ``mismatch``)."""

    def __init__(self, message: str, status: str = "compile_error") -> None:
        super().__init__(message)
        self.status = status


def _limit_name() -> str:
    cfg = torch._dynamo.config
    # renamed in torch 2.6; the oldest supported torch (2.4) has only the old name
    return "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"


def _fresh_cache() -> None:
    """Point inductor's and Triton's caches at a new directory for this process (once)."""
    if _CACHE or os.environ.get(KEEP_CACHE_ENV, "") not in ("", "0"):
        return
    path = tempfile.mkdtemp(prefix="vitspeed-compile-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    os.environ["TRITON_CACHE_DIR"] = os.path.join(path, "triton")
    atexit.register(shutil.rmtree, path, True)
    _CACHE.append(path)


def _disabled() -> str:
    """Why torch.compile would run everything eagerly here, or '' when it compiles."""
    if os.environ.get("TORCH_COMPILE_DISABLE", "").lower() in ("1", "true"):
        return "TORCH_COMPILE_DISABLE is set"
    if getattr(torch._dynamo.config, "disable", False):
        return "torch._dynamo.config.disable is set"
    return ""


def warm_compiler(device: str | torch.device = "cpu") -> None:
    """Compile and run a two-op function once per process and device type, so that the compiler's
    one-time setup (imports, toolchain checks, worker pools) is not charged to the first candidate's
    compile time. Raises :class:`CompileFailed` if compiling is disabled or even that cannot be
    compiled; the failure is remembered, so later candidates fail at once instead of trying again."""
    dev = torch.device(device)
    if dev.type in _WARM:
        return
    if dev.type in _FAILED:
        raise CompileFailed(_FAILED[dev.type])
    why = _disabled()
    if why:
        raise CompileFailed(f"torch.compile is disabled ({why}): a compiled candidate would run eagerly")
    _fresh_cache()
    try:
        fn = torch.compile(lambda x: (x * 2.0).relu() + 1.0, fullgraph=True, dynamic=False)
        with torch.inference_mode():
            fn(torch.randn(64, device=dev))
    except Exception as err:  # noqa: BLE001 - any compiler failure means: nothing can be compiled here
        _FAILED[dev.type] = f"torch.compile does not work on {dev.type}: {_first_line(err)}"
        raise CompileFailed(_FAILED[dev.type]) from err
    _WARM.append(dev.type)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0][:200] if text else type(err).__name__)


def _cache_hits() -> int:
    return int(torch._dynamo.utils.counters["inductor"]["fxgraph_cache_hit"])


def compile_module(module: torch.nn.Module, *example_inputs: torch.Tensor) -> tuple[Callable[..., Any], dict[str, Any]]:
    """``torch.compile(module, fullgraph=True, dynamic=False)``, called once on ``example_inputs``.

    Returns the compiled callable and what compiling it took: ``compile_s``, the wall time of that
    first call in seconds (tracing, code generation and compiling, then one run), and
    ``cache_hits``, how many of its graphs came from the compiler's cache instead of being compiled
    (0 with this process's fresh cache, unless the same graph was compiled earlier in the process).
    Raises :class:`CompileFailed` naming the cause when compilation fails; out-of-memory errors
    propagate unchanged.
    """
    dev = example_inputs[0].device if example_inputs else torch.device("cpu")
    warm_compiler(dev)
    compiled = torch.compile(module, fullgraph=True, dynamic=False)
    hits = _cache_hits()
    start = time.perf_counter()
    try:
        with torch._dynamo.config.patch(**{_limit_name(): RECOMPILE_LIMIT}), torch.inference_mode():
            compiled(*example_inputs)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
    except Exception as err:  # noqa: BLE001 - re-raised, typed, unless it is out of memory
        from vitspeed.timing import is_oom_error

        if is_oom_error(err):
            raise
        raise CompileFailed(f"torch.compile failed for {type(module).__name__}: {_first_line(err)}") from err
    return compiled, {"compile_s": time.perf_counter() - start, "cache_hits": _cache_hits() - hits}


@contextlib.contextmanager
def no_recompiles() -> Iterator[None]:
    """While active, a compiled callable that would have to compile again raises instead of
    compiling inside a timed call (``torch.compiler.set_stance('fail_on_recompile')``; a no-op on
    torch versions before 2.6, which lack it: there a recompile would go unnoticed)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is None:
        yield
        return
    with set_stance("fail_on_recompile"):
        yield
