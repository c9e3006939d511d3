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
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["Traffic", "count_traffic"]


@dataclass
class Traffic:
    """Bytes read and written by one forward pass, in total and per aten operator."""

    read: int = 0
    written: int = 0
    by_operator: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Bytes read plus bytes written."""
        return self.read + self.written


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


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
        return out


def count_traffic(module: nn.Module, inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> Traffic:
    """Bytes moved by ``module(*inputs)`` in eval mode under inference mode (see module docstring).

    In-place operators whose result aliases an input are counted as views (their writes are not
    seen); the study's modules use none on the timed path.
    """
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode(), _TrafficMode() as mode:
            module(*args)
    finally:
        module.train(was_training)
    return mode.result
