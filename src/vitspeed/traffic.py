"""Memory traffic of an eager forward pass: the bytes its kernels read and write.

Convention: every aten operator PyTorch dispatches reads all its tensor inputs once and writes its
outputs once; operators whose output aliases an input (views: reshape, permute, slicing, ...) move
nothing. This is the traffic of *eager, unfused* execution, the way the study runs every variant: a
fused kernel (``scaled_dot_product_attention``) counts only its own inputs and outputs, an
explicit softmax counts its N x N scores written and read back at each step. Caches are ignored, so
for data that fits in cache it is an upper bound on DRAM traffic; for large tensors it is close.
Units: bytes. ``intensity`` = MACs / bytes, to set against a device's FLOP/s-to-bandwidth ratio.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["Traffic", "PRODUCT_OPERATORS", "count_traffic", "trace_traffic", "aten_kernels", "sdpa_backend",
           "SDPA_BACKENDS"]


@dataclass
class Traffic:
    """Bytes read and written by one forward pass, in total and per aten operator."""

    read: int = 0
    written: int = 0
    by_operator: dict[str, int] = field(default_factory=dict)
    # bytes written by the matrix-product operators, per dtype of their first input
    product_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Bytes read plus bytes written."""
        return self.read + self.written

    @property
    def product_dtype(self) -> str:
        """The dtype the pass's matrix products ran in ('float32', 'bfloat16', ...): the one whose
        products wrote the most bytes, or '' if it ran none. A core given bfloat16 inputs that
        upcasts them computes under the float32 roof, not the bfloat16 one."""
        return max(self.product_bytes, key=self.product_bytes.__getitem__) if self.product_bytes else ""


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _dtype_name(dtype: torch.dtype) -> str:
    # not envinfo.dtype_name, which accepts only the study's three dtypes: a trace can meet any
    return str(dtype).removeprefix("torch.")


class _TrafficMode(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.result = Traffic()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs, outputs = _tensors((args, kwargs)), _tensors(out)
        storages = {t.untyped_storage().data_ptr() for t in inputs if t.numel()}
        if outputs and all(t.numel() == 0 or t.untyped_storage().data_ptr() in storages for t in outputs):
            return out  # a view (or in-place result aliasing an input's storage): no new data written
        read = sum(_nbytes(t) for t in inputs)
        written = sum(_nbytes(t) for t in outputs)
        self.result.read += read
        self.result.written += written
        name = func._schema.name
        self.result.by_operator[name] = self.result.by_operator.get(name, 0) + read + written
        if name in PRODUCT_OPERATORS and inputs:
            key = _dtype_name(inputs[0].dtype)
            self.result.product_bytes[key] = self.result.product_bytes.get(key, 0) + written
        return out


def trace_traffic(fn: Callable[[], Any]) -> Traffic:
    """Bytes moved by one call of the zero-argument ``fn`` under inference mode (see module docstring).

    ``fn`` runs once for real, on whatever device its tensors live, so the element sizes are those
    of the dtype being timed.
    """
    with torch.inference_mode(), _TrafficMode() as mode:
        fn()
    return mode.result


def count_traffic(module: nn.Module, inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> Traffic:
    """Bytes moved by ``module(*inputs)`` in eval mode under inference mode (see module docstring).

    In-place operators whose result aliases an input are counted as views (their writes are not
    seen); the study's modules use none on the timed path.
    """
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    was_training = module.training
    module.eval()
    try:
        return trace_traffic(lambda: module(*args))
    finally:
        module.train(was_training)


class _KernelMode(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func._schema.name)
        return func(*args, **(kwargs or {}))


def aten_kernels(fn: Callable[[], Any]) -> list[str]:
    """Names of the aten operators one call of ``fn`` dispatches to, in order, with composite
    operators decomposed (run under ``no_grad``, not inference mode, so that e.g.
    ``scaled_dot_product_attention`` shows the backend kernel it chose)."""
    with torch.no_grad(), _KernelMode() as mode:
        fn()
    return mode.names


# aten kernel of each SDPA backend (CPU's fused kernel is a flash-style one)
SDPA_BACKENDS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash_cpu",
    "aten::_scaled_dot_product_efficient_attention": "mem_efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
    "aten::_scaled_dot_product_attention_math": "math",
}


# aten matrix products whose input dtype is the dtype a pass computes in: composite (as seen under
# inference mode) and decomposed, and every fused SDPA kernel
PRODUCT_OPERATORS = frozenset({
    "aten::matmul", "aten::einsum", "aten::linear", "aten::conv1d", "aten::conv2d", "aten::convolution",
    "aten::_convolution", "aten::cudnn_convolution", "aten::mkldnn_convolution", "aten::mm", "aten::bmm",
    "aten::addmm", "aten::baddbmm", "aten::addbmm", "aten::dot", "aten::mv", "aten::scaled_dot_product_attention",
}) | frozenset(SDPA_BACKENDS)


class _SdpaMode(TorchFunctionMode):
    """Records, for each ``scaled_dot_product_attention`` call, the backend kernel it dispatched."""

    def __init__(self) -> None:
        super().__init__()
        self.backends: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") != "scaled_dot_product_attention":
            return func(*args, **kwargs)
        outputs = []
        kernels = aten_kernels(lambda: outputs.append(func(*args, **kwargs)))
        found = [SDPA_BACKENDS[n] for n in kernels if n in SDPA_BACKENDS]
        # no fused kernel: the math backend, which decomposes into plain ops (matmul, softmax, ...)
        self.backends.append(found[0] if found else "math")
        return outputs[0]


def sdpa_backend(fn: Callable[[], Any]) -> str:
    """Which backend ``scaled_dot_product_attention`` used in one call of ``fn``.

    One of flash, flash_cpu, mem_efficient, cudnn, overrideable, math (several joined by '+' when
    calls differ), or '' when ``fn`` calls no SDPA at all (an explicit softmax, a linear variant).
    Each SDPA call is caught at the Python API and the aten kernels it dispatches are inspected
    (under ``no_grad``, so that the backend kernel is visible); a call that dispatches none of the
    fused kernels took the math backend. Its ops alone cannot tell it from an explicit softmax:
    newer torch gives it ``aten::_safe_softmax``, torch 2.4 the same ``aten::_softmax`` as ``Tensor.softmax``.
    """
    with torch.no_grad(), _SdpaMode() as mode:
        fn()
    return "+".join(dict.fromkeys(mode.backends))
