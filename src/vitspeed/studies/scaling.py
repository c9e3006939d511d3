"""Chapter "scaling": latency, throughput and memory of every attention variant as tokens grow.

Two levels, both timed with the shared machinery of :mod:`vitspeed.studies.compare` (all variants
of one configuration interleaved, outputs checked finite, out-of-memory recorded per candidate):

- ``core``: the attention core alone on random (B, heads, N, head_dim) q, k, v (DeiT-S geometry:
  6 heads of 64 by default), over token counts N. Token counts must be perfect squares because
  FLatten's ``focused`` core, given no grid, treats all N tokens as a square map for its DWC.
- ``model``: DeiT-S with every block's attention swapped, over image sizes (N = (side/16)^2 + 1
  tokens) at one batch size, and over batch sizes at one image size.

``caps`` limits costly variants (``taylor2_full`` is O(N d^3)): ``{variant: max tokens per call}``,
tokens per image times the batch size (the cost is linear in both); a capped point is not run and
is recorded with ``status='capped'`` and its ``cap_tokens``, so tables list it.

The *crossover* of a variant is the token count where it overtakes softmax attention in its faster
form at that point (fused SDPA, ``softmax``, or the explicit ``softmax_explicit``, which wins on a
CPU in bfloat16): the ratio r(N) = latency(variant) / latency(reference), measured in one
interleaved group per N, is interpolated linearly in log N - log r between the two measured points
where it falls through 1; a ratio inside the two medians' spread is a tie, which can only bound
the crossover (:func:`crossover_point`). The FLOPs-predicted crossover solves the closed-form core costs
(:func:`vitspeed.formulas.core_formula`) for the same N. Units: latency ms per call/batch (median,
IQR), throughput calls/s (core) or images/s (model), peak memory MB (rise during one forward).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import sympy as sp

from vitspeed import formulas as F
from vitspeed.allocator import DEFAULT_LABEL, KEPT_LABEL, allocator_comparison, allocator_state
from vitspeed.attention import get_attention, list_attentions
from vitspeed.envinfo import resolve_device
from vitspeed.results import new_run_id
from vitspeed.roofline import measure_ceilings
from vitspeed.studies.compare import candidate, compare_cores_finite, compare_models_finite, run_sweep
from vitspeed.studies.wording import beyond_spread, frame_noise, noise, rows_noise, sig

__all__ = ["REFERENCE", "BACKBONE", "resolve_variants", "model_tokens", "core_group", "model_group",
           "run_scaling", "crossover_point", "crossovers", "crossover_label", "predicted_crossovers",
           "latency_ratios", "reference_latency", "SOFTMAX_FORMS",
           "ALLOCATOR_VARIANTS", "allocator_effect", "allocator_finding", "level_comparison", "gemm_shapes",
           "gemm_shape_table", "gemm_shape_finding"]

CHAPTER = "scaling"
REFERENCE = "softmax"  # fused SDPA, the fastest honest softmax baseline
BACKBONE = "deit_small_patch16_224"
# the allocator check: a core with no large intermediate against one that writes the N x N map
ALLOCATOR_VARIANTS = ("softmax", "softmax_explicit")
PATCH = 16
KEY_FIELDS = ("level", "tokens", "img_size", "batch_size", "dtype", "allocator")
NOT_IN_RANGE = "not within measured range"
FASTER_THROUGHOUT = "faster throughout"
CROSSES = "crosses"
TOO_FEW = "too few points"
FASTER_BY = "faster by"
SLOWER_FROM = "slower from"
WITHIN_AT_MAX = "within the spread at the largest N"
WITHIN_THROUGHOUT = "within the spread throughout"
#: the softmax forms; the faster of them at each point is the reference of a crossover
SOFTMAX_FORMS = ("softmax", "softmax_explicit")


def resolve_variants(variants: str | Iterable[str]) -> list[str]:
    """``"all"`` -> every registered variant; else the names, checked against the registry.

    The reference (fused softmax) is always included, first.
    """
    names = list_attentions() if variants == "all" else list(variants)
    for name in names:
        get_attention(name)  # ValueError listing the valid names
    return [REFERENCE] + [n for n in names if n != REFERENCE]


def model_tokens(img_size: int, patch: int = PATCH) -> int:
    """Tokens of DeiT at ``img_size``: (img_size / patch)^2 patches plus the class token."""
    if img_size % patch:
        raise ValueError(f"image size {img_size} is not a multiple of the patch size {patch}; "
                         f"valid sizes: multiples of {patch} (224, 240, ...)")
    return (img_size // patch) ** 2 + 1


def _capped(variant: str, tokens: int, batch_size: int, caps: dict[str, int] | None) -> int | None:
    """The cap of ``variant`` if tokens x batch exceeds it, else None."""
    cap = (caps or {}).get(variant)
    return int(cap) if cap is not None and tokens * batch_size > cap else None


def _capped_row(level: str, variant: str, tokens: int, cap: int, **extra: Any) -> dict[str, Any]:
    return {"level": level, "label": variant, "attention": variant, "family": get_attention(variant).family,
            "tokens": tokens, **extra, "status": "capped", "cap_tokens": cap}


def core_group(variants: Sequence[str], tokens: int, batch_size: int = 1, device: str = "cpu",
               dtype: str = "float32", head_dim: int = 64, heads: int = 6, warmup: int = 3,
               repeats: int = 10, caps: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """All variants' cores timed interleaved at one token count: rows of compare_cores plus
    ``level='core'``, ``family``, ``img_size`` (empty) and capped rows; a core whose output is not
    finite (e.g. overflow in float16) gets ``status='nonfinite'`` and the others are timed without it."""
    run = [v for v in variants if _capped(v, tokens, batch_size, caps) is None]
    rows = compare_cores_finite([candidate(v, attention=v) for v in run], tokens=tokens, head_dim=head_dim,
                                heads=heads, batch_size=batch_size, device=device, dtype=dtype, warmup=warmup,
                                repeats=repeats) if run else []
    for row in rows:
        row.update(level="core", family=get_attention(row["attention"]).family, img_size=None)
    for v in variants:
        cap = _capped(v, tokens, batch_size, caps)
        if cap is not None:
            rows.append(_capped_row("core", v, tokens, cap, img_size=None, batch_size=batch_size,
                                    dtype=dtype, head_dim=head_dim, heads=heads))
    return rows


def model_group(variants: Sequence[str], img_size: int, batch_size: int = 1, device: str = "cpu",
                dtype: str = "float32", warmup: int = 3, repeats: int = 10,
                caps: dict[str, int] | None = None, model: str = BACKBONE) -> list[dict[str, Any]]:
    """DeiT-S with each variant's attention, timed interleaved at one (image size, batch): rows of
    compare_models plus ``level='model'``, ``tokens``, ``family`` and capped rows (non-finite
    outputs recorded as ``status='nonfinite'``, as for cores)."""
    tokens = model_tokens(img_size)
    run = [v for v in variants if _capped(v, tokens, batch_size, caps) is None]
    rows = compare_models_finite([candidate(v, model=model, attention=v) for v in run], img_size=img_size,
                                 batch_size=batch_size, device=device, dtype=dtype, warmup=warmup,
                                 repeats=repeats) if run else []
    for row in rows:
        row.update(level="model", tokens=tokens, family=get_attention(row["attention"]).family)
    for v in variants:
        cap = _capped(v, tokens, batch_size, caps)
        if cap is not None:
            rows.append(_capped_row("model", v, tokens, cap, img_size=img_size, batch_size=batch_size,
                                    dtype=dtype, model=model))
    return rows


def gemm_shapes(img_sizes: Iterable[int], device: str = "cpu", dtype: str = "float32", model: str = BACKBONE,
                warmup: int = 3, repeats: int = 10) -> list[dict[str, Any]]:
    """The backbone's first FFN product (tokens x C by C x 4C) at each image size's token count n and at
    n - 1, timed interleaved: does the matrix library run the model's shapes (patches plus a class
    token: an odd n) as fast as its neighbours? Rows: level='gemm', attention='fc1', label 'M=<rows>',
    size (M, the product's rows), model_img_size (the image size whose token count M is, or is one
    above), device, dtype, threads, median_ms / iqr_ms / n, flops (2 M C 4C), flops_per_s (at the
    median), samples_ms and timing_group (one interleaved measurement), status='ok'. No tokens or
    img_size: the sweep keys its configurations by those, and all of this is one configuration."""
    import timm
    import torch
    import torch.nn.functional as Fn

    from vitspeed.envinfo import resolve_dtype
    from vitspeed.timing import measure, samples_text, timing_group

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev.type)
    fc1 = timm.create_model(model, pretrained=False).blocks[0].mlp.fc1
    c_in, c_out = fc1.in_features, fc1.out_features
    g = torch.Generator().manual_seed(0)
    w = torch.randn(c_out, c_in, generator=g).to(dev, dt)
    b = torch.randn(c_out, generator=g).to(dev, dt)
    sizes = {}
    for s in img_sizes:
        n = model_tokens(int(s))
        for m in (n - 1, n):
            sizes.setdefault(m, int(s))
    xs = {m: torch.randn(1, m, c_in, generator=g).to(dev, dt) for m in sizes}
    fns = {f"M={m}": (lambda x=xs[m]: Fn.linear(x, w, b)) for m in sizes}
    timings = measure(fns, device=str(dev), warmup=warmup, repeats=repeats)
    group = timing_group()
    rows = []
    for m, s in sizes.items():
        r = timings[f"M={m}"].row()
        flops = 2.0 * m * c_in * c_out
        rows.append({"level": "gemm", "family": "gemm", "attention": "fc1", "label": f"M={m}", "size": m,
                     "model_img_size": s, "device": dev.type, "dtype": dtype, "threads": torch.get_num_threads(),
                     "median_ms": r["median_ms"], "iqr_ms": r["iqr_ms"], "n": r["n"], "flops": flops,
                     "flops_per_s": flops / (r["median_ms"] / 1e3),
                     "page_faults_per_call": r["page_faults_per_call"],
                     "samples_ms": samples_text(timings[f"M={m}"]), "timing_group": group, "status": "ok"})
    return rows


def gemm_shape_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per hardware, dtype and image size: the FFN product's rate (GFLOP/s) at the model's token count n
    and at n - 1, their ratio (``rate_ratio`` < 1: the model's own shape runs slower) and
    ``beyond_spread`` (the ratio of the two medians per row exceeds their spread)."""
    g = results[(results.level == "gemm") & (results.status.fillna("ok") == "ok")]
    out = []
    for (hw, dt, s), grp in g.groupby(["hardware", "dtype", "model_img_size"]):
        grp = grp.set_index("size").sort_index()
        if len(grp) < 2:
            continue
        lo, hi = grp.iloc[0], grp.iloc[-1]  # n - 1, n
        rate = hi.flops_per_s / lo.flops_per_s
        out.append({"hardware": hw, "dtype": dt, "img_size": int(s), "tokens": int(grp.index[-1]),
                    "gflops_at_n": hi.flops_per_s / 1e9, "gflops_at_n_minus_1": lo.flops_per_s / 1e9,
                    "rate_ratio": rate,
                    "beyond_spread": beyond_spread(1 / rate, rows_noise(hi, lo))})
    return pd.DataFrame(out)


