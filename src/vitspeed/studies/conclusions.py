"""Conclusions: the fastest attention per device, precision and resolution, with the accuracy cost.

Reads what the other chapters wrote to data/ (nothing is measured here):
- ``scaling``: DeiT-S with every attention variant, whole-model latency over resolutions;
- ``swin_similarity``: the seed's Swin-T "possible sets";
- ``hybrids``: LeViT, EfficientViT, QT-ViT, FLatten-Swin, DeiT, Swin.
Accuracies are the papers' published ImageNet top-1 (../shared/reference/papers.md), each with the
setting it was measured in; they are not comparable across settings and we did not train anything.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from vitspeed.studies.wording import (SOFTMAX_FORM_NAMES, beyond_spread, frame_noise, noise, paired_parts,
                                      rows_noise, tied)

__all__ = ["PUBLISHED_TOP1", "FLATTEN_DEIT_T_ABLATION", "bare_kernel_caveat", "TIMED_CHAPTERS", "published_accuracy",
           "ok_rows", "speedups", "fastest", "within_budget", "spread_words", "precision_answer", "tied_with", "swin_sets", "SEED_SETS",
           "hmhsa_in_two_chapters", "reference_forms", "same_models", "agreement", "SAME_MODELS", "core_share",
           "faster_architecture", "pairing", "pairing_text", "PAIRED_SINCE", "conditions", "conditions_text",
           "runs_agree", "narrative_hardware", "other_hardware_text", "scope_text"]

#: variant -> (published top-1, setting, source); QT-ViT Table 2 is one controlled comparison.
PUBLISHED_TOP1: dict[str, tuple[float, str, str]] = {
    "softmax": (79.8, "EfficientViT-B1, QT-ViT Table 2", "xu2024qtvit"),
    "linear_relu": (79.4, "EfficientViT-B1, QT-ViT Table 2", "xu2024qtvit"),
    "linear_cosine": (79.1, "EfficientViT-B1, QT-ViT Table 2", "xu2024qtvit"),
    "linear_mean": (78.8, "EfficientViT-B1, QT-ViT Table 2", "xu2024qtvit"),
    "linear_sigmoid_softmax": (78.9, "EfficientViT-B1, QT-ViT Table 2", "xu2024qtvit"),
    "linear_angular": (79.1, "EfficientViT-B1, QT-ViT Table 2", "xu2024qtvit"),
    "taylor1": (78.5, "EfficientViT-B1, QT-ViT Table 2", "xu2024qtvit"),
    "taylor2_compact": (79.6, "EfficientViT-B1, QT-ViT Table 2", "xu2024qtvit"),
    "taylor2_full": (79.7, "QT-ViT-1, QT-ViT Table 3", "xu2024qtvit"),
    "taylor2_pool": (79.3, "QT-ViT-1 (p=2), QT-ViT Table 3", "xu2024qtvit"),
    "taylor2_chunk": (79.4, "QT-ViT-1 (c=2), QT-ViT Table 3", "xu2024qtvit"),
    "taylor2_random": (61.8, "QT-ViT-1, QT-ViT Table 3", "xu2024qtvit"),
    "focused": (74.1, "DeiT-T (softmax 72.2), FLatten", "han2023flatten"),
}

#: FLatten's ablation on DeiT-T (published top-1, %): the one published account of a bare linear
#: kernel in a plain DeiT, against its softmax baseline. QT-ViT's Table 2 trains its kernels inside
#: EfficientViT-B1, whose attention blocks add multi-scale depthwise convolutions around the kernel.
FLATTEN_DEIT_T_ABLATION: dict[str, float] = {"softmax": 72.2, "linear": 70.5, "focused": 71.8,
                                             "focused + DWC": 74.1}


def bare_kernel_caveat() -> str:
    """A sentence on what QT-ViT Table 2's accuracies do and do not say about a bare kernel in DeiT,
    with FLatten's DeiT-T ablation numbers (:data:`FLATTEN_DEIT_T_ABLATION`)."""
    a = FLATTEN_DEIT_T_ABLATION
    return (f"QT-ViT trains each kernel inside EfficientViT-B1, whose attention blocks add multi-scale depthwise "
            f"convolutions around it; the DeiT-S timed here has the bare kernel, for which the published evidence is "
            f"less kind: FLatten's ablation on DeiT-T puts plain linear attention {a['softmax'] - a['linear']:.1f} "
            f"points below softmax ({a['linear']} against {a['softmax']}), its focused function alone still "
            f"{a['softmax'] - a['focused']:.1f} below ({a['focused']}), and only with a depthwise convolution added "
            f"does it pass softmax ({a['focused + DWC']}). So the budget picks kernels that train to softmax's "
            f"accuracy in an EfficientViT-style block, not kernels that keep DeiT-S's accuracy when swapped in alone")


