"""Chapter 7 (hybrids): convolution/attention hybrids and linear-attention models, latency against FLOPs.

LeViT (BatchNorm folded), FLatten-Swin-T, QT-ViT-1/2/3 and EfficientViT-B1/B2/B3 against DeiT-T/S and
Swin-T, whole models timed interleaved at one image size, batch 1 and a larger batch. The question is
how well FLOPs predict latency: ``ms_per_gmac`` (latency per image over GMACs per image) and its
ratio to the group's median (``time_vs_flops``: > 1 means slower than its FLOPs suggest), and the
Spearman rank correlation between GMACs and latency (:func:`rank_correlation`).

Swin-T is timed with its window attention through fused ``scaled_dot_product_attention`` (the
study's ``softmax`` shell, :data:`ATTENTION`), the fastest softmax form, not timm's default explicit
path: FLatten-Swin-T's softmax stages run fused too, so their pair changes only the attention of
stages 1-2.

Inference form: LeViT's BatchNorms are folded by :func:`vitspeed.models.create_model`; with
``fold_bn`` (default) the BatchNorm after every EfficientViT/QT-ViT ``ConvNormAct`` convolution is
folded too (:func:`fold_conv_bn`), so no hybrid is timed with a BatchNorm an inference build would
remove. QT-ViT's BatchNorm on V (its GELU(BN(V)) shortcut, not after a convolution) stays.

Units: latency in ms per forward pass of the whole batch (median, IQR, 10th/90th percentiles),
throughput in images/s, FLOPs in GMACs per image (the literature's "FLOPs"), parameters in
millions, peak memory in MiB. Published figures (:data:`PUBLISHED`) come from the papers as
collected in the study's reference notes; top-1 is never measured here (weights are random).
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import pandas as pd
import torch
from torch import nn

from vitspeed.studies.compare import candidate, compare_models_finite, run_sweep
from vitspeed.studies.wording import measured_elsewhere, rows_noise

__all__ = ["CHAPTER", "MODELS", "ATTENTION", "PUBLISHED", "SOURCES", "DEFAULT_MODELS", "PAIRS", "fold_conv_bn",
           "count_batchnorms", "batchnorms_left", "published_table", "hybrids_group", "run_hybrids", "spearman",
           "rank_correlation", "add_flops_fit", "pair_ratios", "inversions", "per_gmac_drop", "flops_fit_extreme",
           "HYBRID_FAMILIES", "swin_is_fused", "swin_fused_vs_stock"]

CHAPTER = "hybrids"

#: timm/study model name -> (label, family), in the chapter's order.
MODELS: dict[str, tuple[str, str]] = {
    "deit_tiny_patch16_224": ("DeiT-T", "ViT"),
    "deit_small_patch16_224": ("DeiT-S", "ViT"),
    "swin_tiny_patch4_window7_224": ("Swin-T", "Swin"),
    "flatten_swin_tiny": ("FLatten-Swin-T", "FLatten"),
    "levit_128s": ("LeViT-128S", "LeViT"),
    "levit_192": ("LeViT-192", "LeViT"),
    "levit_256": ("LeViT-256", "LeViT"),
    "efficientvit_b1": ("EfficientViT-B1", "EfficientViT"),
    "efficientvit_b2": ("EfficientViT-B2", "EfficientViT"),
    "efficientvit_b3": ("EfficientViT-B3", "EfficientViT"),
    "qtvit_1": ("QT-ViT-1", "QT-ViT"),
    "qtvit_2": ("QT-ViT-2", "QT-ViT"),
    "qtvit_3": ("QT-ViT-3", "QT-ViT"),
}

#: The families that mix convolutions with attention (the rest are plain transformers: ViT, Swin, FLatten).
HYBRID_FAMILIES = ("LeViT", "EfficientViT", "QT-ViT")

#: Models timed with an attention swapped in (registry name); the rest as timm or the study builds them.
#: Swin-T's window attention through fused SDPA: the fastest honest softmax, as FLatten-Swin-T's stages 3-4.
ATTENTION: dict[str, str] = {"swin_tiny_patch4_window7_224": "softmax"}

#: A small set for CPU-sized defaults: one model of each kind.
DEFAULT_MODELS = ["deit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "flatten_swin_tiny", "levit_128s",
                  "efficientvit_b1", "qtvit_1"]

#: (model, reference) pairs the chapter compares directly: what a change of design costs against its FLOPs.
PAIRS: list[tuple[str, str]] = [
    ("qtvit_1", "efficientvit_b1"),
    ("flatten_swin_tiny", "swin_tiny_patch4_window7_224"),
    ("levit_128s", "deit_tiny_patch16_224"),
    ("efficientvit_b1", "deit_tiny_patch16_224"),
]

#: Published FLOPs (GMACs), params (M) and ImageNet top-1 (%) with their bib key; absent = not collected.
PUBLISHED: dict[str, dict[str, Any]] = {
    # DeiT-T's 1.3 G as printed in PVT's Table 2 (the FLatten paper prints 1.2 G); params and top-1 are DeiT's
    "deit_tiny_patch16_224": {"gmacs": 1.3, "params_m": 5.7, "top1": 72.2, "source": "wang2021pvt"},
    # DeiT-S's 4.6 G is printed in the Swin paper's Table 1 (and PVT's Table 2; the DeiT paper prints no FLOPs)
    "deit_small_patch16_224": {"gmacs": 4.6, "params_m": 22.1, "top1": 79.9, "source": "liu2021swin"},
    # params: the paper's Table 1 (29 M), the source cited; the official Swin README gives 28 M
    "swin_tiny_patch4_window7_224": {"gmacs": 4.5, "params_m": 29.0, "top1": 81.3, "source": "liu2021swin"},
    "flatten_swin_tiny": {"top1": 82.1, "source": "han2023flatten"},
    # LeViT and EfficientViT: the figures of the authors' official READMEs (model zoo tables)
    "levit_128s": {"gmacs": 0.305, "params_m": 7.8, "top1": 76.6, "source": "graham2021levit"},
    "efficientvit_b1": {"gmacs": 0.52, "params_m": 9.1, "top1": 79.4, "source": "cai2023efficientvit"},
    "qtvit_1": {"top1": 79.6, "source": "xu2024qtvit"},
}


#: Bib key -> how the tables name the source (the bibliography page holds the full references).
SOURCES: dict[str, str] = {
    "touvron2021deit": "DeiT (Touvron et al. 2021)", "wang2021pvt": "PVT (Wang et al. 2021), Table 2",
    "liu2021swin": "Swin (Liu et al. 2021), Table 1", "han2023flatten": "FLatten (Han et al. 2023)",
    "graham2021levit": "LeViT (Graham et al. 2021), official README",
    "cai2023efficientvit": "EfficientViT (Cai et al. 2023), official README",
    "xu2024qtvit": "QT-ViT (Xu et al. 2024), compact-kernel ablation",
}


def fold_conv_bn(model: nn.Module) -> nn.Module:
    """Fold the BatchNorm2d of every ``ConvNormAct`` (timm EfficientViT-MIT) into its convolution, in place.

    Uses the running statistics (eval mode), so outputs are unchanged within float rounding. Other
    modules are left alone; returns the model.
    """
    from timm.models.efficientvit_mit import ConvNormAct
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ConvNormAct) and isinstance(module.norm, nn.BatchNorm2d) \
                    and type(module.conv) is nn.Conv2d:
                module.conv = fuse_conv_bn_eval(module.conv, module.norm)
                module.norm = nn.Identity()
    return model


def count_batchnorms(model: nn.Module) -> int:
    """Number of BatchNorm layers (any dimension) left in ``model``."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def batchnorms_left(models: Iterable[str], fold_bn: bool = True, img_size: int = 224) -> pd.DataFrame:
    """BatchNorm layers in each model as it is timed (after LeViT's folding and, with ``fold_bn``,
    :func:`fold_conv_bn`): columns model, label, batchnorms. Builds each model once."""
    from vitspeed.models import create_model

    rows = []
    for cand in _candidates(list(models), fold_bn):
        model = create_model(cand["model"], img_size=img_size, attention=cand.get("attention"))
        if cand.get("prepare") is not None:
            model = cand["prepare"](model)
        rows.append({"model": cand["model"], "label": cand["label"], "batchnorms": count_batchnorms(model)})
    return pd.DataFrame(rows)