def gemm_shape_finding(table: pd.DataFrame, hardware: str, threshold: float = 0.9) -> str:
    """One sentence from :func:`gemm_shape_table` for ``hardware``: the (dtype, image size) points where the
    model's own token count runs its FFN product at less than ``threshold`` of the rate one token
    fewer gets, beyond the spread, or that there are none (with the lowest ratio measured)."""
    t = table[table.hardware == hardware]
    if t.empty:
        return "The matrix-product shapes were not measured on this hardware."
    slow = t[(t.rate_ratio < threshold) & t.beyond_spread]
    if slow.empty:
        low = t.loc[t.rate_ratio.idxmin()]
        return (f"No image size and precision runs the FFN's product at the model's token count more than "
                f"{100 * (1 - threshold):.0f}% below the rate one token fewer gets, beyond the spread (the lowest "
                f"ratio, {100 * low['rate_ratio']:.0f}% in {low['dtype']} at {int(low['img_size'])} px, is "
                f"{'beyond' if low['beyond_spread'] else 'within'} it).")  # low['dtype']: a Series has .dtype
    parts = [f"{r.dtype} at {r.img_size} px ({r.tokens} tokens: {100 * r.rate_ratio:.0f}% of the rate at "
             f"{r.tokens - 1})" for r in slow.itertuples()]
    return ("The model's own token count (the patches plus a class token) is a slow shape for the matrix library "
            f"in {'; '.join(parts)}: there the FFN products, which are the same whatever the attention, run at "
            "that lower rate in every variant's model, adding the same time to each (ratios between variants "
            "move only by the share that time takes).")