#: The results of the chapters that time models or cores (what the overview's pass counts cover).
TIMED_CHAPTERS = ("swin_similarity", "linear_kernels", "taylor", "redundancy", "hybrids", "scaling")

#: The seed's "possible sets" as labelled in the Swin chapter.
SEED_SETS = ["softmax", "flatten", "jaccard", "euclidean", "cosine"]


def published_accuracy() -> pd.DataFrame:
    """Published top-1 per variant with its setting and BibTeX key (one row per variant)."""
    return pd.DataFrame([{"attention": k, "published_top1": v[0], "setting": v[1], "source": v[2]}
                         for k, v in PUBLISHED_TOP1.items()])


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that were measured (status ok or absent): OOM, capped and non-finite points dropped."""
    if "status" not in df:
        return df
    return df[df.status.fillna("ok") == "ok"]


SOFTMAX_FORMS = ("softmax", "softmax_explicit")


def speedups(scaling: pd.DataFrame, reference: str | tuple[str, ...] = SOFTMAX_FORMS) -> pd.DataFrame:
    """Model-level speedup of each variant over the best softmax in the same interleaved measurement.

    The reference is the faster of the named softmax forms at each point (fused SDPA is not always
    the faster one: on a CPU at small token counts the explicit form can win), recorded in
    ``reference_form``. One row per (hardware, dtype, img_size, batch_size, attention): median_ms,
    ``reference_ms`` and ``speedup`` = reference median / variant median (> 1 is faster), with the
    variant's ``samples_ms`` and ``timing_group`` where the run kept them; ``noise``, the
    relative difference the two medians must exceed to count (:func:`vitspeed.studies.wording.frame_noise`:
    round by round where both rows kept their samples), and ``clear``, whether the speedup differs from
    1 by more than that.
    """
    from vitspeed.studies.scaling import reference_latency

    df = ok_rows(scaling[scaling.level == "model"]).copy()
    keys = ["hardware", "dtype", "img_size", "batch_size"]
    out = df.merge(reference_latency(df, reference, by=keys), on=[*keys, "tokens"], how="inner")
    out["speedup"] = out.reference_ms / out.median_ms
    out["noise"] = frame_noise(out)
    out["clear"] = [beyond_spread(r, n) for r, n in zip(out.speedup, out.noise)]
    out["img_size"] = out.img_size.astype(int)
    out["batch_size"] = out.batch_size.astype(int)
    out["tokens"] = out.tokens.astype(int)
    # each row's per-round samples and group stay, so that ties among variants (tied_with) are
    # decided round by round like every other comparison
    paired = [c for c in ("samples_ms", "timing_group") if c in out]
    return out[keys + ["attention", "family", "tokens", "median_ms", "iqr_ms", *paired, "reference_form",
                       "reference_ms", "speedup", "noise", "clear"]]


def reference_forms(speed: pd.DataFrame, hardware: str) -> str:
    """Which softmax form was the reference (the faster one) at each measured point of ``hardware``,
    in words, per dtype: e.g. "fused SDPA at every measured point in float32; in bfloat16 the explicit
    form at 224 and 384 px (batch 1), fused SDPA at 512 px (batch 1)". A point is an image size and a
    batch size; ``speed`` is :func:`speedups`' output."""
    forms = speed[speed.hardware == hardware].groupby(["dtype", "img_size", "batch_size"]).reference_form.first()
    if forms.empty:
        raise ValueError(f"no speedups for hardware {hardware!r}; valid choices: "
                         f"{', '.join(sorted(speed.hardware.unique()))}")

    def points(where: list[tuple[int, int]]) -> str:
        by_batch: dict[int, list[str]] = {}
        for size, batch in where:
            by_batch.setdefault(int(batch), []).append(str(int(size)))
        return ", ".join(f"{' and '.join(sizes)} px (batch {b})" for b, sizes in by_batch.items())

    parts = []
    for dtype in sorted(forms.index.get_level_values(0).unique()):
        f = forms.loc[dtype]
        if f.nunique() == 1:
            parts.append(f"{SOFTMAX_FORM_NAMES[f.iloc[0]]} at every measured point in {dtype}")
            continue
        by_form: dict[str, list[tuple[int, int]]] = {}
        for (size, batch), form in f.items():
            by_form.setdefault(form, []).append((size, batch))
        parts.append(f"in {dtype} " + "; ".join(f"{SOFTMAX_FORM_NAMES[v]} at {points(w)}"
                                                for v, w in by_form.items()))
    return "; ".join(parts)


def within_budget(min_top1_drop: float) -> set[str]:
    """The replacements of softmax whose published top-1 in QT-ViT's Table 2 (EfficientViT-B1 setting)
    is within ``min_top1_drop`` points of that table's softmax baseline."""
    table2 = {k: v[0] for k, v in PUBLISHED_TOP1.items() if "Table 2" in v[1]}
    return {k for k, top1 in table2.items() if table2["softmax"] - top1 <= min_top1_drop and k not in SOFTMAX_FORMS}


