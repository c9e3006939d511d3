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
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import torch

__all__ = ["CompileFailed", "compile_module", "warm_compiler", "no_recompiles", "RECOMPILE_LIMIT"]

#: Compiled candidates of one class share one code object, and dynamo compiles at most its recompile
#: limit (8 by default) of specialisations per code object (past it, with ``fullgraph=True``, it
#: raises; without, it would run the rest eagerly). A comparison group compiles a dozen cores of one
#: base class, so the limit is raised while compiling.
RECOMPILE_LIMIT = 256

_WARM: list[bool] = []


class CompileFailed(RuntimeError):
    """``torch.compile`` could not compile a candidate (no C++ compiler, a graph break, ...)."""


def _limit_name() -> str:
    cfg = torch._dynamo.config
    # renamed in torch 2.6; the oldest supported torch (2.4) has only the old name
    return "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"


def warm_compiler(device: str | torch.device = "cpu") -> None:
    """Compile and run a two-op function once per process and device type, so that the compiler's
    one-time setup (imports, toolchain checks, worker pools) is not charged to the first candidate's
    compile time. Raises :class:`CompileFailed` if even that cannot be compiled."""
    dev = torch.device(device)
    if dev.type in _WARM:
        return
    try:
        fn = torch.compile(lambda x: (x * 2.0).relu() + 1.0, fullgraph=True, dynamic=False)
        with torch.inference_mode():
            fn(torch.randn(64, device=dev))
    except Exception as err:  # noqa: BLE001 - any compiler failure means: nothing can be compiled here
        raise CompileFailed(f"torch.compile does not work on {dev.type}: {_first_line(err)}") from err
    _WARM.append(dev.type)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0][:200] if text else type(err).__name__)


def compile_module(module: torch.nn.Module, *example_inputs: torch.Tensor) -> tuple[Callable[..., Any], float]:
    """``torch.compile(module, fullgraph=True, dynamic=False)``, called once on ``example_inputs``.

    Returns the compiled callable and the wall time of that first call in seconds (tracing, code
    generation and compiling it, then one run; the compiler's caches on disk are used as found, so a
    repeat of the same core compiles faster). Raises :class:`CompileFailed` naming the cause when
    compilation fails; out-of-memory errors propagate unchanged.
    """
    dev = example_inputs[0].device if example_inputs else torch.device("cpu")
    warm_compiler(dev)
    compiled = torch.compile(module, fullgraph=True, dynamic=False)
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
    return compiled, time.perf_counter() - start


@contextlib.contextmanager
def no_recompiles() -> Iterator[None]:
    """While active, a compiled callable that would have to compile again raises instead of
    compiling inside a timed call (``torch.compiler.set_stance('fail_on_recompile')``; a no-op on
    torch versions before 2.6, which lack it)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is None:
        yield
        return
    with set_stance("fail_on_recompile"):
        yield
