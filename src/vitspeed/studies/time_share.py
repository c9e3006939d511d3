"""Chapter 2 (where the time goes): time and FLOPs shares of attention, FFN and the rest of a ViT.

Method: one forward pass with hooks records the exact inputs of every block's attention and FFN.
Three callables are then timed interleaved (A B C A B C ...): the whole model, all attention
modules replayed on their recorded inputs, all FFN modules likewise. "Rest" (patch embedding,
norms, residual adds, window partitioning, head) is the whole minus the two. Replaying modules
one after another is the same work the model does, without the surrounding code, so the shares
are of the model's own kernels, not of Python overhead in a profiler.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import pandas as pd
import torch
from torch import nn

from vitspeed.envinfo import resolve_device, resolve_dtype
from vitspeed.flops import count_flops
from vitspeed.models import create_model
from vitspeed.timing import check_output, measure, samples_text, timing_group
from vitspeed.studies.wording import measured_elsewhere

__all__ = ["record_component_inputs", "time_share", "run_time_share", "with_spread", "share_gaps",
           "attention_core_macs"]

Call = tuple[nn.Module, tuple, dict]


def _components(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    attn, ffn = [], []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "attn":
            attn.append(module)
        elif leaf == "mlp":
            ffn.append(module)
    if not attn or not ffn:
        raise ValueError("model has no '.attn' / '.mlp' blocks (time shares need a DeiT/ViT or Swin model)")
    return attn, ffn


def record_component_inputs(model: nn.Module, x: torch.Tensor) -> tuple[list[Call], list[Call]]:
    """Run ``model(x)`` once and return the (module, args, kwargs) of every attention and FFN call."""
    attn, ffn = _components(model)
    calls: dict[str, list[Call]] = {"attn": [], "ffn": []}
    handles = []

    def hook(kind: str) -> Callable:
        def pre(module, args, kwargs):
            calls[kind].append((module, tuple(a.clone() if torch.is_tensor(a) else a for a in args), dict(kwargs)))
        return pre

    for m in attn:
        handles.append(m.register_forward_pre_hook(hook("attn"), with_kwargs=True))
    for m in ffn:
        handles.append(m.register_forward_pre_hook(hook("ffn"), with_kwargs=True))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return calls["attn"], calls["ffn"]


def _replay(calls: list[Call]) -> Callable[[], Any]:
    def run():
        out = None
        for module, args, kwargs in calls:
            out = module(*args, **kwargs)
        return out
    return run


# (model, img_size, batch_size) -> MACs per component, shared by the dtypes of a sweep
_BREAKDOWN_CACHE: dict[tuple[str, int, int], dict[str, dict[str, float]]] = {}


def time_share(model_name: str, img_size: int, device: str = "cpu", dtype: str = "float32",
               batch_size: int = 1, warmup: int = 3, repeats: int = 10) -> list[dict[str, Any]]:
    """Time and MACs of attention / FFN / rest for one model at one resolution (rows per component).

    Times are medians in ms with IQR; ``time_share`` and ``macs_share`` are fractions of the whole. The
    whole model and the two replayed parts are timed in the same rounds: the attention and ffn rows keep
    their per-round samples (``samples_ms``) and ``timing_group``; rest, a difference, has none.
    """
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev.type)
    model = create_model(model_name, img_size=img_size)
    key = (model_name, img_size, batch_size)
    if key not in _BREAKDOWN_CACHE:  # counts do not depend on the dtype; tracing a 1120 px model takes seconds
        _BREAKDOWN_CACHE[key] = count_flops(model, torch.zeros(batch_size, 3, img_size, img_size)).breakdown()
    flops = _BREAKDOWN_CACHE[key]
    model = model.to(dev, torch_dtype)
    x = torch.randn(batch_size, 3, img_size, img_size, device=dev, dtype=torch_dtype)
    attn_calls, ffn_calls = record_component_inputs(model, x)
    fns = {"total": lambda: model(x), "attention": _replay(attn_calls), "ffn": _replay(ffn_calls)}
    for fn in fns.values():
        check_output(fn)
    timings = measure(fns, device=str(dev), warmup=warmup, repeats=repeats)
    group = timing_group()
    total = timings["total"].median_s
    parts = {"attention": timings["attention"].median_s, "ffn": timings["ffn"].median_s}
    # Not clamped: a negative rest means replaying the parts alone cost more than inside the model.
    parts["rest"] = total - parts["attention"] - parts["ffn"]
    total_macs = sum(v["macs"] for v in flops.values())
    # DeiT/ViT: patches + class token; Swin: tokens of the first stage
    tokens = int(model.patch_embed.num_patches) + int(getattr(model, "num_prefix_tokens", 0) or 0)
    rows = []
    for comp in ("attention", "ffn", "rest"):
        t = timings.get(comp)
        rows.append({
            "model": model_name, "img_size": img_size, "tokens": tokens, "batch_size": batch_size,
            "device": dev.type, "dtype": dtype, "threads": torch.get_num_threads(), "component": comp,
            "median_ms": parts[comp] * 1e3,
            "iqr_ms": t.iqr_s * 1e3 if t is not None else float("nan"),
            "total_ms": total * 1e3, "total_iqr_ms": timings["total"].iqr_s * 1e3,
            "page_faults_per_call": t.page_faults_per_call if t is not None else None,
            # attention and ffn were timed in the same rounds (rest is a difference, with no samples)
            "samples_ms": samples_text(t) if t is not None else None,
            "timing_group": group if t is not None else None,
            "time_share": parts[comp] / total, "macs": flops[comp]["macs"],
            "macs_share": flops[comp]["macs"] / total_macs, "repeats": repeats,
        })
    return rows


def run_time_share(models: Iterable[str], img_sizes: Iterable[int], device: str = "cpu",
                   dtypes: Iterable[str] = ("float32",), batch_size: int = 1, warmup: int = 3,
                   repeats: int = 10, run_id: str | None = None) -> pd.DataFrame:
    """Sweep models x sizes x dtypes, writing rows to data/time_share (resumable by run id)."""
    from vitspeed.studies.compare import run_sweep

    configs = [{"model": m, "img_size": s, "dtype": dt} for m in models for s in img_sizes for dt in dtypes]

    def run_one(cfg: dict) -> list[dict[str, Any]]:
        return time_share(cfg["model"], cfg["img_size"], device=device, dtype=cfg["dtype"],
                          batch_size=batch_size, warmup=warmup, repeats=repeats)

    return run_sweep("time_share", configs, run_one, key_fields=("model", "img_size", "dtype"),
                     device=device, dtypes=dtypes, run_id=run_id)


def with_spread(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with ``spread_ms``: the IQR of attention and FFN (ms), and for *rest* (whole minus
    the two parts, not timed on its own) the three IQRs added in quadrature, as for a difference of
    independent measurements. ``spread_pct`` is the spread as a share of the whole, in percent."""
    keys = [k for k in ["hardware", "dtype", "model", "img_size"] if k in results.columns]
    out = results.copy()
    parts = out[out.component != "rest"].groupby(keys).iqr_ms.apply(lambda s: float((s ** 2).sum()))
    part_var = pd.Series(out.set_index(keys).index.map(parts), index=out.index, dtype=float)
    rest_spread = (part_var + out.total_iqr_ms.astype(float) ** 2) ** 0.5
    out["spread_ms"] = out.iqr_ms.where(out.component != "rest", rest_spread)
    out["spread_pct"] = 100 * out.spread_ms / out.total_ms
    return out