def _candidates(models: Sequence[str], fold_bn: bool) -> list[dict[str, Any]]:
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ValueError(f"unknown or no model(s) {', '.join(map(repr, unknown)) or '(empty list)'}; "
                         f"valid choices: {', '.join(MODELS)}")
    cands = []
    for name in models:
        spec: dict[str, Any] = {"model": name}
        if name in ATTENTION:
            spec["attention"] = ATTENTION[name]
        if fold_bn and name.startswith(("efficientvit_", "qtvit_")):
            spec["prepare"] = fold_conv_bn
        cands.append(candidate(MODELS[name][0], **spec))
    return cands


def published_table(models: Iterable[str] | None = None) -> pd.DataFrame:
    """Published figures, one row per model: model, label, family, published_gmacs, published_params_m,
    published_top1 (ImageNet-1k, %), source (bib key), cited (the source as the tables name it,
    :data:`SOURCES`); NaN (and "") where the reference notes give none."""
    rows = []
    for name in (models if models is not None else MODELS):
        pub = PUBLISHED.get(name, {})
        rows.append({"model": name, "label": MODELS[name][0], "family": MODELS[name][1],
                     "published_gmacs": pub.get("gmacs", float("nan")),
                     "published_params_m": pub.get("params_m", float("nan")),
                     "published_top1": pub.get("top1", float("nan")), "source": pub.get("source", ""),
                     "cited": SOURCES.get(pub.get("source", ""), pub.get("source", ""))})
    return pd.DataFrame(rows)