def fastest(speed: pd.DataFrame, min_top1_drop: float | None = None) -> pd.DataFrame:
    """The fastest variant per (hardware, dtype, img_size, batch_size).

    With ``min_top1_drop`` only replacements of softmax whose published top-1 (QT-ViT Table 2 setting)
    is within that many points of softmax's are eligible: "fast while keeping a good model" (the
    softmax forms themselves are the reference, not candidates).
    """
    df = speed
    if min_top1_drop is not None:
        df = df[df.attention.isin(within_budget(min_top1_drop))]
    idx = df.groupby(["hardware", "dtype", "img_size", "batch_size"]).median_ms.idxmin()
    return df.loc[idx].reset_index(drop=True)


def spread_words(clear: bool) -> str:
    """Whether a speedup exceeds the two medians' spread (the ``clear`` column of :func:`speedups`), in words."""
    return ("beyond the spread of the two medians" if clear
            else "within the spread of the two medians, so not a clear win")


def precision_answer(best: pd.DataFrame, good: pd.DataFrame, hardware: str, dtype: str) -> str:
    """One sentence: the fastest variant (``best``, :func:`fastest` rows) and the fastest within the
    accuracy budget (``good``, :func:`fastest` with ``min_top1_drop``) at the smallest and largest
    image size of ``best`` on ``hardware`` in ``dtype``, with speedups and the spread caveat."""
    here = best[(best.hardware == hardware) & (best.dtype == dtype)].set_index("img_size")
    if here.empty:
        raise ValueError(f"no speedups for {hardware} in {dtype}; valid choices: "
                         f"{', '.join(sorted(set(best.hardware + ' ' + best.dtype)))}")
    ok = good[(good.hardware == hardware) & (good.dtype == dtype)].set_index("img_size")
    parts = []
    for size in sorted({int(here.index.min()), int(here.index.max())}):
        b = here.loc[size]
        g = ok.loc[size] if size in ok.index else None
        if g is not None and g.attention == b.attention:
            parts.append(f"at {size} px {b.attention} is both the fastest variant and the fastest within the accuracy "
                         f"budget, {b.speedup:.2f}x the best softmax ({spread_words(b.clear)})")
            continue
        within = (f", and the fastest within the accuracy budget is {g.attention}, {g.speedup:.2f}x "
                  f"({spread_words(g.clear)})" if g is not None else "")
        parts.append(f"at {size} px the fastest variant is {b.attention}, {b.speedup:.2f}x the best softmax "
                     f"({spread_words(b.clear)}){within}")
    return f"In {dtype} on {hardware}, " + "; ".join(parts) + "."


def narrative_hardware(hardware: Iterable[str], device: str) -> str:
    """The hardware slug the chapter's narrative describes: the first (sorted) of ``hardware`` measured on
    the device type of this execution (``device``, e.g. "cpu" or "cuda:0", against slugs "cpu-..." and
    "cuda-..."), else the first of them; the tables show every hardware. Raises ValueError on none."""
    slugs = sorted(set(hardware))
    if not slugs:
        raise ValueError("no hardware in the results; run a timed chapter first")
    kind = str(device).split(":")[0]
    return next((h for h in slugs if h.startswith(kind + "-")), slugs[0])


def other_hardware_text(best: pd.DataFrame, good: pd.DataFrame, hardware: str) -> str:
    """:func:`precision_answer` for every hardware of ``best`` but ``hardware`` (the narrative's), in each
    precision it measured; a sentence saying there is none when ``hardware`` is the only one."""
    others = sorted(set(best.hardware) - {hardware})
    if not others:
        return (f"{hardware} is the only hardware in data/ so far; another device, a GPU above all, may rank the "
                "variants differently.")
    return " ".join(precision_answer(best, good, h, d) for h in others
                    for d in sorted(best[best.hardware == h].dtype.unique()))


def scope_text(hardware: Iterable[str], narrated: str) -> str:
    """One sentence on what the chapter's conclusions cover: ``narrated`` (:func:`narrative_hardware`)
    alone when it is the only one of ``hardware`` (the slugs in the tables), else that the narrative is
    its and the tables and the other-hardware bullet (:func:`other_hardware_text`) cover the rest."""
    n = len(set(hardware))
    if n <= 1:
        return f"These conclusions hold for {narrated}, the only hardware in data/ so far."
    return (f"The bullets above describe {narrated}, this execution's device, in detail; the tables show all {n} "
            "hardware in data/, and the bullet on the other hardware gives their fastest variants, which may differ.")