def _check_square(tokens: Iterable[int], variants: Sequence[str]) -> None:
    if "focused" not in variants:
        return
    bad = [n for n in tokens if math.isqrt(n) ** 2 != n]
    if bad:
        raise ValueError(f"core token counts {bad} are not perfect squares, which the 'focused' core needs "
                         "(its DWC treats the N tokens as a square map); valid choices: 64, 256, 1024, 4096, ...")


def run_scaling(core_variants: str | Iterable[str] = "all", core_tokens: Iterable[int] = (64, 256),
                model_variants: str | Iterable[str] = "all", img_sizes: Iterable[int] = (224,),
                batch_sizes: Iterable[int] = (1,), batch_img_size: int = 224, model_batch_size: int = 1,
                core_batch_size: int = 1, device: str = "cpu", dtypes: Iterable[str] = ("float32",),
                head_dim: int = 64, heads: int = 6, warmup: int = 3, repeats: int = 10,
                caps: dict[str, int] | None = None, run_id: str | None = None,
                model: str = BACKBONE, ceilings: bool = True,
                ceiling_sizes: tuple[int, int] | None = None, allocator_tokens: int | None = None,
                allocator_variants: Sequence[str] = ALLOCATOR_VARIANTS, gemm: bool = True) -> pd.DataFrame:
    """Sweep both levels into data/scaling as ONE run (one file per hardware): this run's rows.

    Core level: ``core_tokens`` x dtypes at ``core_batch_size``. Model level: ``img_sizes`` at
    ``model_batch_size`` plus ``batch_sizes`` at ``batch_img_size`` (shared points measured once),
    ``model`` a DeiT/ViT timm name (DeiT-S by default). With ``ceilings``, each dtype starts with
    the device's measured roofline ceilings (:func:`vitspeed.roofline.measure_ceilings`,
    ``level='ceiling'`` rows; ``ceiling_sizes`` = (matmul side, copy bytes), default per device
    type), against which the core rows are placed. On the CPU, ``allocator_tokens`` adds per dtype
    the ``allocator_variants`` cores at that token count timed under glibc's default allocator and
    under the kept heap (:func:`vitspeed.allocator.allocator_comparison`, ``level='allocator'``
    rows with an ``allocator`` column); ignored on CUDA, whose caching allocator keeps freed blocks.
    Resumable with the same ``run_id``; a whole configuration that runs out of memory is recorded
    as ``status='oom'``.
    """

    core_vs = resolve_variants(core_variants)
    model_vs = resolve_variants(model_variants)
    alloc_vs = resolve_variants(allocator_variants)
    core_tokens, img_sizes, batch_sizes, dtypes = list(core_tokens), list(img_sizes), list(batch_sizes), list(dtypes)
    _check_square(core_tokens, core_vs)
    for s in [*img_sizes, batch_img_size]:
        model_tokens(s)
    run_id = run_id or new_run_id()
    configs: list[dict[str, Any]] = []
    for dt in dtypes:
        if ceilings:
            configs.append({"level": "ceiling", "tokens": None, "img_size": None, "batch_size": None, "dtype": dt})
        if gemm:
            configs.append({"level": "gemm", "tokens": None, "img_size": None, "batch_size": None, "dtype": dt})
        configs += [{"level": "core", "tokens": n, "img_size": None, "batch_size": core_batch_size, "dtype": dt}
                    for n in core_tokens]
        points = [(s, model_batch_size) for s in img_sizes]
        points += [(batch_img_size, b) for b in batch_sizes if (batch_img_size, b) not in points]
        configs += [{"level": "model", "tokens": model_tokens(s), "img_size": s, "batch_size": b, "dtype": dt}
                    for s, b in points]
    if allocator_tokens and resolve_device(device).type == "cpu":
        # last, and the kept heap before glibc's default in every dtype: what ran right after a
        # glibc-default probe ran up to twice as slow (see vitspeed.allocator)
        configs += [{"level": "allocator", "allocator": label, "tokens": int(allocator_tokens), "img_size": None,
                     "batch_size": 1, "dtype": dt} for label in (KEPT_LABEL, DEFAULT_LABEL) for dt in dtypes]

    def group(cfg: dict[str, Any]) -> list[dict[str, Any]]:
        if cfg["level"] == "ceiling":
            n, nbytes = ceiling_sizes or (None, None)
            return measure_ceilings(device, cfg["dtype"], matmul_size=n, copy_bytes=nbytes, warmup=warmup,
                                    repeats=repeats)
        if cfg["level"] == "gemm":
            return gemm_shapes(img_sizes, device=device, dtype=cfg["dtype"], model=model, warmup=warmup,
                               repeats=repeats)
        if cfg["level"] == "allocator":
            rows = allocator_comparison(alloc_vs, cfg["tokens"], cfg["dtype"], head_dim=head_dim, heads=heads,
                                        warmup=warmup, repeats=repeats, settings=(cfg["allocator"],))
            return [{**r, "level": "allocator", "family": get_attention(r["attention"]).family, "img_size": None}
                    for r in rows]
        if cfg["level"] == "core":
            return core_group(core_vs, cfg["tokens"], cfg["batch_size"], device=device, dtype=cfg["dtype"],
                              head_dim=head_dim, heads=heads, warmup=warmup, repeats=repeats, caps=caps)
        return model_group(model_vs, cfg["img_size"], cfg["batch_size"], device=device, dtype=cfg["dtype"],
                           warmup=warmup, repeats=repeats, caps=caps, model=model)

    return run_sweep(CHAPTER, configs, group, key_fields=KEY_FIELDS, device=device, dtypes=dtypes, run_id=run_id)