def hybrids_group(models: Sequence[str], img_size: int, batch_size: int, dtype: str, device: str = "cpu",
                  warmup: int = 3, repeats: int = 10, fold_bn: bool = True) -> list[dict[str, Any]]:
    """Time ``models`` interleaved at one (image size, batch, dtype); one row per model.

    Rows of :func:`vitspeed.studies.compare.compare_models` plus ``family``, ``bn_folded`` (True where
    BatchNorms were folded: LeViT always, EfficientViT/QT-ViT with ``fold_bn``; False for the
    LayerNorm models, which have none),
    ``ms_per_image`` (median_ms / batch) and ``ms_per_gmac`` (ms per image per GMAC per image).
    """
    rows = compare_models_finite(_candidates(list(models), fold_bn), img_size=img_size, batch_size=batch_size,
                                 device=device, dtype=dtype, warmup=warmup, repeats=repeats)
    family = {label: fam for label, fam in MODELS.values()}
    for r in rows:
        r["family"] = family[r["label"]]
        r["bn_folded"] = bool(r["model"].startswith("levit_")
                              or (fold_bn and r["model"].startswith(("efficientvit_", "qtvit_"))))
        ok = r.get("status") == "ok"
        r["ms_per_image"] = r["median_ms"] / batch_size if ok else float("nan")
        r["ms_per_gmac"] = r["ms_per_image"] / r["gmacs"] if ok else float("nan")
    return rows


def run_hybrids(models: Sequence[str] = tuple(DEFAULT_MODELS), img_size: int = 224,
                batch_sizes: Iterable[int] = (1, 8), device: str = "cpu", dtypes: Iterable[str] = ("float32",),
                warmup: int = 3, repeats: int = 10, fold_bn: bool = True,
                run_id: str | None = None) -> pd.DataFrame:
    """Sweep batch sizes x dtypes over ``models``, rows written to data/hybrids; returns this run's rows."""
    models = list(models)
    _candidates(models, fold_bn)  # validate before anything runs
    dtypes = list(dtypes)
    configs = [{"img_size": img_size, "batch_size": int(b), "dtype": dt} for dt in dtypes for b in batch_sizes]

    def group(cfg: dict[str, Any]) -> list[dict[str, Any]]:
        return hybrids_group(models, cfg["img_size"], cfg["batch_size"], cfg["dtype"], device=device,
                             warmup=warmup, repeats=repeats, fold_bn=fold_bn)

    return run_sweep(CHAPTER, configs, group, key_fields=("img_size", "batch_size", "dtype"), device=device,
                     dtypes=dtypes, run_id=run_id)