def tied_with(speed: pd.DataFrame, row: Mapping[str, Any]) -> list[str]:
    """The variants of :func:`speedups` rows (softmax forms excepted) measured with ``row`` (same
    hardware, dtype, image size and batch size) whose median is within the two medians' spread of
    ``row``'s attention's, in ``speed``'s order; [] when ``row``'s attention is not among them."""
    keys = [k for k in ("hardware", "dtype", "img_size", "batch_size") if k in speed.columns]
    grp = speed[~speed.attention.isin(SOFTMAX_FORMS)]
    for k in keys:  # row[k], not row.dtype: a pandas Series has a dtype attribute of its own
        grp = grp[grp[k] == row[k]]
    grp = grp.set_index("attention")
    return tied(grp, row["attention"]) if row["attention"] in grp.index else []


def hmhsa_in_two_chapters(redundancy: pd.DataFrame, scaling: pd.DataFrame, hardware: str, dtype: str = "float32",
                          img_size: int = 224, batch_size: int = 1) -> pd.DataFrame:
    """One comparison two chapters make, each in its own interleaved run: DeiT-S with hallucinated
    attention against DeiT-S with softmax (the redundancy chapter's ``hmhsa`` variant against its stock
    model, the scaling chapter's ``hallucinated`` against fused ``softmax``). One row per chapter that
    measured it: chapter, speedup (softmax median / hMHSA median, > 1: hMHSA faster), noise (the two
    medians' relative spread) and clear (the speedup differs from 1 by more than that)."""
    def row(df: pd.DataFrame, **where: Any) -> pd.Series | None:
        """The last ok row of ``df`` matching ``where`` and the common setting, or None."""
        df = ok_rows(df)
        for k, v in {"hardware": hardware, "dtype": dtype, "img_size": img_size, "batch_size": batch_size,
                     **where}.items():
            if k not in df:
                return None
            df = df[df[k] == v]
        return df.iloc[-1] if len(df) else None

    small = "deit_small_patch16_224"
    found = {"redundancy": (row(redundancy, base=small, variant="stock"), row(redundancy, base=small, variant="hmhsa")),
             "scaling": (row(scaling, level="model", attention="softmax"),
                         row(scaling, level="model", attention="hallucinated"))}
    rows = []
    for chapter, (ref, var) in found.items():
        if ref is None or var is None:
            continue
        speedup = float(ref["median_ms"] / var["median_ms"])
        z = rows_noise(var, ref)
        rows.append({"chapter": chapter, "speedup": speedup, "noise": z, "clear": beyond_spread(speedup, z)})
    return pd.DataFrame(rows, columns=["chapter", "speedup", "noise", "clear"])


def runs_agree(two: pd.DataFrame) -> tuple[float, bool]:
    """Whether the same speedup measured in two runs (two rows of :func:`hmhsa_in_two_chapters`, with
    ``speedup`` and ``noise``) agrees: (gap, agree), gap = the larger speedup over the smaller, minus 1
    (a fraction), agree = gap within the two spreads together. Each run's spread holds for its own
    ratio only, so the two are added."""
    if len(two) != 2:
        raise ValueError(f"runs_agree compares exactly two runs' rows; got {len(two)}")
    gap = float(two.speedup.max() / two.speedup.min() - 1)
    return gap, bool(gap <= float(two.noise.sum()))


def swin_sets(swin: pd.DataFrame) -> pd.DataFrame:
    """The seed's Swin-T sets per (hardware, dtype, batch): median ms (with the per-round samples and
    timing group where kept, for round-by-round comparisons), ratio to fused softmax, rank."""
    df = ok_rows(swin[swin.label.isin(SEED_SETS)]).copy()
    df["rank"] = df.groupby(["hardware", "dtype", "batch_size"]).median_ms.rank().astype(int)
    cols = ["hardware", "dtype", "batch_size", "label", "median_ms", "iqr_ms",
            *[c for c in ("samples_ms", "timing_group") if c in df], "ratio_vs_softmax", "rank"]
    return df[cols].sort_values(["hardware", "dtype", "batch_size", "rank"]).reset_index(drop=True)