def _side(ratio: float, rel_noise: float | None) -> int:
    """-1 faster, +1 slower, 0 no different within the spread (``rel_noise`` None: no tie, ratio 1
    counts as slower; an unknown spread, nan, likewise)."""
    if rel_noise is None or not math.isfinite(rel_noise):
        return -1 if ratio < 1.0 else 1
    if not beyond_spread(ratio, rel_noise):
        return 0
    return -1 if ratio < 1.0 else 1


def crossover_point(tokens: Sequence[float], ratio: Sequence[float],
                    noise: Sequence[float] | None = None) -> tuple[float, str]:
    """Where ``ratio`` (variant / reference latency) falls through 1 as tokens grow.

    Each measured point is *faster* (ratio < 1), *slower*, or, given ``noise`` (the two medians'
    relative spread per point, :func:`vitspeed.studies.wording.rows_noise`), *tied* when the ratio is
    inside it. What counts is the trailing run of points on the side of the largest N:

    - ``crosses``: faster from some N on, slower just before; N* interpolated linearly in
      (log N, log ratio) between the two points;
    - ``faster by``: faster from N* (a measured N) on, tied just before: the crossover lies at or
      below N*, where the spread cannot place it;
    - ``faster throughout`` (N* nan): faster at every measured N;
    - ``slower from``: faster at some smaller N, slower from N* on (interpolated as for ``crosses``,
      or the first slower N after a tie): the variant loses as tokens grow;
    - ``not within measured range``: slower at the largest N and never faster;
    - ``within the spread at the largest N``: tied at the largest N, though not everywhere;
    - ``within the spread throughout``: tied at every N;
    - ``too few points``: fewer than two.
    """
    given = noise is not None
    zs = list(noise) if given else [None] * len(list(ratio))
    pts = sorted((float(n), float(r), z) for n, r, z in zip(tokens, ratio, zs) if r > 0 and math.isfinite(r))
    if len(pts) < 2:
        return math.nan, TOO_FEW
    sides = [_side(r, None if z is None else float(z)) for _, r, z in pts]
    if given and not any(sides):
        return math.nan, WITHIN_THROUGHOUT
    last = sides[-1]
    if last == 0:
        return math.nan, WITHIN_AT_MAX
    j = len(sides) - 1
    while j > 0 and sides[j - 1] == last:
        j -= 1
    if last < 0 and j == 0:
        return math.nan, FASTER_THROUGHOUT
    if last > 0 and -1 not in sides:
        return math.nan, NOT_IN_RANGE
    if sides[j - 1] == 0:  # a tie before the run: the crossing is somewhere at or below its first point
        return pts[j][0], FASTER_BY if last < 0 else SLOWER_FROM
    (n1, r1, _), (n2, r2, _) = pts[j - 1], pts[j]
    x1, x2, y1, y2 = math.log(n1), math.log(n2), math.log(r1), math.log(r2)
    n_star = float(math.exp(x1 + (0.0 - y1) * (x2 - x1) / (y2 - y1))) if y1 != y2 else n2
    return n_star, CROSSES if last < 0 else SLOWER_FROM