def spearman(x: Iterable[float], y: Iterable[float]) -> float:
    """Spearman rank correlation: Pearson correlation of the ranks (ties get their average rank).

    NaN for fewer than 3 pairs or a constant input.
    """
    xs, ys = pd.Series(list(x), dtype=float), pd.Series(list(y), dtype=float)
    if len(xs) != len(ys):
        raise ValueError(f"spearman needs two sequences of equal length; got {len(xs)} and {len(ys)}")
    if len(xs) < 3:
        return float("nan")
    rx, ry = xs.rank(), ys.rank()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(rx.corr(ry))


_GROUP = ["hardware", "dtype", "threads", "batch_size"]


def rank_correlation(results: pd.DataFrame, x: str = "gmacs", y: str = "ms_per_image") -> pd.DataFrame:
    """Spearman correlation of ``x`` and ``y`` across models, per (hardware, dtype, threads, batch).

    Columns: the group keys, ``models`` (how many), ``spearman``. Only status 'ok' rows count.
    """
    ok = results[results.status.fillna("ok") == "ok"]
    keys = [k for k in _GROUP if k in ok]
    out = [{**dict(zip(keys, key if isinstance(key, tuple) else (key,))), "models": len(g),
            "spearman": spearman(g[x], g[y])} for key, g in ok.groupby(keys, sort=True)]
    return pd.DataFrame(out, columns=[*keys, "models", "spearman"])


def add_flops_fit(results: pd.DataFrame) -> pd.DataFrame:
    """Copy of the 'ok' rows with ``time_vs_flops``: ms_per_gmac over its group's median ms_per_gmac.

    Groups are (hardware, dtype, threads, batch); 1 = as fast as FLOPs predict with the group's
    typical cost per GMAC, 2 = twice as slow as its FLOPs suggest, 0.5 = twice as fast.
    """
    ok = results[results.status.fillna("ok") == "ok"].copy()
    keys = [k for k in _GROUP if k in ok]
    ok["time_vs_flops"] = ok.ms_per_gmac / ok.groupby(keys).ms_per_gmac.transform("median")
    return ok


def pair_ratios(results: pd.DataFrame, pairs: Sequence[tuple[str, str]] = tuple(PAIRS)) -> pd.DataFrame:
    """For each (model, reference) pair present in a group: its MACs ratio and its latency ratio.

    One row per (hardware, dtype, threads, batch, pair): ``macs_ratio`` = gmacs(model)/gmacs(reference),
    ``time_ratio`` = ms_per_image(model)/ms_per_image(reference), ``time_per_macs`` = time_ratio /
    macs_ratio (> 1: the model is slower than its FLOPs predict relative to the reference), ``noise``
    (the two medians' relative spread, :func:`vitspeed.studies.wording.rows_noise`; nan without IQRs).
    """
    ok = results[results.status.fillna("ok") == "ok"]
    keys = [k for k in _GROUP if k in ok]
    out = []
    for key, g in ok.groupby(keys, sort=True):
        by_model = g.set_index("model")
        for model, ref in pairs:
            if model not in by_model.index or ref not in by_model.index:
                continue
            a, b = by_model.loc[model], by_model.loc[ref]
            macs_ratio = float(a.gmacs / b.gmacs)
            time_ratio = float(a.ms_per_image / b.ms_per_image)
            out.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))), "model": model,
                        "reference": ref, "pair": f"{a.label} / {b.label}", "macs_ratio": macs_ratio,
                        "time_ratio": time_ratio, "time_per_macs": time_ratio / macs_ratio,
                        "noise": rows_noise(a, b) if "iqr_ms" in g else float("nan")})
    return pd.DataFrame(out, columns=[*keys, "model", "reference", "pair", "macs_ratio", "time_ratio",
                                      "time_per_macs", "noise"])