#: The stock models several chapters time at 224 px and batch 1, each in its own interleaved run:
#: measurement -> how to find them (column filters of the chapter's results named by "results",
#: default the measurement's own name) and how each is named there. The linear-kernels chapter
#: times eager DeiT-S twice, in separate groups.
_SAME_MODEL_ROWS: dict[str, dict[str, Any]] = {
    "time_share": {"where": {"component": "attention"}, "name": "model", "median": "total_ms", "iqr": "total_iqr_ms"},
    "swin_similarity": {"where": {"label": "stock"}, "name": "model"},
    "linear_kernels": {"where": {"kind": "model", "label": "softmax"}, "name": "model"},
    "linear_kernels (compile group)": {"results": "linear_kernels", "name": "model",
                                       "where": {"kind": "model_compiled", "label": "softmax"}},
    "redundancy": {"where": {"variant": "stock"}, "name": "model"},
    "hybrids": {"where": {"attention": "stock"}, "name": "model"},  # its Swin-T runs the fused shell
    # not the Taylor chapter's EfficientViT-B1: timed with its BatchNorms unfolded, it is not the model
    # the hybrids chapter times (folded), so a gap between the two would not be run-to-run variation
    "scaling": {"where": {"level": "model", "attention": "softmax"}, "name": None},
}
_DISTURBANCE = ("steal_pct", "cpu_pressure_pct", "copy_gbps")
#: Models named in more than one chapter, and their short names.
SAME_MODELS = {"deit_tiny_patch16_224": "DeiT-T", "deit_small_patch16_224": "DeiT-S",
               "swin_tiny_patch4_window7_224": "Swin-T", "efficientvit_b1": "EfficientViT-B1"}


def same_models(frames: Mapping[str, pd.DataFrame], img_size: int = 224, batch_size: int = 1) -> pd.DataFrame:
    """The same stock model measured by different chapters (some chapters twice, in separate groups),
    one row per (model, hardware, dtype, measurement).

    ``frames`` maps a chapter's results name (``time_share``, ``hybrids``, ...) to its rows (each
    hardware's newest run); chapters not given are skipped. Only the models of :data:`SAME_MODELS`
    with softmax attention as timm ships it (fused SDPA for DeiT), eager, at ``img_size`` and
    ``batch_size``. Columns: model (short name), hardware, dtype, chapter (results name), measurement
    (the chapter, or which of its groups), median_ms, iqr_ms (whole forward pass), steal_pct,
    cpu_pressure_pct and copy_gbps (host memory bandwidth, GB/s) while it was measured (nan for runs
    that predate the record). The scaling chapter's backbone is DeiT-S.
    """
    out = []
    for measurement, rule in _SAME_MODEL_ROWS.items():
        chapter = rule.get("results", measurement)
        df = frames.get(chapter)
        if df is None or df.empty:
            continue
        df = ok_rows(df)
        keep = pd.Series(True, index=df.index)
        for col, value in {**rule["where"], "img_size": img_size, "batch_size": batch_size}.items():
            keep &= df[col] == value if col in df else False
        sel = df[keep]
        if rule["name"] is None:
            names = pd.Series("deit_small_patch16_224", index=sel.index)
        else:
            names = sel[rule["name"]]
        sel = sel.assign(model=names)[names.isin(list(SAME_MODELS))]
        for _, row in sel.iterrows():  # row["dtype"], not row.dtype: a Series has a dtype attribute
            out.append({"model": SAME_MODELS[row["model"]], "hardware": row["hardware"], "dtype": row["dtype"],
                        "chapter": chapter, "measurement": measurement,
                        "median_ms": float(row[rule.get("median", "median_ms")]),
                        "iqr_ms": float(row[rule.get("iqr", "iqr_ms")]),
                        **{c: float(row[c]) if c in row.index else float("nan") for c in _DISTURBANCE}})
    cols = ["model", "hardware", "dtype", "chapter", "measurement", "median_ms", "iqr_ms", *_DISTURBANCE]
    return pd.DataFrame(out, columns=cols).drop_duplicates(["model", "hardware", "dtype", "measurement"])