def _forms(reference: str | Sequence[str]) -> tuple[str, ...]:
    forms = (reference,) if isinstance(reference, str) else tuple(reference)
    for f in forms:
        get_attention(f)  # ValueError listing the valid names
    return forms


def reference_latency(results: pd.DataFrame, reference: str | Sequence[str] = SOFTMAX_FORMS,
                      by: Sequence[str] = ("hardware", "dtype", "batch_size")) -> pd.DataFrame:
    """The reference's latency per ``by`` group and token count: with several softmax forms, the faster
    one at each point (fused SDPA is not always the faster: on a CPU in bfloat16 the explicit form
    wins). Columns: the keys, ``reference_ms``, ``reference_iqr_ms`` (ms per call),
    ``reference_form`` (which form it was) and, where the rows keep them, ``reference_samples_ms`` and
    ``reference_timing_group`` (for :func:`vitspeed.studies.wording.frame_noise`)."""
    forms = _forms(reference)
    keys = [b for b in by if b in results.columns] + ["tokens"]
    ref = results[results.attention.isin(forms) & results.median_ms.notna()].sort_values("median_ms")
    # head(1), not first(): first() takes each column's first non-null value, which can mix rows
    ref = ref.groupby(keys, dropna=False, as_index=False).head(1)
    kept = [c for c in ("samples_ms", "timing_group") if c in ref.columns]
    return ref[keys + ["median_ms", "iqr_ms", "attention", *kept]].rename(
        columns={"median_ms": "reference_ms", "iqr_ms": "reference_iqr_ms", "attention": "reference_form",
                 **{c: f"reference_{c}" for c in kept}}).reset_index(drop=True)


def latency_ratios(results: pd.DataFrame, level: str = "core", reference: str | Sequence[str] = SOFTMAX_FORMS,
                   by: Sequence[str] = ("hardware", "dtype", "batch_size"), graph: bool = False) -> pd.DataFrame:
    """Rows of ``level`` (status ok) with ``ratio`` = median latency / the reference's median at the same
    token count in the same group (> 1: slower), the reference being the faster of the softmax forms
    at that point (:func:`reference_latency`; pass ``"softmax"`` for fused SDPA alone), and
    ``noise``, the relative difference the two medians must exceed to count
    (:func:`vitspeed.studies.wording.frame_noise`: round by round where both rows kept their samples).

    With ``graph`` the CUDA-graph replay times (``graph_median_ms``, ``graph_iqr_ms``: batch 1 on a
    GPU, launch overhead removed) stand in for the eager ones, and only rows that have them count."""
    df = results[(results.level == level) & (results.status.fillna("ok") == "ok")].copy()
    if graph:
        if "graph_median_ms" not in df:
            return df.iloc[0:0].assign(reference_ms=[], reference_iqr_ms=[], reference_form=[], ratio=[], noise=[])
        # the kept samples are the eager runs': the replays are compared by their medians and IQRs
        df = df[df.graph_median_ms.notna()].assign(median_ms=lambda d: d.graph_median_ms,
                                                    iqr_ms=lambda d: d.graph_iqr_ms)
        df = df.drop(columns=[c for c in ("samples_ms", "timing_group") if c in df.columns])
    if "iqr_ms" not in df:
        df["iqr_ms"] = math.nan
    keys = [b for b in by if b in df.columns] + ["tokens"]
    df = df.merge(reference_latency(df, reference, by), on=keys, how="inner")
    df["ratio"] = df.median_ms / df.reference_ms
    df["noise"] = frame_noise(df)
    return df


