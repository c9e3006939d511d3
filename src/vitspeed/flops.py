"""FLOPs and parameters of any model or module, counted from one ``torch.jit.trace``.

Headline convention: **MACs** (multiply-accumulates). What the vision literature calls "FLOPs"
(DeiT-S 4.6G, Swin-T 4.5G, LeViT-128S 305M, ...) is almost always MACs, and fvcore, on which this
counter is built, counts one fused multiply-add as one flop; so ``macs`` is directly comparable with
published tables. Other work is counted apart, in ``elementwise``, and never added to the headline.

Categories (per traced ``aten::`` op):

- ``macs``: products, as output elements x contraction length: ``linear``, ``matmul``, ``mm``,
  ``bmm``, ``addmm``, ``einsum`` (pairwise along numpy's optimal path), convolutions (output
  elements x in_channels/groups x kernel area, bias not counted), and
  ``scaled_dot_product_attention`` (``B*h*Nq*Nk*(d + dv)``, its two products). Normalization layers
  are counted here too, the fvcore way (layer/group/instance norm 5 per element with affine, 4
  without; batch norm in eval 2 per element with affine, 1 without), since the published numbers
  include them.
- ``elementwise``: one op per *output* element of every elementwise op (add, mul, div, exp, gelu,
  hardswish, clamp, where, comparisons, ...; in-place versions alike); 3 per element for
  ``softmax`` / ``log_softmax``; one per *input* element of a reduction (sum, mean, amax, norm,
  cumsum, var, ...) and of pooling; SDPA's softmax, ``3*B*h*Nq*Nk`` (+``B*h*Nq*Nk`` when it adds an
  ``attn_mask``).
- zero: data movement (view, reshape, permute, cat, slice, index, pad, roll, dropout, zeros, ...).

An op with no rule is never silently zero: it is listed in :attr:`FlopCount.unhandled` (op name ->
number of calls), and ``count_flops(..., strict=True)`` raises. Ops on parameters count like any
other (``exp`` of an ``(h, 1, 1)`` logit scale is ``h`` elementwise ops).
"""
from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from math import prod
from typing import Any, Callable

import numpy as np
import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import batchnorm_flop_jit, norm_flop_counter
from torch import nn

__all__ = ["FlopCount", "count_flops", "count_params", "model_flops", "ZERO_COST_OPS"]

MACS, ELEMENTWISE, _UNKNOWN = "macs", "elementwise", "unknown"
_SEP = "\t"  # separates op name and category in the Counter keys handed to fvcore

Handle = Callable[[list, list], Counter]


# --- shapes of traced values -----------------------------------------------------------------

def _is_tensor(value: Any) -> bool:
    return isinstance(value.type(), torch._C.TensorType)


def _shape(value: Any) -> list[int] | None:
    """Sizes of a traced tensor; None for a tensor of unknown shape or a non-tensor."""
    if _is_tensor(value) and value.isCompleteTensor():
        return list(value.type().sizes())
    return None


def _numel(value: Any) -> int | None:
    """Elements of a traced tensor, 0 for a non-tensor (a Python scalar), None if unknown."""
    if not _is_tensor(value):
        return 0
    shape = _shape(value)
    return None if shape is None else prod(shape)


def _result(op: str, category: str, count: int | None) -> Counter:
    if count is None:  # a tensor whose shape the trace did not record: report, never zero
        return Counter({f"{op}{_SEP}{_UNKNOWN}": 1})
    return Counter({f"{op}{_SEP}{category}": int(count)})


# --- handles: products ------------------------------------------------------------------------

def _contraction(value: Any) -> int | None:
    shape = _shape(value)
    return None if shape is None else shape[-1]


def _product_handle(op: str, lhs: int, out_index: int = 0) -> Handle:
    """MACs = output elements x contraction length (last dim of input ``lhs``)."""

    def handle(inputs, outputs):
        n_out, k = _numel(outputs[out_index]), _contraction(inputs[lhs])
        return _result(op, MACS, None if n_out is None or k is None else n_out * k)

    return handle


def _linear(inputs, outputs):
    n_out, k = _numel(outputs[0]), _contraction(inputs[1])  # weight (out, in)
    return _result("linear", MACS, None if n_out is None or k is None else n_out * k)