def agreement(rows: pd.DataFrame) -> pd.DataFrame:
    """How far apart the chapters' medians of one model are (:func:`same_models` rows): per (model,
    hardware, dtype) the number of chapters and of measurements (a chapter may time it in two groups),
    the lowest and highest median (ms), ``spread_pct`` = 100 x (highest / lowest - 1),
    ``median_iqr_pct``, the typical relative IQR within one run, the largest CPU pressure and
    steal (percent) and the lowest copy bandwidth (``min_copy_gbps``, GB/s) recorded while any of
    them was measured (nan where no run of them has the record)."""
    cols = ["model", "hardware", "dtype", "chapters", "measurements", "lowest_ms", "highest_ms", "spread_pct",
            "median_iqr_pct", "max_cpu_pressure_pct", "max_steal_pct", "min_copy_gbps"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    g = rows.assign(rel_iqr=100 * rows.iqr_ms / rows.median_ms).groupby(["model", "hardware", "dtype"])
    out = g.agg(chapters=("chapter", "nunique"), measurements=("measurement", "nunique"),
                lowest_ms=("median_ms", "min"), highest_ms=("median_ms", "max"),
                median_iqr_pct=("rel_iqr", "median"), max_cpu_pressure_pct=("cpu_pressure_pct", "max"),
                max_steal_pct=("steal_pct", "max"), min_copy_gbps=("copy_gbps", "min")).reset_index()
    out["spread_pct"] = 100 * (out.highest_ms / out.lowest_ms - 1)
    return out[cols]


def pairing(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """What comparing round by round changes, per chapter (``frames``: chapter -> its rows, one run each)
    and hardware: over every pair of ok rows timed in the same rounds (one ``timing_group``, samples
    kept), ``pairs``, the median spread each rule asks of their ratio (``unpaired_pct``:
    :func:`vitspeed.studies.wording.noise`; ``paired_pct``: :func:`vitspeed.studies.wording.paired_noise`;
    percent), ``narrower_pct`` (the share of pairs whose paired spread is the narrower, percent),
    ``ratio_wider_pct`` (the share whose round-by-round ratio alone, before the widening by its gap to
    the ratio of the medians, scatters more than the unpaired rule allows, percent), ``only_paired``
    (pairs the paired rule calls different and the unpaired rule within the spread) and
    ``only_unpaired`` (the reverse). Chapters whose rows kept no samples are left out."""
    cols = ["chapter", "hardware", "pairs", "unpaired_pct", "paired_pct", "narrower_pct", "ratio_wider_pct",
            "only_paired", "only_unpaired"]
    out = []
    for chapter, df in frames.items():
        if df.empty or "timing_group" not in df or "samples_ms" not in df:
            continue
        df = ok_rows(df)
        df = df[df.timing_group.notna() & df.samples_ms.notna()]
        for hw, rows in df.groupby("hardware"):
            unpaired, paired, alone, only_p, only_u = [], [], [], 0, 0
            for _, grp in rows.groupby("timing_group"):
                recs = grp.to_dict("records")
                for i, a in enumerate(recs):
                    for b in recs[i + 1:]:
                        ratio = a["median_ms"] / b["median_ms"]
                        u = noise(a["median_ms"], a["iqr_ms"], b["median_ms"], b["iqr_ms"])
                        spread, gap = paired_parts(a, b)
                        p = spread + gap
                        if not (math.isfinite(u) and math.isfinite(p)):
                            continue
                        unpaired.append(u)
                        paired.append(p)
                        alone.append(spread)
                        by_p, by_u = beyond_spread(ratio, p), beyond_spread(ratio, u)
                        only_p += by_p and not by_u
                        only_u += by_u and not by_p
            if not paired:
                continue
            u_arr, p_arr = np.array(unpaired), np.array(paired)
            out.append({"chapter": chapter, "hardware": hw, "pairs": len(paired),
                        "unpaired_pct": 100 * float(np.median(u_arr)), "paired_pct": 100 * float(np.median(p_arr)),
                        "narrower_pct": 100 * float(np.mean(p_arr < u_arr)),
                        "ratio_wider_pct": 100 * float(np.mean(np.array(alone) > u_arr)), "only_paired": only_p,
                        "only_unpaired": only_u})
    return pd.DataFrame(out, columns=cols)


#: the first run id whose rows keep their samples and timing group (the paired rule applies from it on)
PAIRED_SINCE = "20261122-1013"


def pairing_text(pairs: pd.DataFrame) -> str:
    """What :func:`pairing`'s rows for one hardware say, in sentences for the book: the range of the share
    of pairs whose paired spread is the narrower (lowest and highest chapter), how many comparisons
    only one rule decides, and where the paired rule is wider, how much of that the round ratio alone
    explains; where there are no rows, that every verdict uses the unpaired rule."""
    if pairs.empty:
        return (f"No chapter's newest run on this machine kept its samples (runs made before {PAIRED_SINCE}), "
                "so every verdict here uses the unpaired rule.")
    lo, hi = pairs.loc[pairs.narrower_pct.idxmin()], pairs.loc[pairs.narrower_pct.idxmax()]
    narrower = (f"{lo.narrower_pct:.0f}% of the pairs ({lo.chapter}) to {hi.narrower_pct:.0f}% ({hi.chapter})"
                if len(pairs) > 1 else f"{lo.narrower_pct:.0f}% of the pairs ({lo.chapter})")
    return (f"On this machine the paired spread was the narrower for {narrower}. Over all "
            f"{int(pairs.pairs.sum()):,} pairs the paired rule decided {int(pairs.only_paired.sum()):,} "
            "comparisons that the unpaired rule leaves within the spread, and the unpaired rule "
            f"{int(pairs.only_unpaired.sum()):,} that the paired one does not. Where the paired rule is the "
            "wider, its widening is mostly the cause: the round-by-round ratio alone scattered more than the "
            f"unpaired rule allows for at most {pairs.ratio_wider_pct.max():.0f}% of a chapter's pairs, and "
            "with a few rounds the ratio of the medians can lie a few percent from the median of the rounds' "
            "ratios.")


def conditions(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """How disturbed the machine was while each chapter's newest run was timed, per chapter (``frames``:
    chapter -> its rows) and hardware, from the readings every row carries (:mod:`vitspeed.disturbance`).

    A measured group is a ``timing_group`` (rows without one count one each). Columns: chapter,
    hardware, groups, max_steal_pct and max_cpu_pressure_pct (percent, worst group), copy_gbps_min
    and copy_gbps_median (GB/s over the groups), flagged (groups with steal or pressure above
    :data:`~vitspeed.studies.compare.DISTURBED_PCT`, or a copy bandwidth off the run's median by more
    than :data:`~vitspeed.studies.compare.COPY_DEVIATION` either way: the sweep's warning rule,
    :func:`~vitspeed.studies.compare.too_busy` and :func:`~vitspeed.studies.compare.copy_deviates`,
    here against the whole run's median) and copy_vs_hardware (the run's median copy bandwidth over the
    median of all runs listed for that hardware: far below 1, the whole run saw a slower memory
    system, which no within-run rule can flag). The copy bandwidth is read around CPU runs only: a GPU
    run's row has steal and pressure, and NaN for the copy columns. Runs without the readings are left
    out."""
    from vitspeed.studies.compare import copy_deviates, too_busy

    cols = ["chapter", "hardware", "groups", "max_steal_pct", "max_cpu_pressure_pct", "copy_gbps_min",
            "copy_gbps_median", "flagged", "copy_vs_hardware"]
    out = []
    names = ("steal_pct", "cpu_pressure_pct", "copy_gbps")
    for chapter, df in frames.items():
        readings = [c for c in names if c in df] if df is not None else []
        if not readings:
            continue
        df = df[df[readings].notna().any(axis=1)].assign(**{c: math.nan for c in names if c not in df})
        for hw, rows in df.groupby("hardware"):
            own = pd.Series(rows.index.astype(str), index=rows.index)  # a row without a group is its own
            key = rows.timing_group.fillna(own) if "timing_group" in rows else own
            groups = rows.assign(_group=key).groupby("_group").agg(
                steal=("steal_pct", "max"), pressure=("cpu_pressure_pct", "max"), copy=("copy_gbps", "min"))
            median_copy = float(groups["copy"].median())
            flagged = [too_busy(s) or too_busy(p) or copy_deviates(c, median_copy)
                       for s, p, c in zip(groups.steal, groups.pressure, groups["copy"])]
            out.append({"chapter": chapter, "hardware": hw, "groups": len(groups),
                        "max_steal_pct": float(groups.steal.max()), "max_cpu_pressure_pct": float(groups.pressure.max()),
                        "copy_gbps_min": float(groups["copy"].min()), "copy_gbps_median": median_copy,
                        "flagged": int(sum(flagged))})
    table = pd.DataFrame(out, columns=cols[:-1])
    if table.empty:
        return pd.DataFrame(columns=cols)
    table["copy_vs_hardware"] = table.copy_gbps_median / table.groupby("hardware").copy_gbps_median.transform("median")
    return table[cols]


def conditions_text(table: pd.DataFrame, low: float = 0.75) -> str:
    """What :func:`conditions` rows for one hardware say, in a sentence or two: the worst steal and
    pressure, how many groups the warning rule flags and in which chapters, and which runs' copy
    bandwidth lay below ``low`` times the hardware's median run (a run-wide slow memory system)."""
    if table.empty:
        return "No run on this machine recorded the host's condition while it was timed."
    flagged = table[table.flagged > 0]
    text = (f"Over {int(table.groups.sum())} measured groups in {len(table)} chapters' runs, steal stayed at or "
            f"below {table.max_steal_pct.max():.1f}% and CPU pressure at or below {table.max_cpu_pressure_pct.max():.1f}%; ")
    no_copy = table.copy_gbps_median.isna().all()
    quiet = ("the warning rule flags no group. " if no_copy else
             "no group's copy bandwidth left its run's median by more than the warning rule allows. ")
    text += (quiet if flagged.empty else
             "the warning rule flags " + ", ".join(f"{int(r.flagged)} of {int(r.groups)} groups in {r.chapter}"
                                                    for r in flagged.itertuples())
             + " (within a flagged group the variants still shared the same moments, so its ratios stand; its "
               "absolute times, and comparisons with other groups, deserve a second run). ")
    slow = table[table.copy_vs_hardware < low]
    if no_copy:
        text += "The host's copy bandwidth is read around CPU runs only; these runs have none."
    elif slow.empty:
        text += (f"Every run's median copy bandwidth lay within {100 * (1 - low):.0f}% of the median run's "
                 f"({table.copy_gbps_median.median():.1f} GB/s).")
    else:
        text += ("Run-wide, " + ", ".join(f"the {r.chapter} run's memory copies ran at {r.copy_gbps_median:.1f} GB/s "
                                          f"({r.copy_vs_hardware:.2f} times the median run's)"
                                          for r in slow.itertuples())
                 + ": its groups were timed on a slower memory system than the other chapters', which the ratios "
                   "within it share, but its absolute times are not comparable with theirs.")
    return text


def core_share(linear_kernels: pd.DataFrame, hardware: str, dtype: str, batch_size: int = 1,
               model: str = "deit_small_patch16_224", blocks: int = 12, heads: int = 6, head_dim: int = 64,
               img_size: int = 224) -> dict[str, float] | None:
    """How much of ``model``'s time its softmax cores take, from the linear-kernels chapter's run (which
    times the fused softmax core alone and the whole model side by side).

    Returns {"tokens": core token count nearest the model's, "share": blocks x core median / model
    median (a fraction), "bound": 1 / (1 - share), the speed-up a core that cost nothing would give},
    or None when that run lacks either row. The model's geometry (blocks, heads, head_dim) must be
    that of the cores' rows: DeiT-S's by default.
    """
    df = ok_rows(linear_kernels)
    df = df[(df.hardware == hardware) & (df.dtype == dtype) & (df.batch_size == batch_size)]
    core = df[(df.kind == "core") & (df.label == "softmax") & (df.heads == heads) & (df.head_dim == head_dim)]
    whole = df[(df.kind == "model") & (df.model == model) & (df.label == "softmax") & (df.img_size == img_size)]
    if core.empty or whole.empty:
        return None
    n_model = (img_size // 16) ** 2 + 1
    n_core = int(min(core.tokens.unique(), key=lambda n: abs(n - n_model)))
    share = blocks * float(core[core.tokens == n_core].median_ms.iloc[0]) / float(whole.median_ms.iloc[0])
    return {"tokens": n_core, "share": share, "bound": 1 / (1 - share) if share < 1 else float("inf")}


def faster_architecture(hybrids: pd.DataFrame, published_top1: Mapping[str, float], hardware: str, dtype: str,
                        base: str = "deit_small_patch16_224", budget: float = 0.5,
                        img_size: int = 224) -> dict[str, Any] | None:
    """The fastest model of the hybrids chapter whose published top-1 is within ``budget`` points of
    ``base``'s, at the smallest measured batch: {"model", "top1", "base_top1", "speedup" (base median /
    its median), "noise" (the two medians' spread, :func:`~vitspeed.studies.wording.rows_noise`),
    "gmacs", "base_gmacs", "batch_size"}; None when ``base`` was not measured there or no model qualifies."""
    df = ok_rows(hybrids)
    df = df[(df.hardware == hardware) & (df.dtype == dtype) & (df.img_size == img_size)]
    if df.empty:
        return None
    df = df[df.batch_size == df.batch_size.min()].set_index("model")
    if base not in df.index or base not in published_top1:
        return None
    fine = [m for m in df.index if m != base and published_top1.get(m, float("nan")) >= published_top1[base] - budget]
    if not fine:
        return None
    best = df.loc[fine].median_ms.idxmin()
    a, b = df.loc[base], df.loc[best]
    return {"model": best, "top1": published_top1[best], "base_top1": published_top1[base],
            "speedup": float(a.median_ms / b.median_ms), "noise": rows_noise(a, b),
            "gmacs": float(b.gmacs), "base_gmacs": float(a.gmacs), "batch_size": int(df.batch_size.iloc[0])}


def agreement_elsewhere_text(agree: pd.DataFrame, hardware: str, dtype: str, model: str = "DeiT-S") -> str:
    """How far apart the chapters' medians of ``model`` are (:func:`agreement` rows with at least two
    chapters) on every (hardware, dtype) other than the narrated ``hardware`` and ``dtype``, as one
    sentence; empty when there is none."""
    if agree.empty:
        return ""
    rows = agree[(agree.model == model) & (agree.chapters >= 2) & ~((agree.hardware == hardware) & (agree.dtype == dtype))]
    parts = [f"on {r.hardware} in {r.dtype} from {r.lowest_ms:.2f} to {r.highest_ms:.2f} ms over {int(r.chapters)} "
             f"chapters ({r.spread_pct:.1f}% apart; one run's IQR typically {r.median_iqr_pct:.1f}%)"
             for r in rows.sort_values(["hardware", "dtype"]).itertuples()]
    if not parts:
        return ""
    text = f"Elsewhere the same {model}'s medians run " + "; ".join(parts) + "."
    if (rows.hardware.astype(str).str.startswith("cuda-") & (rows.spread_pct > 50)).any():
        text += (" On a GPU at batch 1 a pass of these models is bound by launching its kernels (the kernel "
                 "breakdowns of the scaling and hybrids chapters), and that cost moved between the chapters' runs: "
                 "there too, compare ratios within one run, not absolute times across chapters.")
    return text