def crossovers(results: pd.DataFrame, level: str = "core", reference: str | Sequence[str] = SOFTMAX_FORMS,
               by: Sequence[str] = ("hardware", "dtype", "batch_size"), spread: bool = True,
               graph: bool = False) -> pd.DataFrame:
    """Measured crossover of every variant against the reference per device/precision/batch group.

    The reference is the faster softmax form at each token count (:func:`reference_latency`); the
    reference forms themselves are not listed. Uses rows of ``level`` with status 'ok'. With
    ``spread`` a ratio inside the two medians' spread counts as a tie (see :func:`crossover_point`).
    Columns: the ``by`` fields, attention, family, crossover_tokens, status, tokens_min / tokens_max
    (measured range), ratio_min_n / ratio_max_n (latency ratio at the smallest / largest N),
    noise_max_n (the spread there) and reference_forms (the softmax forms that were the reference).
    ``graph``: from CUDA-graph replay times (see :func:`latency_ratios`).
    """
    forms = _forms(reference)
    df = latency_ratios(results, level, forms, by, graph=graph)
    by = [b for b in by if b in df.columns]
    out = []
    for key, grp in df.groupby(by, dropna=False) if by else [((), df)]:
        key = key if isinstance(key, tuple) else (key,)
        ref_forms = ", ".join(sorted(set(grp.reference_form)))
        for variant, vg in grp[~grp.attention.isin(forms)].groupby("attention", sort=False):
            t = vg.groupby("tokens")[["ratio", "noise"]].median().sort_index()
            n_star, status = crossover_point(list(t.index), list(t.ratio), list(t.noise) if spread else None)
            out.append({**dict(zip(by, key)), "attention": variant, "family": get_attention(variant).family,
                        "crossover_tokens": n_star, "status": status,
                        "tokens_min": t.index.min() if len(t) else math.nan,
                        "tokens_max": t.index.max() if len(t) else math.nan,
                        "ratio_min_n": t.ratio.iloc[0] if len(t) else math.nan,
                        "ratio_max_n": t.ratio.iloc[-1] if len(t) else math.nan,
                        "noise_max_n": t.noise.iloc[-1] if len(t) else math.nan,
                        "reference_forms": ref_forms})
    return pd.DataFrame(out)


def crossover_label(status: str, tokens: float) -> str:
    """A crossover table cell: the token count for ``crosses``, "by N" (at or below N) for ``faster by``,
    "slower from N" for ``slower from``, else the status itself."""
    if status == CROSSES:
        return f"{tokens:.0f}"
    if status == FASTER_BY:
        return f"by {tokens:.0f}"
    if status == SLOWER_FROM:
        return f"slower from {tokens:.0f}"
    return status


def _formula_crossover(cost_v: sp.Expr, cost_r: sp.Expr, n_sym: sp.Symbol) -> tuple[float, str]:
    """Largest N >= 16 (a 4 x 4 map) where cost_v falls below cost_r (log grid, then bisection)."""
    fv = sp.lambdify(n_sym, cost_v, "numpy")
    fr = sp.lambdify(n_sym, cost_r, "numpy")

    def g(n: float) -> float:  # log of the cost ratio
        return math.log(float(fv(n))) - math.log(float(fr(n)))

    grid = np.logspace(math.log10(16), 9, 801)
    vals = [g(n) for n in grid]
    if all(v < 0 for v in vals):
        return math.nan, "cheaper at every N"
    if vals[-1] >= 0:
        if all(abs(v) < 1e-12 for v in vals):
            return math.nan, "same cost at every N"
        return math.nan, "never"
    i = max(j for j, v in enumerate(vals) if v >= 0)
    lo, hi = math.log(grid[i]), math.log(grid[i + 1])
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if g(math.exp(mid)) >= 0:
            lo = mid
        else:
            hi = mid
    return float(math.exp(0.5 * (lo + hi))), CROSSES


def predicted_crossovers(variants: str | Iterable[str] = "all", head_dim: int = 64, heads: int = 6,
                         reference: str = REFERENCE) -> pd.DataFrame:
    """Token count where each variant's closed-form core cost falls below the reference's.

    Two predictions per variant (batch 1, default options): ``macs_crossover`` from MACs alone (the
    literature's FLOPs) and ``total_crossover`` from MACs + elementwise ops. Status columns say
    ``crosses``, ``cheaper at every N``, ``same cost at every N`` or ``never``. The projections
    and the FFN are the same for every variant (hallucinated attention aside, which only saves), so
    the whole-model prediction is the same N.
    """
    n_sym = sp.Symbol("N", positive=True)
    ref = F.core_formula(reference, 1, n_sym, head_dim, heads)
    rows = []
    for v in resolve_variants(variants):
        if v == reference:
            continue
        f = F.core_formula(v, 1, n_sym, head_dim, heads)
        macs_n, macs_status = _formula_crossover(f["macs"], ref["macs"], n_sym)
        tot_n, tot_status = _formula_crossover(f["macs"] + f["elementwise"], ref["macs"] + ref["elementwise"], n_sym)
        rows.append({"attention": v, "family": get_attention(v).family, "complexity": get_attention(v).complexity,
                     "macs_crossover": macs_n, "macs_status": macs_status,
                     "total_crossover": tot_n, "total_status": tot_status})
    return pd.DataFrame(rows)


