"""Chapter 3 (Swin-T with other similarity functions): the seed's "possible sets", re-measured.

The seed project timed Swin-T once per variant with ``time.time()`` around one forward pass of one
image (hardware not stated) and reported base 0.0091863 s, Jaccard 0.0096664 s, Euclidean
0.0087957 s. This module times the same sets as whole models, interleaved, with warm-up and many
repetitions, at batch 1 and at a larger batch:

- ``stock``: timm's own Swin-T. Its ``WindowAttention`` has a ``fused_attn`` flag that timm marks
  experimental: it is on only when ``TIMM_FUSED_ATTN=2`` (see :func:`timm_fused_attn`), so by
  default timm runs the explicit matmul, bias add, softmax, matmul path;
- ``softmax``: our window shell with fused ``scaled_dot_product_attention`` (the fused base every
  ratio is taken against), ``softmax_explicit``: the same shell, three explicit steps;
- ``flatten``: FLatten-Swin-T (focused linear attention over the whole map in stages 1-2);
- ``jaccard``, ``euclidean``, ``cosine``: Swin-T with that similarity in every window.

Units: latency in ms per forward pass of the whole batch (median, IQR, 10th/90th percentiles of
single-pass samples), throughput in images/s, FLOPs in GMACs per image, parameters in millions,
peak memory in MB (rise during one forward). ``ratio_vs_softmax`` is a variant's median over the
fused base's median in the same interleaved measurement; ``ratio_vs_stock`` likewise against timm.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import pandas as pd

from vitspeed.studies.compare import Candidate, candidate, compare_models_finite, run_sweep
from vitspeed.studies.wording import measured_elsewhere

__all__ = ["CHAPTER", "SWIN", "BASE", "VARIANTS", "SEED_SECONDS", "timm_fused_attn", "seed_ratios",
           "add_ratios", "swin_similarity_group", "run_swin_similarity", "ratio_table",
           "single_pass_spread"]

CHAPTER = "swin_similarity"
SWIN = "swin_tiny_patch4_window7_224"
BASE = "softmax"  # the fused baseline every ratio is taken against

#: label -> (candidate spec, one-line description), in the order of the chapter's tables.
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "stock": ({"model": SWIN}, "timm's WindowAttention as shipped"),
    "softmax": ({"model": SWIN, "attention": "softmax"}, "dot-product softmax, fused SDPA"),
    "softmax_explicit": ({"model": SWIN, "attention": "softmax_explicit"},
                         "dot-product softmax, matmul-softmax-matmul"),
    "flatten": ({"model": "flatten_swin_tiny"}, "FLatten-Swin-T: focused linear (stages 1-2), SDPA (3-4)"),
    "jaccard": ({"model": SWIN, "attention": "jaccard"}, "Jaccard/Tanimoto similarity, explicit"),
    "euclidean": ({"model": SWIN, "attention": "euclidean"}, "negative squared distance, fused SDPA"),
    "cosine": ({"model": SWIN, "attention": "cosine"}, "scaled cosine (Swin V2), fused SDPA"),
}

#: The seed's single-run times for one image, in seconds (time.time() around one forward; unknown hardware).
#: Its base is its own Swin-T with dot-product softmax; we pair it with timm's stock model.
SEED_SECONDS: dict[str, float] = {"stock": 0.0091863, "jaccard": 0.0096664, "euclidean": 0.0087957}


def timm_fused_attn() -> dict[str, Any]:
    """Which attention path timm's own Swin-T takes in this environment.

    Returns timm's version, the ``TIMM_FUSED_ATTN`` environment variable ("unset" if absent),
    ``window_fused``: the ``fused_attn`` flag of a freshly built ``timm`` Swin ``WindowAttention``
    (True = SDPA, False = explicit matmul/softmax/matmul), and ``vit_fused``: the same flag for the
    non-experimental ``timm.layers.Attention`` of ViT/DeiT, for contrast.
    """
    import timm
    from timm.models.swin_transformer import WindowAttention

    try:
        from timm.layers import Attention
    except ImportError:  # timm < 1.0.16 defines ViT's Attention in the model module only
        from timm.models.vision_transformer import Attention

    return {"timm": timm.__version__, "TIMM_FUSED_ATTN": os.environ.get("TIMM_FUSED_ATTN", "unset"),
            "window_fused": bool(WindowAttention(dim=96, num_heads=3).fused_attn),
            "vit_fused": bool(Attention(dim=96, num_heads=3).fused_attn)}


def seed_ratios() -> pd.DataFrame:
    """The seed's single-run times (s) and their ratios to its base (label 'stock')."""
    base = SEED_SECONDS["stock"]
    return pd.DataFrame([{"label": k, "seed_s": v, "seed_ratio": v / base} for k, v in SEED_SECONDS.items()])


