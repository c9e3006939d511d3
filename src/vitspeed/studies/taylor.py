"""Chapter 5 (the quadratic Taylor kernel): QT-ViT's ways of cutting the Kronecker cost, measured.

The exact second-order kernel 1 + s + s^2/2 (``taylor2_full``, D = (d+1)^2 + 1 features, O(N d^3))
against the paper's ablations (pooling to d/p channels, Kronecker products within c chunks, d
random quadratic terms) and its compact kernel (D = 2d + 1, O(N d^2)), with softmax for reference:

- closed-form costs from the registry formulas (:func:`vitspeed.formulas.core_formula`);
- counted MACs and params of QT-ViT-1 (``create_model('qtvit_1', attention=..., attention_options=...)``);
- latency of the cores over token counts and of whole QT-ViT-1 models (rows to ``data/taylor``);
- how closely each kernel reproduces the exact 2nd-order kernel and softmax on the same q, k, v.

Counting conventions are those of :mod:`vitspeed.flops` (MACs of products; elementwise ops apart).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd
import sympy as sp
import torch

from vitspeed import formulas as F
from vitspeed.attention import get_attention, validate_options
from vitspeed.flops import count_flops, count_params
from vitspeed.models import create_model
from vitspeed.studies.compare import (Candidate, approximation, candidate, compare_cores_finite,
                                      compare_models_finite, core_grid, ratio_of, run_sweep)
from vitspeed.studies.linear_kernels import kernel_diagnostics
from vitspeed.studies.wording import measured_elsewhere, rows_noise, said
from vitspeed.studies.wording import times as _times
from vitspeed.studies.wording import word as _word

__all__ = ["CHAPTER", "MODEL", "VARIANTS", "PUBLISHED_ABLATION", "PUBLISHED_LABEL", "taylor_candidates",
           "formula_table", "qtvit_costs", "run_taylor", "approximation_table", "CHEAP_CUTS", "core_findings"]

CHAPTER = "taylor"
MODEL = "qtvit_1"
# label -> (attention, options): the rows of QT-ViT's Table 3 plus the compact kernel of the
# authors' code (unit-norm squares, D = d + 1) and softmax, fused and explicit (cores only: QT-ViT
# takes linear kernels)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "softmax": ("softmax", {}),
    "softmax (explicit)": ("softmax_explicit", {}),
    "full": ("taylor2_full", {}),
    "pool p=2": ("taylor2_pool", {"p": 2}),
    "pool p=4": ("taylor2_pool", {"p": 4}),
    "chunk c=2": ("taylor2_chunk", {"c": 2}),
    "chunk c=4": ("taylor2_chunk", {"c": 4}),
    "chunk c=8": ("taylor2_chunk", {"c": 8}),
    "random": ("taylor2_random", {}),
    "compact": ("taylor2_compact", {}),
    "compact (code)": ("taylor2_compact", {"mode": "reference"}),
}
TIMED = ("softmax", "softmax (explicit)", "full", "pool p=2", "pool p=4", "chunk c=2", "chunk c=4", "chunk c=8",
         "random", "compact", "compact (code)")
# QT-ViT Table 3: ImageNet top-1 (%) of QT-ViT-1 trained with each way of cutting the Kronecker cost
PUBLISHED_ABLATION = {"full": 79.7, "pool p=2": 79.3, "pool p=4": 79.1, "chunk c=2": 79.4, "chunk c=4": 79.3,
                      "chunk c=8": 79.1, "random": 61.8, "compact": 79.6}
PUBLISHED_LABEL = "published, QT-ViT-1 ablation"
# in the QT-ViT shell, for reference: EfficientViT's own kernel, and timm's EfficientViT-B1 itself
MODEL_REFERENCES = {"relu (QT-ViT shell)": {"model": MODEL, "attention": "linear_relu"},
                    "EfficientViT-B1 (timm)": {"model": "efficientvit_b1"}}


def _check_labels(labels: Sequence[str]) -> list[str]:
    labels = list(labels)
    unknown = [x for x in labels if x not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown Taylor variant label(s) {', '.join(unknown)}; valid choices: {', '.join(VARIANTS)}")
    return labels


def taylor_candidates(labels: Sequence[str] | None = None, model: str | None = None) -> list[Candidate]:
    """Candidates for compare_cores (or, with ``model``, compare_models; softmax is then skipped)."""
    labels = _check_labels(TIMED if labels is None else labels)
    out = []
    for label in labels:
        name, options = VARIANTS[label]
        if model is not None and get_attention(name).family != "linear":
            continue
        extra = {"model": model} if model is not None else {}
        out.append(candidate(label, attention=name, options=dict(options), **extra))
    return out


def formula_table(labels: Sequence[str] | None = None, symbolic_options: bool = False) -> pd.DataFrame:
    """Closed-form cost of each core on (1, h, N, d) tensors, as sympy expressions.

    Columns: label, attention, ``features`` (D, the feature dimension: MACs / (2 N h (d+1)); '-' for
    softmax), ``macs`` and ``elementwise`` (factored). ``symbolic_options`` adds the pooling and chunk
    ablations with symbolic p and c.
    """
    labels = _check_labels(VARIANTS if labels is None else labels)
    d = sp.Symbol("d", positive=True)
    rows = [(label, *VARIANTS[label]) for label in labels]
    if symbolic_options:
        rows += [("pool p", "taylor2_pool", {"p": sp.Symbol("p", positive=True)}),
                 ("chunk c", "taylor2_chunk", {"c": sp.Symbol("c", positive=True)})]
    out = []
    for label, name, options in rows:
        f = F.core_formula(name, batch=1, tokens=F.N, head_dim=d, heads=F.h, **options)
        linear = get_attention(name).family == "linear"
        features = sp.factor(sp.simplify(f["macs"] / (2 * F.N * F.h * (d + 1)))) if linear else "-"
        out.append({"label": label, "attention": name, "features": features,
                    "macs": sp.factor(f["macs"]), "elementwise": sp.factor(f["elementwise"])})
    return pd.DataFrame(out)


def _model_candidates(labels: Sequence[str] | None, references: bool) -> list[Candidate]:
    cands = taylor_candidates(labels, model=MODEL)
    if references:
        cands += [candidate(label, **spec) for label, spec in MODEL_REFERENCES.items()]
    return cands


def qtvit_costs(img_size: int = 224, labels: Sequence[str] | None = None, references: bool = True) -> pd.DataFrame:
    """Counted cost of QT-ViT-1 with each kernel (deterministic): one row per variant.

    Columns: label, gmacs and g_elementwise (whole model, per image), attn_gmacs and
    attn_g_elementwise (the QTLiteMLA modules), params_m (millions), unhandled (ops the counter
    missed; empty). ``references`` adds ReLU in the same shell and timm's EfficientViT-B1.
    """
    labels = [x for x in _check_labels(VARIANTS if labels is None else labels) if not x.startswith("softmax")]
    rows = []
    for cand in _model_candidates(labels, references):
        model = create_model(cand["model"], img_size=img_size, attention=cand.get("attention"),
                             attention_options=cand.get("options"))
        fc = count_flops(model, torch.zeros(1, 3, img_size, img_size))
        attn = fc.breakdown()["attention"]
        rows.append({"label": cand["label"], "img_size": img_size, "gmacs": fc.macs / 1e9,
                     "g_elementwise": fc.elementwise / 1e9, "attn_gmacs": attn["macs"] / 1e9,
                     "attn_g_elementwise": attn["elementwise"] / 1e9, "params_m": count_params(model) / 1e6,
                     "unhandled": ", ".join(sorted(fc.unhandled)),
                     "published_top1": PUBLISHED_ABLATION.get(cand["label"], float("nan"))})
    return pd.DataFrame(rows)


def run_taylor(tokens: Sequence[int], img_sizes: Sequence[int], head_dims: Sequence[int] = (16,), heads: int = 16,
               labels: Sequence[str] | None = None, model_labels: Sequence[str] | None = None,
               references: bool = True, batch_size: int = 1, core_batch_size: int | None = None, device: str = "cpu",
               dtypes: Sequence[str] = ("float32",), warmup: int = 3, repeats: int = 10,
               run_id: str | None = None) -> pd.DataFrame:
    """Time the Taylor cores over token counts and QT-ViT-1 over image sizes; rows to data/taylor.

    Core rows (``kind='core'``, per head_dim x tokens x dtype, batch ``core_batch_size``, default
    ``batch_size``): MACs and elementwise ops of the whole batch, latency per call (ms), peak memory (MB). Model rows (``kind='model'``, per img_size
    x dtype): GMACs per image, params (millions), latency per batch (ms), throughput (images/s);
    ``references`` adds ReLU in the QT-ViT shell and timm's EfficientViT-B1. Head dims must be
    divisible by the pooling and chunk factors. Resumable by ``run_id``; returns this run's rows.
    """
    labels = _check_labels(TIMED if labels is None else labels)
    model_labels = [x for x in _check_labels(labels if model_labels is None else model_labels)
                    if not x.startswith("softmax")]
    for label in labels:
        name, options = VARIANTS[label]
        for hd in head_dims:
            validate_options(get_attention(name), options)
            for factor in (options.get("p", 1), options.get("c", 1)):
                if hd % factor:
                    raise ValueError(f"head dim {hd} is not divisible by {factor} ({label}); "
                                     f"choose head dims that are multiples of 8 or drop {label!r}")
    dtypes = list(dtypes)
    core_batch = batch_size if core_batch_size is None else core_batch_size
    configs = ([{"kind": "core", "img_size": None, "tokens": int(n), "head_dim": int(hd), "dtype": dt}
                for dt in dtypes for hd in head_dims for n in tokens]
               + [{"kind": "model", "img_size": int(s), "tokens": None, "head_dim": None, "dtype": dt}
                  for dt in dtypes for s in img_sizes])

    def run_group(cfg: dict[str, Any]) -> list[dict[str, Any]]:
        if cfg["kind"] == "core":
            rows = compare_cores_finite(taylor_candidates(labels), tokens=cfg["tokens"], head_dim=cfg["head_dim"],
                                        heads=heads, batch_size=core_batch, device=device, dtype=cfg["dtype"],
                                        warmup=warmup, repeats=repeats)
        else:
            rows = compare_models_finite(_model_candidates(model_labels, references), img_size=cfg["img_size"],
                                         batch_size=batch_size, device=device, dtype=cfg["dtype"], warmup=warmup,
                                         repeats=repeats)
        return [{**row, **cfg} for row in rows]

    return run_sweep(CHAPTER, configs, run_group, key_fields=("kind", "img_size", "tokens", "head_dim", "dtype"),
                     device=device, dtypes=dtypes, run_id=run_id)


def approximation_table(labels: Sequence[str] | None = None, tokens: int = 196, head_dims: Sequence[int] = (16,),
                        heads: int = 4, batch_size: int = 2, seed: int = 0,
                        references: Sequence[str] = ("taylor2_full", "softmax")) -> pd.DataFrame:
    """Error of each kernel against the exact 2nd-order kernel and against softmax (float64).

    One row per (reference, head_dim, variant): rel_error and row entropy (nats) from
    :func:`~vitspeed.studies.compare.approximation`, plus ``scaled_error`` (after the best scalar
    rescaling), ``negative_share`` and ``nonpositive_den`` from
    :func:`~vitspeed.studies.linear_kernels.kernel_diagnostics`, and the published ablation top-1.
    """
    labels = [x for x in _check_labels(VARIANTS if labels is None else labels) if not x.startswith("softmax")]
    out = []
    for reference in references:
        for hd in head_dims:
            cands = taylor_candidates(labels)
            rows = approximation(cands, tokens=tokens, head_dim=hd, heads=heads, batch_size=batch_size,
                                 seed=seed, reference=reference)
            for cand, row in zip(cands, rows):
                diag = kernel_diagnostics(cand["attention"], cand["options"], tokens=tokens, head_dim=hd,
                                          heads=heads, batch_size=batch_size, seed=seed, reference=reference)
                out.append({"reference": reference, **row, "scaled_error": diag["scaled_error"],
                            "negative_share": diag["negative_share"], "nonpositive_den": diag["nonpositive_den"],
                            "published_top1": PUBLISHED_ABLATION.get(cand["label"], float("nan"))})
    return pd.DataFrame(out)


def _rows_at(rows: pd.DataFrame, dtype: str, head_dim: int, tokens: int) -> pd.DataFrame:
    """The ok core rows at one (dtype, head_dim, tokens), indexed by label (the last row of each)."""
    df = rows[(rows.kind == "core") & (rows.dtype == dtype) & (rows.status.fillna("ok") == "ok")]
    df = df[(df.head_dim.astype(int) == head_dim) & (df.tokens.astype(int) == tokens)]
    return df.drop_duplicates("label", keep="last").set_index("label")


def _label_noise(at: pd.DataFrame, a: str, b: str) -> float:
    """:func:`~vitspeed.studies.wording.rows_noise` of labels ``a`` and ``b`` among rows ``at`` (see
    :func:`_rows_at`); nan when either is missing or the rows have no IQR."""
    if "iqr_ms" not in at or a not in at.index or b not in at.index:
        return math.nan
    return rows_noise(at.loc[a], at.loc[b])


CHEAP_CUTS = ("pool p=2", "pool p=4", "chunk c=2", "chunk c=4", "chunk c=8", "random", "compact")


def core_findings(rows: pd.DataFrame, dtype: str, head_dim: int) -> dict[str, Any]:
    """The numbers the chapter states about the Taylor cores of one run in ``dtype`` at ``head_dim``.

    ``rows``: the run's rows (``kind == 'core'``; rows not 'ok', e.g. out of memory, ignored). The
    smallest and largest token counts are those where fused softmax was measured; a comparison with a
    variant missing there is nan (``*_word`` '-'). "The faster softmax" is the faster of the fused
    and explicit forms at that N. Ratios are said the way round that is at least 1, with a word.
    Keys: d0, n_lo, n_hi, core_full_vs_compact(_word), core_full_vs_compact_macs,
    full_time_per_mac(_word), full_per_mac_said (with the spread caveat), random_vs_compact_said (the
    random projection against compact, same MACs), per_mac_range / per_mac_most / per_mac_least (how
    far time per MAC spreads over the Taylor variants, and which spend most and least), best_soft_hi, best_soft_lo, compact_vs_softmax_hi(_word),
    compact_vs_softmax_lo(_word), fused_vs_explicit_hi(_word), full_vs_softmax_hi(_word),
    fastest_cut, time_macs_spearman (time vs MACs over the Taylor variants at the largest N),
    code_vs_compact_said (the authors' code form, D = d + 1, against the paper's compact form, D = 2d + 1,
    at the largest and the smallest N, with the spread caveat; "not measured" when either is missing).
    """
    n_lo, n_hi, ms, macs = core_grid(rows, dtype, head_dim=int(head_dim))
    hi, lo = ms.loc[n_hi].dropna(), ms.loc[n_lo].dropna()
    softmaxes = ["softmax"] + (["softmax (explicit)"] if "softmax (explicit)" in hi.index else [])
    best_hi = str(hi[softmaxes].idxmin())
    best_lo = str(lo[[s for s in ("softmax", "softmax (explicit)") if s in lo.index]].idxmin())
    out: dict[str, Any] = {"d0": int(head_dim), "n_lo": n_lo, "n_hi": n_hi,
                           "best_soft_hi": "fused" if best_hi == "softmax" else "explicit",
                           "best_soft_lo": "fused" if best_lo == "softmax" else "explicit"}
    r = ratio_of(hi, "full", "compact")
    macs_ratio = ratio_of(macs.loc[n_hi].dropna(), "full", "compact")
    out.update(core_full_vs_compact=_times(r), core_full_vs_compact_word=_word(r, "slower", "faster"),
               core_full_vs_compact_macs=float(round(macs_ratio, 1)) if math.isfinite(macs_ratio) else math.nan)
    per_mac = r / macs_ratio
    out.update(full_time_per_mac=_times(per_mac), full_time_per_mac_word=_word(per_mac, "more", "less"))
    at_hi = _rows_at(rows, dtype, int(head_dim), n_hi)

    def _noise(a: str, b: str) -> float:
        return _label_noise(at_hi, a, b) if {a, b} <= set(hi.index) else math.nan

    out["full_per_mac_said"] = said(per_mac, _noise("full", "compact"), above="more", below="less")
    same_macs = {"random", "compact"} <= set(hi.index) and math.isclose(
        macs.loc[n_hi, "random"], macs.loc[n_hi, "compact"], rel_tol=0.01)
    out["random_vs_compact_said"] = (said(ratio_of(hi, "random", "compact"), _noise("random", "compact"),
                                          above="slower", below="faster") if same_macs else "not measured")

    def _code_said(series: pd.Series, n: int) -> str:
        if not {"compact", "compact (code)"} <= set(series.index):
            return ""
        spread = _label_noise(at_hi if n == n_hi else _rows_at(rows, dtype, int(head_dim), n),
                              "compact", "compact (code)")
        return f"{said(ratio_of(series, 'compact', 'compact (code)'), spread)} at N = {n}"

    code_parts = [p for p in (_code_said(hi, n_hi), _code_said(lo, n_lo)) if p]
    out["code_vs_compact_said"] = " and ".join(code_parts) if code_parts else "not measured"
    for key, (series, a, b) in {"compact_vs_softmax_hi": (hi, best_hi, "compact"),
                                "compact_vs_softmax_lo": (lo, best_lo, "compact"),
                                "fused_vs_explicit_hi": (hi, "softmax (explicit)", "softmax"),
                                "full_vs_softmax_hi": (hi, best_hi, "full")}.items():
        r = ratio_of(series, a, b)
        out[key], out[f"{key}_word"] = _times(r), _word(r)
    cheap = [x for x in CHEAP_CUTS if x in hi.index]
    out["fastest_cut"] = str(hi[cheap].idxmin()) if cheap else "none measured"
    taylor = [x for x in ("full", *CHEAP_CUTS) if x in hi.index]
    per = hi[taylor] / macs.loc[n_hi, taylor]  # ms per MAC
    if len(per) > 1:
        out.update(per_mac_range=_times(float(per.max() / per.min())), per_mac_most=str(per.idxmax()),
                   per_mac_least=str(per.idxmin()))
    else:
        out.update(per_mac_range=math.nan, per_mac_most="-", per_mac_least="-")
    both = pd.DataFrame({"ms": hi[taylor], "macs": macs.loc[n_hi, taylor]})
    rho = both.corr(method="spearman").iloc[0, 1] if len(taylor) > 2 else math.nan
    out["time_macs_spearman"] = float(round(rho, 2)) if math.isfinite(rho) else math.nan
    return out


def other_hardware_text(results: pd.DataFrame, this_hardware: str) -> str:
    """On every hardware of ``results`` other than ``this_hardware``, per precision: QT-ViT-1's time with
    the exact Kronecker kernel over its time with the compact one at the largest image size, and, as
    cores at the largest token count and smallest head width, the compact kernel's time over the faster
    softmax form's (above 1 is slower). One sentence; empty when there is no other hardware."""
    need = {"hardware", "dtype", "kind", "label", "median_ms", "img_size", "tokens", "head_dim"}
    if not need <= set(results.columns):
        return ""
    ok = results[(results.status.fillna("ok") == "ok") & (results.hardware != this_hardware)]
    parts = []
    for (hw, dt), g in ok.groupby(["hardware", "dtype"], sort=True):
        found = []
        m, c = g[g.kind == "model"], g[g.kind == "core"]
        if len(m):
            img = int(m.img_size.max())
            m = m[m.img_size == img].set_index("label").median_ms
            if {"full", "compact"} <= set(m.index):
                found.append(f"at {img} px the exact kernel takes {m['full'] / m['compact']:.2f} times QT-ViT-1's "
                             "time with the compact one")
        if len(c):
            n, d = int(c.tokens.max()), int(c.head_dim.min())
            c = c[(c.tokens == n) & (c.head_dim == d)].set_index("label").median_ms
            soft = [f for f in ("softmax", "softmax (explicit)") if f in c.index]
            if "compact" in c.index and soft:
                best = min(soft, key=lambda f: c[f])
                found.append(f"as cores at N = {n} and d = {d} the compact kernel takes {c['compact'] / c[best]:.3g} "
                             f"times the time of the faster softmax ({best})")
        if found:
            parts.append(f"on {hw} in {dt}, " + "; ".join(found))
    return measured_elsewhere(parts)