def share_gaps(results: pd.DataFrame) -> pd.DataFrame:
    """Per component: the largest and the mean absolute gap between time share and MACs share, in
    percentage points, over every model, size and dtype in ``results``."""
    gap = (100 * (results.time_share - results.macs_share)).abs()
    return gap.groupby(results.component).agg(max_pp="max", mean_pp="mean")


def attention_core_macs(model_name: str, img_size: int) -> float:
    """MACs per image of the attention *core* alone: the two products over the sequence (QK^T and the
    weighted sum of V), ``2 * b * n^2 * C`` per attention call on a (b, n, C) input (b windows of n
    tokens for Swin, one sequence for ViT), summed over every block; the projections around it (qkv,
    output), which the attention module's MACs also hold, are left out. Counted from one forward pass
    of the model at batch 1 (shapes only; nothing is timed)."""
    model = create_model(model_name, img_size=img_size).eval()
    calls, _ = record_component_inputs(model, torch.zeros(1, 3, img_size, img_size))
    total = 0
    for _, args, _ in calls:
        x = args[0]
        if x.dim() != 3:
            raise ValueError(f"attention input of shape {tuple(x.shape)}; expected (batch or windows, tokens, channels)")
        b, n, c = x.shape
        total += 2 * b * n * n * c
    return float(total)


def other_hardware_text(results: pd.DataFrame, this_hardware: str, model: str = "deit_small_patch16_224",
                        label: str = "DeiT-S") -> str:
    """Attention's share of ``model``'s time (and of its MACs) at the smallest and largest image size
    on every hardware of ``results`` other than ``this_hardware``, per precision, as one sentence.
    Empty when no other hardware measured ``model``."""
    need = {"hardware", "dtype", "model", "img_size", "component", "time_share", "macs_share"}
    if not need <= set(results.columns):
        return ""
    att = results[(results.hardware != this_hardware) & (results.model == model) & (results.component == "attention")]
    parts = []
    for (hw, dt), g in att.groupby(["hardware", "dtype"], sort=True):
        g = g.sort_values("img_size")
        lo, hi = g.iloc[0], g.iloc[-1]
        text = (f"on {hw} in {dt}, attention takes {100 * lo.time_share:.1f}% of {label}'s time at "
                f"{int(lo.img_size)} px (MACs share {100 * lo.macs_share:.1f}%)")
        if len(g) > 1:
            text += f" and {100 * hi.time_share:.1f}% at {int(hi.img_size)} px ({100 * hi.macs_share:.1f}%)"
        parts.append(text)
    return measured_elsewhere(parts)