def inversions(results: pd.DataFrame) -> pd.DataFrame:
    """Pairs of models that FLOPs order one way and latency the other, beyond the spread.

    Per (hardware, dtype, threads, batch): every pair (more, fewer) where ``more`` has more GMACs per
    image yet a lower ms per image, by more than the two medians' spread (half the relative IQR of
    each, added). Columns: the group keys, more, fewer (labels), macs_ratio (more / fewer, > 1),
    time_ratio (more / fewer, < 1), noise. Sorted by group, then largest MACs ratio first.
    """
    ok = results[results.status.fillna("ok") == "ok"]
    keys = [k for k in _GROUP if k in ok]
    out = []
    for key, g in ok.groupby(keys, sort=True):
        rows = list(g.itertuples(index=False))
        for a in rows:
            for b in rows:
                if a.gmacs <= b.gmacs or a.ms_per_image >= b.ms_per_image:
                    continue
                noise = rows_noise(a._asdict(), b._asdict())
                time_ratio = a.ms_per_image / b.ms_per_image
                if abs(time_ratio - 1) > noise:
                    out.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))), "more": a.label,
                                "fewer": b.label, "macs_ratio": a.gmacs / b.gmacs, "time_ratio": time_ratio,
                                "noise": noise})
    cols = [*keys, "more", "fewer", "macs_ratio", "time_ratio", "noise"]
    df = pd.DataFrame(out, columns=cols)
    return df.sort_values([*keys, "macs_ratio"], ascending=[True] * len(keys) + [False]).reset_index(drop=True)


def per_gmac_drop(results: pd.DataFrame, small: int, large: int) -> pd.DataFrame:
    """How much cheaper a GMAC gets from batch ``small`` to batch ``large``, per model.

    One row per (hardware, dtype, threads, model) measured at both: label, family, ms_per_gmac at each
    batch and ``drop_pct`` = 100 x (1 - large / small), the share of the batch-``small`` cost per GMAC
    that the larger batch removes.
    """
    ok = results[results.status.fillna("ok") == "ok"]
    keys = [k for k in ("hardware", "dtype", "threads") if k in ok]
    lo = ok[ok.batch_size == small].set_index([*keys, "model"])
    hi = ok[ok.batch_size == large].set_index([*keys, "model"])
    both = lo.index.intersection(hi.index)
    df = pd.DataFrame({"label": lo.loc[both, "label"], "family": lo.loc[both, "family"],
                       "ms_per_gmac_small": lo.loc[both, "ms_per_gmac"],
                       "ms_per_gmac_large": hi.loc[both, "ms_per_gmac"]})
    df["drop_pct"] = 100 * (1 - df.ms_per_gmac_large / df.ms_per_gmac_small)
    return df.reset_index()


def flops_fit_extreme(rows: pd.DataFrame, worst: bool = True) -> dict[str, Any]:
    """The model slowest (``worst``) or fastest for its FLOPs in one group (rows of :func:`add_flops_fit`,
    one per model): label, ``time_vs_flops``, and the runner-up's label and value with ``tied`` = True
    when the two costs per GMAC are no different within the two medians' spread (the runner-up could
    as well be the extreme in another run)."""
    ranked = rows.sort_values("time_vs_flops", ascending=not worst)
    first = ranked.iloc[0]
    out = {"label": first.label, "time_vs_flops": float(first.time_vs_flops), "runner_up": None,
           "runner_up_time_vs_flops": float("nan"), "tied": False}
    if len(ranked) > 1:
        second = ranked.iloc[1]
        ratio = float(first.ms_per_gmac / second.ms_per_gmac)
        out.update(runner_up=second.label, runner_up_time_vs_flops=float(second.time_vs_flops),
                   tied=abs(ratio - 1) <= rows_noise(first, second))
    return out