def _candidates(variants: Sequence[str]) -> list[Candidate]:
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown Swin variant(s) {', '.join(map(repr, unknown))}; "
                         f"valid choices: {', '.join(VARIANTS)}")
    if not variants:
        raise ValueError(f"no Swin variant given; valid choices: {', '.join(VARIANTS)}")
    return [candidate(v, **VARIANTS[v][0]) for v in variants]


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``description``, ``ratio_vs_softmax`` and ``ratio_vs_stock`` (median over the base's median,
    same measurement; NaN when the base is absent or not 'ok') and ``ms_per_image`` to each row, in place."""
    medians = {r["label"]: r.get("median_ms") for r in rows if r.get("status") == "ok"}
    for r in rows:
        r["description"] = VARIANTS[r["label"]][1]
        ok = r.get("status") == "ok"
        for col, ref in (("ratio_vs_softmax", BASE), ("ratio_vs_stock", "stock")):
            r[col] = r["median_ms"] / medians[ref] if ok and medians.get(ref) else float("nan")
        r["ms_per_image"] = r["median_ms"] / r["batch_size"] if ok else float("nan")
    return rows


def swin_similarity_group(img_size: int, batch_size: int, dtype: str, variants: Sequence[str] = tuple(VARIANTS),
                          device: str = "cpu", warmup: int = 3, repeats: int = 10) -> list[dict[str, Any]]:
    """Time the Swin variants interleaved at one (image size, batch, dtype); one row per variant.

    Rows are those of :func:`vitspeed.studies.compare.compare_models` plus :func:`add_ratios`' columns.
    A variant whose output is NaN/inf is recorded with ``status='nonfinite'``, one out of memory with 'oom'.
    """
    rows = compare_models_finite(_candidates(list(variants)), img_size=img_size, batch_size=batch_size,
                                 device=device, dtype=dtype, warmup=warmup, repeats=repeats)
    return add_ratios(rows)


def run_swin_similarity(img_size: int = 224, batch_sizes: Iterable[int] = (1, 4), device: str = "cpu",
                        dtypes: Iterable[str] = ("float32",), variants: Sequence[str] = tuple(VARIANTS),
                        warmup: int = 3, repeats: int = 10, run_id: str | None = None) -> pd.DataFrame:
    """Sweep batch sizes x dtypes, every variant timed in each, rows written to data/swin_similarity.

    Resumable with the same ``run_id``; returns this run's rows.
    """
    variants = list(variants)
    _candidates(variants)  # validate before anything runs
    dtypes = list(dtypes)
    configs = [{"img_size": img_size, "batch_size": int(b), "dtype": dt} for dt in dtypes for b in batch_sizes]

    def group(cfg: dict[str, Any]) -> list[dict[str, Any]]:
        return swin_similarity_group(cfg["img_size"], cfg["batch_size"], cfg["dtype"], variants, device=device,
                                     warmup=warmup, repeats=repeats)

    return run_sweep(CHAPTER, configs, group, key_fields=("img_size", "batch_size", "dtype"), device=device,
                     dtypes=dtypes, run_id=run_id)


def ratio_table(results: pd.DataFrame, batch_size: int = 1) -> pd.DataFrame:
    """The seed's ratios beside ours at ``batch_size``: one row per (hardware, dtype, threads, variant).

    ``ours_vs_stock`` pairs with the seed (its base was the unfused Swin), ``ours_vs_softmax`` is the
    slowdown against the fused base; ``seed_ratio`` is NaN for variants the seed did not time.
    ``ours_p10_vs_stock`` and ``ours_p90_vs_stock`` are the variant's 10th and 90th percentile of single
    passes over the stock model's median (the whiskers of one run's spread).
    """
    ok = results[(results.status.fillna("ok") == "ok") & (results.batch_size == batch_size)]
    cols = ["hardware", "dtype", "threads", "label", "ratio_vs_stock", "ratio_vs_softmax"]
    table = ok[cols].rename(columns={"ratio_vs_stock": "ours_vs_stock", "ratio_vs_softmax": "ours_vs_softmax"})
    table["ours_p10_vs_stock"] = ok.p10_ms / ok.median_ms * ok.ratio_vs_stock
    table["ours_p90_vs_stock"] = ok.p90_ms / ok.median_ms * ok.ratio_vs_stock
    return table.merge(seed_ratios()[["label", "seed_ratio"]], on="label", how="left")


def single_pass_spread(rows: pd.DataFrame) -> pd.Series:
    """How far single forward passes of one model spread, per variant (``rows``' label column): the
    10th-to-90th percentile range over the median, in percent. With the few passes of a CPU run (8 to
    10) the two percentiles are close to the fastest and slowest pass, so one slow pass widens it."""
    ok = rows[rows.status.fillna("ok") == "ok"] if "status" in rows else rows
    return (100 * (ok.p90_ms - ok.p10_ms) / ok.median_ms).set_axis(ok.label).astype(float)


def other_hardware_text(results: pd.DataFrame, this_hardware: str) -> str:
    """Each Swin-T variant's time over the fused base's (``ratio_vs_softmax``; above 1 is slower) on
    every hardware of ``results`` other than ``this_hardware``, per precision and batch size, as one
    sentence. Empty when there is no other hardware."""
    if "hardware" not in results or "ratio_vs_softmax" not in results:
        return ""
    ok = results[(results.status.fillna("ok") == "ok") & (results.hardware != this_hardware)
                 & (results.label != "softmax")]
    parts = []
    for (hw, dt, b), g in ok.groupby(["hardware", "dtype", "batch_size"], sort=True):
        ratios = ", ".join(f"{r.label} {r.ratio_vs_softmax:.2f}" for r in g.itertuples())
        parts.append(f"on {hw} in {dt} at batch {int(b)}: {ratios}")
    return measured_elsewhere(parts, "each variant's time over the fused base's")