def allocator_effect(results: pd.DataFrame, by: Sequence[str] = ("hardware", "dtype", "tokens")) -> pd.DataFrame:
    """The allocator rows (``level='allocator'``, status ok) side by side: per ``by`` group and
    attention, ``default_ms`` (glibc's default allocator) and ``kept_ms`` (the kept heap), medians
    per call in ms, their IQRs, ``slowdown`` = default_ms / kept_ms (> 1: glibc's defaults cost
    time) and ``default_faults`` / ``kept_faults``, the minor page faults per timed call (nan for
    runs that predate the count). Empty when no allocator rows exist."""
    cols = [*by, "attention", "default_ms", "default_iqr_ms", "kept_ms", "kept_iqr_ms", "slowdown",
            "default_faults", "kept_faults"]
    if "level" not in results or "allocator" not in results:
        return pd.DataFrame(columns=cols)
    df = results[(results.level == "allocator") & (results.status.fillna("ok") == "ok")]
    if df.empty:
        return pd.DataFrame(columns=cols)
    keys = [b for b in by if b in df.columns] + ["attention"]
    values = ["median_ms", "iqr_ms"] + (["page_faults_per_call"] if "page_faults_per_call" in df else [])
    wide = df.pivot_table(index=keys, columns="allocator", values=values, aggfunc="median")
    out = pd.DataFrame({"default_ms": wide[("median_ms", DEFAULT_LABEL)],
                        "default_iqr_ms": wide[("iqr_ms", DEFAULT_LABEL)],
                        "kept_ms": wide[("median_ms", KEPT_LABEL)], "kept_iqr_ms": wide[("iqr_ms", KEPT_LABEL)]})
    out["slowdown"] = out.default_ms / out.kept_ms
    for label, col in ((DEFAULT_LABEL, "default_faults"), (KEPT_LABEL, "kept_faults")):
        # absent for runs that predate the count (pivot_table drops an all-nan column too)
        out[col] = wide[("page_faults_per_call", label)] if ("page_faults_per_call", label) in wide else float("nan")
    return out.reset_index()


def allocator_finding(results: pd.DataFrame, dtype: str | Sequence[str], current: str | None = None) -> str:
    """Sentences on the allocator rows of ``results`` in ``dtype`` (one precision or several, each
    in its own sentence; see :func:`allocator_effect`): the time of explicit and fused softmax under
    glibc's default allocator against the kept heap, at the largest token count measured, and which
    setting the run's other rows used (``current``, default
    :func:`vitspeed.allocator.allocator_state` of this process); says so when there are no allocator
    rows (CUDA runs)."""
    dtypes = [dtype] if isinstance(dtype, str) else list(dtype)
    eff = allocator_effect(results, by=("dtype", "tokens"))
    eff = eff[eff.dtype.isin(dtypes)] if len(eff) else eff
    if eff.empty:
        return ("The allocator comparison was not run here (it is a CPU measurement; CUDA's caching "
                "allocator keeps freed blocks).")

    def pair(r: Any) -> str:
        spread = noise(r.default_ms, r.default_iqr_ms, r.kept_ms, r.kept_iqr_ms)
        if pd.isna(r.default_faults) or pd.isna(r.kept_faults):
            faults = ""
        elif max(r.default_faults, r.kept_faults) < 1:
            # the two settings are timed in separate processes at different moments
            faults = (", no page faults per call under either setting: the allocator cannot cause a gap here, "
                      "so any is the drift between the two processes")
        else:
            faults = f", {r.default_faults:,.0f} against {r.kept_faults:,.0f} page faults per call"
            extra = r.default_faults - r.kept_faults
            if extra >= 1000 and r.default_ms > r.kept_ms:
                # the time the defaults add, per page fault they add: what a fault (and zeroing its page) costs
                faults += f", {1e3 * (r.default_ms - r.kept_ms) / extra:.1f} µs of extra time per extra fault"
        return (f"{sig(r.default_ms)} ms per call (IQR {sig(r.default_iqr_ms)}) against {sig(r.kept_ms)} ms "
                f"(IQR {sig(r.kept_iqr_ms)}) with the kept heap ({r.slowdown:.2f} times by the medians"
                + ("" if beyond_spread(r.slowdown, spread) else ", within their spread") + faults + ")")

    sentences = []
    for dt in (d for d in dtypes if (eff.dtype == d).any()):
        here = eff[eff.dtype == dt]
        n = int(here.tokens.max())
        e = here[here.tokens == n].set_index("attention")
        said = [f"{name} {pair(e.loc[att])}"
                for att, name in (("softmax_explicit", "the explicit softmax takes"), ("softmax", "fused SDPA"))
                if att in e.index]
        sentences.append(f"At {n} tokens in {dt}, with glibc's default allocator " + "; ".join(said) + ".")
    current = current or allocator_state()
    return (" ".join(sentences)
            + " With the defaults every large tensor is mapped, page-faulted and unmapped on each call, and "
              f"the explicit form's N x N map pays it most. The other rows of this run used the {current} "
              "setting" + (" (the cpu preset's)." if current == KEPT_LABEL else "."))