def swin_is_fused(rows: pd.DataFrame) -> bool:
    """Whether the Swin-T of these rows (one run) was timed with fused SDPA (:data:`ATTENTION`); runs made
    before that choice timed timm's own explicit window attention. False when Swin-T is absent."""
    att = rows.loc[rows.model == "swin_tiny_patch4_window7_224", "attention"]
    return bool(len(att)) and att.iloc[0] == ATTENTION["swin_tiny_patch4_window7_224"]


def swin_fused_vs_stock(hardware: str, dtype: str, batch_size: int = 1) -> float:
    """The Swin chapter's ratio of Swin-T with fused softmax to timm's stock Swin-T (median over median,
    one interleaved run) on ``hardware`` at ``dtype`` and ``batch_size``; nan where it was not measured."""
    from vitspeed.results import read_results

    sw = read_results("swin_similarity", latest_only=True)
    if sw.empty:
        return float("nan")
    sw = sw[(sw.status.fillna("ok") == "ok") & (sw.hardware == hardware) & (sw.dtype == dtype)
            & (sw.batch_size == batch_size)].set_index("label")
    if not {"softmax", "stock"} <= set(sw.index):
        return float("nan")
    return float(sw.loc["softmax", "median_ms"] / sw.loc["stock", "median_ms"])


def other_hardware_text(results: pd.DataFrame, this_hardware: str) -> str:
    """What the models' ordering looks like on every hardware of ``results`` other than
    ``this_hardware``, per precision: the Spearman correlation of MACs and latency and the fastest
    model per image, at each batch size. Empty when there is no other hardware."""
    ok = results[(results.status.fillna("ok") == "ok") & (results.hardware != this_hardware)]
    if not len(ok):
        return ""
    rho = rank_correlation(ok)
    parts = []
    for (hw, dt), g in ok.groupby(["hardware", "dtype"], sort=True):
        per_batch = []
        for b, gb in g.groupby("batch_size", sort=True):
            r = rho[(rho.hardware == hw) & (rho.dtype == dt) & (rho.batch_size == b)].spearman
            name = gb.set_index("label").ms_per_image.idxmin()
            per_batch.append(f"at batch {int(b)} the Spearman correlation of MACs and latency is "
                             f"{float(r.iloc[0]):.2f} and the lowest median per image is {name}'s" if len(r) else
                             f"at batch {int(b)} the lowest median per image is {name}'s")
        parts.append(f"on {hw} in {dt}, " + "; ".join(per_batch))
    return measured_elsewhere(parts)


def precision_ratio_text(results: pd.DataFrame, low: str = "bfloat16", high: str = "float32") -> str:
    """Per CUDA hardware and batch size in ``results``: the range of ``low``/``high`` time-per-image
    ratios over the convolutional hybrids (EfficientViT, QT-ViT) and over the DeiTs, as one sentence.
    Empty when no hardware measured both precisions."""
    ok = results[(results.status.fillna("ok") == "ok") & results.hardware.astype(str).str.startswith("cuda-")]
    ok = ok[ok.dtype.isin([low, high])]
    if not len(ok):
        return ""
    piv = ok.pivot_table(index=["hardware", "batch_size", "model"], columns="dtype", values="ms_per_image")
    if not {low, high} <= set(piv.columns):
        return ""
    ratio = (piv[low] / piv[high]).dropna().reset_index(name="ratio")
    parts = []
    for (hw, b), g in ratio.groupby(["hardware", "batch_size"], sort=True):
        conv = g[g.model.str.startswith(("efficientvit_", "qtvit_"))].ratio
        deit = g[g.model.str.startswith("deit_")].ratio
        if len(conv) and len(deit):
            parts.append(f"on {hw} at batch {int(b)}, {low} takes {conv.min():.2f} to {conv.max():.2f} times the "
                         f"{high} time per image for the EfficientViT and QT-ViT models and {deit.min():.2f} to "
                         f"{deit.max():.2f} times for the DeiTs")
    return ("In the tables above, " + "; ".join(parts) + ".") if parts else ""