def _addbmm(inputs, outputs):
    a, b = _shape(inputs[1]), _shape(inputs[2])  # (b, n, k) @ (b, k, m) summed over b
    return _result("addbmm", MACS, None if a is None or b is None else prod(a) * b[-1])


def _outer(inputs, outputs):
    return _result("outer", MACS, _numel(outputs[0]))  # one multiply per output element


def _conv_handle(op: str, transposed_index: int | None, transposed: bool = False) -> Handle:
    """Conv MACs: output (input, if transposed) elements x in_channels/groups x kernel area."""

    def handle(inputs, outputs):
        w = _shape(inputs[1])
        is_t = transposed if transposed_index is None else bool(inputs[transposed_index].toIValue())
        n = _numel(inputs[0] if is_t else outputs[0])
        # weight is (out, in/groups, k...) or, transposed, (in, out/groups, k...)
        return _result(op, MACS, None if w is None or n is None else n * prod(w[1:]))

    return handle


def _sdpa(inputs, outputs):
    """SDPA: q (..., L, E), k (..., S, E), v (..., S, Ev) -> (..., L, Ev).

    MACs: L S (E + Ev) per head. Elementwise: the softmax's 3 L S (4 with an additive mask). The
    scaling by 1/sqrt(E) is not counted: the fused kernels fold it into the score computation, while
    the explicit form's q * scale is a separate operator and counts L E (the small gap between the two
    softmax rows of the complexity tables)."""
    q, v, out = _shape(inputs[0]), _shape(inputs[2]), _shape(outputs[0])
    if q is None or v is None or out is None:
        return _result("scaled_dot_product_attention", MACS, None)
    scores = prod(out[:-1]) * v[-2]  # batch x heads x L x S
    has_mask = _is_tensor(inputs[3])
    return Counter({
        f"scaled_dot_product_attention{_SEP}{MACS}": scores * (q[-1] + v[-1]),
        f"scaled_dot_product_attention{_SEP}{ELEMENTWISE}": scores * (4 if has_mask else 3),
    })