def level_comparison(core: pd.DataFrame, model: pd.DataFrame) -> str:
    """Whether the whole model's crossovers (``model``: :func:`crossovers` at level 'model') come at the
    core-level ones (``core``) or not, as one sentence. Only variants placed at both levels count: an
    interpolated crossover (``crosses``) or a bound (``faster by N``: at or below N). Two interpolated
    values within 25% of each other count as the same place, since neither level samples N finely;
    a bound orders two crossovers only when it lies below the other value by more than that, else
    the pair is counted as not ordered. The sentence names each variant found earlier or later."""
    placed = {CROSSES, FASTER_BY}

    def where(df: pd.DataFrame) -> dict[str, tuple[float, bool, str]]:
        ok = df[df.status.isin(placed)]
        return {r.attention: (float(r.crossover_tokens), r.status == FASTER_BY,
                              crossover_label(r.status, r.crossover_tokens)) for r in ok.itertuples()}

    c, m = where(core), where(model)
    both = [v for v in c if v in m]
    if not both:
        return "No variant's crossover is placed at both levels in this run, so the two cannot be compared."
    earlier, later, same, unordered = [], [], [], []
    for v in both:
        (nc, bc, lc), (nm, bm, lm) = c[v], m[v]
        text = f"{v} ({lm} in the model, {lc} as a core)"
        if nm < nc / 1.25 and not bc:  # the model's crossover (or its upper bound) lies clearly below
            earlier.append(text)
        elif nc < nm / 1.25 and not bm:  # the core's crossover (or its upper bound) lies clearly below
            later.append(text)
        elif not (bc or bm) and nc / 1.25 <= nm <= nc * 1.25:
            same.append(v)
        else:
            unordered.append(v)
    parts = []
    if earlier:
        parts.append(f"earlier in the whole model than as a core: {', '.join(earlier)}")
    if later:
        parts.append(f"later in the whole model: {', '.join(later)}")
    if unordered:
        parts.append(f"{len(unordered)} cannot be ordered, a bound at the measured sizes being too coarse "
                     f"({', '.join(unordered)})")
    head = (f"Of the {len(both)} variants whose crossover is placed at both levels, {len(same)} "
            f"{'crosses' if len(same) == 1 else 'cross'} at about the same token count")
    return head + ("; " + "; ".join(parts) if parts else "") + "."


def _ridges(results: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Ridge point (FLOPs per byte) per (hardware, dtype) under that dtype's own ceilings, as
    :func:`vitspeed.roofline.roofline` places the cores."""
    from vitspeed.roofline import roofline

    roof = roofline(results)
    if roof.empty:
        return {}
    own = roof[roof.roof_dtype == roof.dtype] if "roof_dtype" in roof else roof
    return {k: float(v) for k, v in own.groupby(["hardware", "dtype"]).ridge.first().items()}


def _where(status: str, tokens: float) -> str:
    # "at 2141 tokens", "at or below 36864 tokens", else the crossover table's wording
    if status == CROSSES:
        return f"at {tokens:.0f} tokens"
    if status == FASTER_BY:
        return f"at or below {tokens:.0f} tokens"
    return crossover_label(status, tokens)


def hardware_contrast_text(results: pd.DataFrame, variant: str = "linear_relu", batch_size: int = 1,
                           dtypes: Sequence[str] = ("float32", "bfloat16")) -> str:
    """Where ``variant``'s core overtakes the faster softmax form on each hardware of ``results``
    (newest runs) beside each hardware's measured ridge point, per precision in ``dtypes``: the
    measured answer to "does a higher ridge point move the crossover later?". On a CUDA device the
    crossover from CUDA-graph replay (launches removed) is given too. An empty string when fewer
    than two hardware measured ``variant``'s core."""
    core = results[(results.level == "core") & (results.batch_size.astype(float) == batch_size)] \
        if {"level", "batch_size"} <= set(results.columns) else results.iloc[:0]
    if core.hardware.nunique() < 2:
        return ""
    eager = crossovers(core, level="core")
    graph = crossovers(core, level="core", graph=True) if "graph_median_ms" in core else eager.iloc[:0]
    ridges = _ridges(results)
    sentences = []
    for dt in dtypes:
        rows = eager[(eager.attention == variant) & (eager.dtype == dt)]
        if rows.hardware.nunique() < 2:
            continue
        parts = []
        for r in rows.sort_values("hardware").itertuples():
            where = _where(r.status, r.crossover_tokens)
            g = graph[(graph.attention == variant) & (graph.dtype == dt) & (graph.hardware == r.hardware)]
            if len(g):
                where += f" ({_where(g.status.iloc[0], g.crossover_tokens.iloc[0])} with launches removed by CUDA graphs)"
            ridge = ridges.get((r.hardware, dt))
            parts.append(f"{r.hardware} (ridge {ridge:.1f} FLOPs per byte): {where}" if ridge else
                         f"{r.hardware}: {where}")
        sentences.append(f"In {dt}, {variant} overtakes the faster softmax form on " + "; on ".join(parts) + ".")
    return " ".join(sentences)