_ELLIPSIS_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _einsum_terms(equation: str, shapes: list[list[int]]) -> tuple[list[str], str]:
    """Explicit operand and output index strings, with ``...`` spelt out as letters."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    n_ell = max((len(s) - (len(t) - 3) for t, s in zip(terms, shapes) if "..." in t), default=0)
    ell = _ELLIPSIS_LETTERS[len(_ELLIPSIS_LETTERS) - n_ell:] if n_ell else ""
    out_terms = []
    for term, shape in zip(terms, shapes):
        if "..." in term:
            k = len(shape) - (len(term) - 3)
            term = term.replace("...", ell[len(ell) - k:] if k else "")
        out_terms.append(term)
    if arrow:
        out = rhs.replace("...", ell)
    else:
        letters = "".join(out_terms)
        out = ell + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ell))
    return out_terms, out


def _einsum(inputs, outputs):
    """Einsum MACs, pairwise along numpy's optimal contraction path.

    A pairwise contraction costs the product of the sizes of all indices it touches (= output
    elements x contraction length); a single-operand step that sums an index away is a reduction
    (elementwise, one per input element); a pure permutation is free.
    """
    equation = inputs[0].toIValue()
    operands = list(inputs[1].node().inputs())
    shapes = [_shape(v) for v in operands]
    if any(s is None for s in shapes):
        return _result("einsum", MACS, None)
    terms, out = _einsum_terms(equation, shapes)
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        for c, n in zip(term, shape):
            sizes[c] = max(sizes.get(c, 1), n)
    fakes = [np.lib.stride_tricks.as_strided(np.zeros(1), [sizes[c] for c in t], [0] * len(t)) for t in terms]
    path = np.einsum_path(f"{','.join(terms)}->{out}", *fakes, optimize="optimal")[0][1:]
    macs = elementwise = 0
    live = list(terms)
    for step in path:
        step = sorted(step, reverse=True)
        picked = [live.pop(i) for i in step]
        touched = set("".join(picked))
        keep = set("".join(live)) | set(out)
        result = "".join(c for c in dict.fromkeys("".join(picked)) if c in keep)
        if len(picked) > 1:
            macs += (len(picked) - 1) * prod(sizes[c] for c in touched)
        elif set(result) != touched or len(picked[0]) != len(set(picked[0])):
            elementwise += prod(sizes[c] for c in picked[0])  # sum or diagonal of one operand
        live.append(result)
    return Counter({f"einsum{_SEP}{MACS}": macs, f"einsum{_SEP}{ELEMENTWISE}": elementwise})


# --- handles: elementwise, reductions, norms ---------------------------------------------------

def _per_output(op: str, per_element: int = 1) -> Handle:
    def handle(inputs, outputs):
        n = _numel(outputs[0])
        return _result(op, ELEMENTWISE, None if n is None else per_element * n)

    return handle


def _per_input(op: str) -> Handle:
    def handle(inputs, outputs):
        return _result(op, ELEMENTWISE, _numel(inputs[0]))

    return handle


def _max_min(op: str) -> Handle:
    """``max(a, b)`` is elementwise (per output); ``max(a)`` / ``max(a, dim)`` is a reduction."""

    def handle(inputs, outputs):
        pairwise = len(inputs) == 2 and _is_tensor(inputs[1])
        return _result(op, ELEMENTWISE, _numel(outputs[0] if pairwise else inputs[0]))

    return handle


def _fvcore_macs(op: str, fn: Callable[[list, list], Any]) -> Handle:
    def handle(inputs, outputs):
        if _shape(inputs[0]) is None:
            return _result(op, MACS, None)
        return _result(op, MACS, fn(inputs, outputs))

    return handle


_ELEMENTWISE_OPS = """
add sub rsub mul div true_divide neg exp exp2 expm1 log log2 log10 log1p sqrt rsqrt pow square
reciprocal abs sign sgn sin cos tan tanh sigmoid erf erfc relu relu6 gelu elu selu celu silu mish
leaky_relu hardswish hardsigmoid hardtanh softplus softsign logsigmoid clamp clamp_min clamp_max
clip minimum maximum fmax fmin where masked_fill lerp addcmul addcdiv floor ceil round trunc frac
fmod remainder floor_divide eq ne lt le gt ge logical_and logical_or logical_not logical_xor
bitwise_and bitwise_or bitwise_not bitwise_xor __and__ __or__ __xor__ atan atan2 asin acos
nan_to_num xlogy hypot threshold
""".split()

_REDUCTION_OPS = """
sum mean amax amin prod norm frobenius_norm nuclear_norm linalg_vector_norm linalg_norm cumsum cumprod
var std var_mean std_mean argmax argmin all any count_nonzero
""".split()

_POOLING_OPS = """
adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d
adaptive_max_pool3d avg_pool1d avg_pool2d avg_pool3d max_pool1d max_pool2d max_pool3d
max_pool1d_with_indices max_pool2d_with_indices max_pool3d_with_indices
""".split()

#: Ops that move or create data without arithmetic: counted as zero, on purpose. A few can add in some
#: modes (col2im sums overlapping patches, index_put with accumulate=True, upsampling interpolates); none
#: of the study's models uses them, which the counter's empty ``unhandled`` lists in the tests confirm.
ZERO_COST_OPS: frozenset[str] = frozenset("aten::" + op for op in """
view view_as reshape reshape_as _reshape_alias _unsafe_view as_strided permute transpose transpose_ t
contiguous expand expand_as broadcast_to broadcast_tensors cat concat concatenate stack hstack vstack
slice select unbind chunk split split_with_sizes tensor_split flatten unflatten squeeze squeeze_
unsqueeze unsqueeze_ movedim moveaxis swapaxes swapdims narrow diagonal clone to type_as copy_ detach
detach_ alias lift_fresh index index_select gather take_along_dim index_put index_put_ scatter
scatter_ masked_select nonzero pad constant_pad_nd reflection_pad1d reflection_pad2d
replication_pad1d replication_pad2d roll flip repeat repeat_interleave tile unfold im2col col2im
pixel_shuffle pixel_unshuffle channel_shuffle upsample_nearest1d upsample_nearest2d
upsample_nearest3d tril triu dropout dropout_ feature_dropout feature_dropout_ alpha_dropout
alpha_dropout_ zeros zeros_like ones ones_like empty empty_like full full_like fill_ zero_ new_zeros
new_ones new_empty new_full arange linspace meshgrid scalar_tensor size numel dim Int Float Bool
ScalarImplicit item is_floating_point result_type
""".split())


def _handles() -> dict[str, Handle]:
    h: dict[str, Handle] = {
        "aten::linear": _linear,
        "aten::matmul": _product_handle("matmul", 0),
        "aten::mm": _product_handle("mm", 0),
        "aten::bmm": _product_handle("bmm", 0),
        "aten::mv": _product_handle("mv", 0),
        "aten::dot": _product_handle("dot", 0),
        "aten::vdot": _product_handle("vdot", 0),
        "aten::addmm": _product_handle("addmm", 1),
        "aten::addmv": _product_handle("addmv", 1),
        "aten::baddbmm": _product_handle("baddbmm", 1),
        "aten::addbmm": _addbmm,
        "aten::einsum": _einsum,
        "aten::_convolution": _conv_handle("conv", 6),
        "aten::convolution": _conv_handle("conv", 6),
        "aten::scaled_dot_product_attention": _sdpa,
        "aten::layer_norm": _fvcore_macs("layer_norm", norm_flop_counter(2)),
        "aten::group_norm": _fvcore_macs("group_norm", norm_flop_counter(2)),
        "aten::instance_norm": _fvcore_macs("instance_norm", norm_flop_counter(1)),
        "aten::rms_norm": _fvcore_macs("rms_norm", norm_flop_counter(2)),
        "aten::batch_norm": _fvcore_macs("batch_norm", batchnorm_flop_jit),
        "aten::softmax": _per_output("softmax", 3),
        "aten::_softmax": _per_output("softmax", 3),
        "aten::log_softmax": _per_output("log_softmax", 3),
        "aten::_log_softmax": _per_output("log_softmax", 3),
        "aten::max": _max_min("max"),
        "aten::min": _max_min("min"),
        "aten::upsample_linear1d": _per_output("upsample_linear1d", 2),
        "aten::upsample_bilinear2d": _per_output("upsample_bilinear2d", 4),
        "aten::upsample_bicubic2d": _per_output("upsample_bicubic2d", 16),
        "aten::grid_sampler": _per_output("grid_sampler", 4),
    }
    h["aten::outer"] = h["aten::ger"] = _outer
    for n in (1, 2, 3):
        h[f"aten::conv{n}d"] = _conv_handle("conv", None)
        h[f"aten::conv_transpose{n}d"] = _conv_handle("conv", None, transposed=True)
    for op in _ELEMENTWISE_OPS:
        h[f"aten::{op}"] = _per_output(op)
        h[f"aten::{op}_"] = _per_output(op + "_")  # in-place form (harmless where none exists)
    for op in _REDUCTION_OPS + _POOLING_OPS:
        h[f"aten::{op}"] = _per_input(op)
    return h


_HANDLES = _handles()


# --- results ----------------------------------------------------------------------------------

def _zero() -> dict[str, int]:
    return {MACS: 0, ELEMENTWISE: 0}


_ATTENTION_CLASSES = ("Attention", "LiteMLA")
_FFN_NAMES = ("mlp", "ffn", "local_module")  # local_module: the MBConv FFN of an EfficientViT block


def _is_attention(name: str, cls: str) -> bool:
    return name.rsplit(".", 1)[-1] == "attn" or any(c in cls for c in _ATTENTION_CLASSES)


def _is_ffn(name: str, cls: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return last in _FFN_NAMES or cls.endswith("Mlp") or "ffn" in cls.lower() or "SwiGLU" in cls


@dataclass
class FlopCount:
    """Counts of one traced forward pass (see the module docstring for the conventions).

    Attributes:
        macs: headline multiply-accumulates (products, SDPA's two products, norms).
        elementwise: all other arithmetic (elementwise ops, softmax, reductions, pooling).
        by_operator: op name (``linear``, ``conv``, ``add``, ...) -> {"macs", "elementwise"}.
        by_module: module name -> {"macs", "elementwise"} for every module, ``""`` = the whole.
        unhandled: ops with no rule (op name -> number of calls); empty for a trustworthy count.
        module_types: module name -> class name, used by :meth:`breakdown`.
    """

    macs: int
    elementwise: int
    by_operator: dict[str, dict[str, int]]
    by_module: dict[str, dict[str, int]]
    unhandled: dict[str, int]
    module_types: dict[str, str] = field(default_factory=dict)

    @property
    def gmacs(self) -> float:
        """Headline MACs in units of 1e9 (the papers' "GFLOPs")."""
        return self.macs / 1e9

    def breakdown(self) -> dict[str, dict[str, int]]:
        """Totals split into ``attention``, ``ffn`` and ``rest`` (summing to the whole).

        Attention: modules named ``*.attn`` or whose class name contains ``Attention`` (or is
        EfficientViT's ``LiteMLA``); FFN: modules named ``*.mlp`` / ``*.ffn`` / EfficientViT's
        ``local_module``, or whose class is an ``*Mlp`` / FFN / SwiGLU. Only the top-most matching
        module of a subtree is taken, so nothing is counted twice.
        """
        groups = {"attention": _zero(), "ffn": _zero()}
        taken: list[str] = []
        for name, cls in self.module_types.items():
            if name not in self.by_module or any(name.startswith(t + ".") or t == "" for t in taken):
                continue
            group = "attention" if _is_attention(name, cls) else "ffn" if _is_ffn(name, cls) else None
            if group is None:
                continue
            taken.append(name)
            for key in (MACS, ELEMENTWISE):
                groups[group][key] += self.by_module[name][key]
        rest = {MACS: self.macs - groups["attention"][MACS] - groups["ffn"][MACS],
                ELEMENTWISE: self.elementwise - groups["attention"][ELEMENTWISE] - groups["ffn"][ELEMENTWISE]}
        return {**groups, "rest": rest}


def _split(counter: Counter) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """fvcore's ``op<TAB>category`` Counter -> (op -> {macs, elementwise}, op -> unknown calls)."""
    ops: dict[str, dict[str, int]] = {}
    unknown: dict[str, int] = {}
    for key, value in counter.items():
        op, _, category = key.partition(_SEP)
        if category == _UNKNOWN:
            unknown[f"aten::{op} (unknown shape)"] = unknown.get(f"aten::{op} (unknown shape)", 0) + int(value)
        else:
            ops.setdefault(op, _zero())[category] += int(value)
    return ops, unknown


def count_flops(
    model: nn.Module, inputs: torch.Tensor | tuple[torch.Tensor, ...], strict: bool = False
) -> FlopCount:
    """Count MACs and elementwise ops of ``model(*inputs)`` in one trace (eval mode, no grad).

    The model is put in eval mode for the trace and restored afterwards. With ``strict=True`` an
    op the counter has no rule for raises ``ValueError`` naming it; otherwise it is reported in
    ``FlopCount.unhandled``.
    """
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    analysis = FlopCountAnalysis(model, inputs)
    analysis.set_op_handle(**_HANDLES)
    analysis.set_op_handle(**{op: None for op in ZERO_COST_OPS})
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    was_training = model.training
    fv_logger = logging.getLogger("fvcore")
    previous_level = fv_logger.level
    try:
        model.eval()
        fv_logger.setLevel(logging.ERROR)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            per_module = analysis.by_module_and_operator()
        unsupported = dict(analysis.unsupported_ops(""))
    finally:
        model.train(was_training)
        fv_logger.setLevel(previous_level)

    by_operator, unknown = _split(per_module[""])
    by_module = {}
    for name, counter in per_module.items():
        totals = _zero()
        for key, value in counter.items():
            _, _, category = key.partition(_SEP)
            if category in totals:
                totals[category] += int(value)
        by_module[name] = totals
    unhandled = {**{op: int(n) for op, n in unsupported.items()}, **unknown}
    if strict and unhandled:
        listed = ", ".join(f"{op} (x{n})" for op, n in sorted(unhandled.items()))
        raise ValueError(f"the FLOP counter has no rule for these ops: {listed}; "
                         "add a handle in vitspeed.flops or pass strict=False to report them")
    return FlopCount(
        macs=by_module[""][MACS],
        elementwise=by_module[""][ELEMENTWISE],
        by_operator=by_operator,
        by_module=by_module,
        unhandled=unhandled,
        module_types={name: type(m).__name__ for name, m in model.named_modules()},
    )


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (shared parameters once; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def model_flops(name: str, img_size: int = 224, batch_size: int = 1, strict: bool = False,
                **create_kwargs: Any) -> FlopCount:
    """Count model ``name`` (built by :func:`vitspeed.models.create_model`) on a zero image batch."""
    from vitspeed.models import create_model

    model = create_model(name, img_size=img_size, **create_kwargs)
    return count_flops(model, torch.zeros(batch_size, 3, img_size, img_size), strict=strict)

