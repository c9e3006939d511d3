"""Chapter 4 (linear kernels): the kernels of QT-ViT's Table 2 against softmax, in cost and in kind.

Three measurements, all through :mod:`vitspeed.studies.compare`:

- the attention core alone on random ``(B, heads, N, head_dim)`` q, k, v over token counts
  (MACs and elementwise ops of the whole batch, median latency and IQR in ms, peak memory in MB);
- whole DeiT models with the kernel in every block (GMACs and elementwise ops per image, params in
  millions, latency per batch);
- how closely each kernel reproduces softmax attention on the same q, k, v (float64, fixed seed),
  with diagnostics of the implied attention matrix that explain the large errors of the kernels
  whose weights can be negative;
- what ``torch.compile`` changes: each core, and whole models, eager and compiled, interleaved in one
  measurement.

Rows go to ``data/linear_kernels`` with a ``kind`` column (``core``, ``form``, ``model``, ``compiled``
or ``model_compiled``).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd
import torch

from vitspeed.attention import build_core, get_attention, validate_options
from vitspeed.studies.compare import (Candidate, approximation, candidate, compare_cores_finite,
                                      compare_models_finite, core_grid, implied_attention, ratio_of, run_sweep)
from vitspeed.studies.wording import SOFTMAX_FORM_NAMES, beyond_spread, rows_noise, said, sig, verdict
from vitspeed.studies.wording import times as _times
from vitspeed.studies.wording import word as _word

__all__ = ["CHAPTER", "REFERENCES", "KERNELS", "VARIANTS", "PUBLISHED_TOP1", "PUBLISHED_LABEL",
           "ELU_FORM_LABELS", "APPROXIMATION_FORMS", "kernel_candidates", "run_linear_kernels",
           "kernel_diagnostics", "elu_form_finding", "approximation_table", "SOFTMAX_FORM_NAMES", "faster_softmax",
           "core_findings", "model_verdicts", "COMPILED_SUFFIX", "COMPILED_KINDS", "compile_candidates",
           "compiled_table", "compile_findings", "compile_prose", "eager_drift"]

CHAPTER = "linear_kernels"
REFERENCES = ("softmax", "softmax_explicit")
# QT-ViT Table 2 order, then the two classics and FLatten's focused kernel
KERNELS = ("linear_relu", "linear_cosine", "linear_mean", "linear_sigmoid_softmax", "linear_angular",
           "taylor1", "taylor2_compact", "linear_elu", "efficient", "focused")
VARIANTS = REFERENCES + KERNELS

# the two ways to compute elu + 1, timed against each other at the largest core size (kind 'form'):
# label -> the linear_elu core's form option (see vitspeed.attention.linear.elu_plus_one)
ELU_FORM_LABELS = {"elu+1 as F.elu(x) + 1": "elu", "elu+1 as exp(min(x,0)) + relu(x)": "exp"}

# label of a variant's compiled twin in the kind 'compiled' groups
COMPILED_SUFFIX = " (compiled)"

# QT-ViT Table 2 (ImageNet top-1, %, each kernel trained in EfficientViT-B1); softmax is its baseline
PUBLISHED_TOP1 = {"softmax": 79.8, "linear_relu": 79.4, "linear_cosine": 79.1, "linear_mean": 78.8,
                  "linear_sigmoid_softmax": 78.9, "linear_angular": 79.1, "taylor1": 78.5,
                  "taylor2_compact": 79.6}
PUBLISHED_LABEL = "published, EfficientViT-B1 setting"

# the normalisation switches, shown explicitly in the approximation table whatever the defaults are
APPROXIMATION_FORMS = (("linear_cosine", {"normalize": True}), ("linear_cosine", {"normalize": False}),
                       ("linear_mean", {"normalize": True}), ("linear_mean", {"normalize": False}))


def _check_names(names: Sequence[str]) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)} for the linear-kernels chapter; "
                         f"valid choices: {', '.join(VARIANTS)}")
    return names


def kernel_candidates(names: Sequence[str] | None = None, model: str | None = None) -> list[Candidate]:
    """Candidates (registry defaults) labelled by variant name; with ``model`` for compare_models."""
    names = _check_names(VARIANTS if names is None else names)
    extra = {"model": model} if model is not None else {}
    return [candidate(n, attention=n, **extra) for n in names]


def compile_candidates(names: Sequence[str], model: str | None = None) -> list[Candidate]:
    """Each variant twice, eager (labelled by its name) and compiled (name + :data:`COMPILED_SUFFIX`),
    for :func:`vitspeed.studies.compare.compare_cores`, or with ``model`` for ``compare_models``."""
    names = _check_names(names)
    extra = {"model": model} if model is not None else {}
    return [c for n in names for c in (candidate(n, attention=n, **extra),
                                       candidate(n + COMPILED_SUFFIX, attention=n, compile=True, **extra))]


def run_linear_kernels(tokens: Sequence[int], models: Sequence[str], names: Sequence[str] | None = None,
                       model_names: Sequence[str] | None = None, img_sizes: Sequence[int] = (224,),
                       head_dim: int = 64, heads: int = 6, batch_size: int = 1, core_batch_size: int | None = None,
                       device: str = "cpu", dtypes: Sequence[str] = ("float32",), warmup: int = 3,
                       repeats: int = 10, compile_tokens: Sequence[int] = (),
                       compile_names: Sequence[str] | None = None, compile_dtypes: Sequence[str] | None = None,
                       compile_models: Sequence[str] = (), compile_model_names: Sequence[str] | None = None,
                       run_id: str | None = None) -> pd.DataFrame:
    """Time every kernel as a core (per token count) and in every model; rows to data/linear_kernels.

    ``names`` are the variants timed as cores (default all of :data:`VARIANTS`), ``model_names``
    those put into each of ``models`` at each of ``img_sizes`` (default the same names). Core rows
    (``kind='core'``): MACs and elementwise ops for the whole batch of ``core_batch_size`` (default
    ``batch_size``) x ``heads`` heads, latency per call (ms), peak memory (MB). Model rows
    (``kind='model'``, batch ``batch_size``): GMACs per image, params (millions), latency per batch
    (ms), throughput (images/s). With linear_elu among ``names``, rows of ``kind='form'`` time its two
    ways of computing elu + 1 (:data:`ELU_FORM_LABELS`) as cores at the largest token count, interleaved.
    Rows of ``kind='compiled'`` time each of ``compile_names`` (default ``names``; fused softmax is
    always added as the reference) eager and compiled
    (:func:`compile_candidates`; CUDA-graph replay off) at each of ``compile_tokens`` in each of
    ``compile_dtypes`` (default ``dtypes``), after everything else, so that a compiler failure
    (a ``compile_error`` row) cannot touch the other groups. Rows of ``kind='model_compiled'`` do the
    same for whole models: each of ``compile_models`` at each of ``img_sizes`` (batch ``batch_size``)
    with each of ``compile_model_names`` (default ``compile_names``) in every block, eager and compiled.
    FLatten's ``focused`` core needs square token counts (its
    depthwise conv runs on a sqrt(N) x sqrt(N) grid). Resumable by ``run_id``; returns this run's rows.
    """
    names = _check_names(VARIANTS if names is None else names)
    model_names = _check_names(names if model_names is None else model_names)
    compile_names = _check_names(names if compile_names is None else compile_names)
    if "softmax" not in compile_names:  # the reference every compiled kernel is compared with
        compile_names.insert(0, "softmax")
    compile_model_names = _check_names(compile_names if compile_model_names is None else compile_model_names)
    if "softmax" not in compile_model_names:
        compile_model_names.insert(0, "softmax")
    dtypes = list(dtypes)
    compile_dtypes = dtypes if compile_dtypes is None else list(compile_dtypes)
    stray = [dt for dt in compile_dtypes if dt not in dtypes]
    if stray:
        raise ValueError(f"compile_dtypes {', '.join(stray)} not among the chapter's dtypes; "
                         f"valid choices: {', '.join(dtypes)}")
    configs = ([{"kind": "core", "model": None, "img_size": None, "tokens": int(n), "dtype": dt}
                for dt in dtypes for n in tokens]
               + [{"kind": "form", "model": None, "img_size": None, "tokens": int(max(tokens)), "dtype": dt}
                  for dt in dtypes if "linear_elu" in names and len(tokens)]
               + [{"kind": "model", "model": m, "img_size": int(s), "tokens": None, "dtype": dt}
                  for dt in dtypes for m in models for s in img_sizes]
               + [{"kind": "compiled", "model": None, "img_size": None, "tokens": int(n), "dtype": dt}
                  for dt in compile_dtypes for n in compile_tokens]
               + [{"kind": "model_compiled", "model": m, "img_size": int(s), "tokens": None, "dtype": dt}
                  for dt in compile_dtypes for m in compile_models for s in img_sizes])
    core_batch = batch_size if core_batch_size is None else core_batch_size

    def run_group(cfg: dict[str, Any]) -> list[dict[str, Any]]:
        if cfg["kind"] in ("core", "form", "compiled"):
            if cfg["kind"] == "core":
                cands = kernel_candidates(names)
            elif cfg["kind"] == "compiled":
                cands = compile_candidates(compile_names)
            else:
                cands = [candidate(label, attention="linear_elu", options={"form": form})
                         for label, form in ELU_FORM_LABELS.items()]
            rows = compare_cores_finite(cands, tokens=cfg["tokens"], head_dim=head_dim,
                                        heads=heads, batch_size=core_batch, device=device, dtype=cfg["dtype"],
                                        warmup=warmup, repeats=repeats,
                                        cuda_graph=False if cfg["kind"] == "compiled" else None)
        else:
            compiled = cfg["kind"] == "model_compiled"
            cands = (compile_candidates(compile_model_names, model=cfg["model"]) if compiled
                     else kernel_candidates(model_names, model=cfg["model"]))
            rows = compare_models_finite(cands, img_size=cfg["img_size"], batch_size=batch_size, device=device,
                                         dtype=cfg["dtype"], warmup=warmup, repeats=repeats,
                                         cuda_graph=False if compiled else None)
        return [{**row, **cfg} for row in rows]

    return run_sweep(CHAPTER, configs, run_group, key_fields=("kind", "model", "img_size", "tokens", "dtype"),
                     device=device, dtypes=dtypes, run_id=run_id)


def _qkv(tokens: int, head_dim: int, heads: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    # the same draws, in the same order, as vitspeed.studies.compare.approximation
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch_size, heads, tokens, head_dim, generator=g, dtype=torch.float64) for _ in range(3)]


def _scaled_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """min over a scalar c of ||c out - ref|| / ||ref|| (c = <out, ref> / ||out||^2)."""
    c = (out * ref).sum() / (out * out).sum().clamp_min(1e-300)
    return float((c * out - ref).norm() / ref.norm())


def _raw_weights(core: torch.nn.Module, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor | None:
    """The unnormalised (B, h, N, N) weights a kernelized core divides by their row sums, if it does."""
    from vitspeed.attention.focused import FocusedLinearAttention

    with torch.no_grad():
        if isinstance(core, FocusedLinearAttention):
            qf, kf = core._focused(q, k)  # features(x, scale) takes the scale, not k
            return qf @ kf.transpose(-2, -1) / q.shape[-2]
        if not getattr(core, "normalize", True):
            return None  # no normaliser (efficient: its feature maps are already normalised)
        if hasattr(core, "weights"):
            return core.weights(q, k)
        if hasattr(core, "features"):
            qf, kf = core.features(q, k)
            return qf @ kf.transpose(-2, -1)
    return None


def kernel_diagnostics(attention: str, options: dict[str, Any] | None = None, tokens: int = 196,
                       head_dim: int = 64, heads: int = 6, batch_size: int = 2, seed: int = 0,
                       reference: str = "softmax") -> dict[str, Any]:
    """Why a kernel is far from ``reference``: properties of the (B, h, N, N) matrix A it applies.

    Same q, k, v as :func:`vitspeed.studies.compare.approximation` (standard normal, float64).
    Returns ``scaled_error`` = min over a scalar c of ||c O - O_ref|| / ||O_ref|| (the error left
    once a learned output scale could absorb a wrong magnitude; sqrt(1 - cos^2) of O and O_ref),
    ``row_sum`` (mean sum of A's rows: 1 for a normalised kernel), ``negative_share`` (share of
    sum |A_ij| in negative entries), ``max_weight`` (largest |A_ij|; 1 at most for a convex
    combination), and, for kernels dividing by a normaliser den_i = sum_j w_ij, ``nonpositive_den``
    (fraction of rows with den_i <= 0) and ``small_den`` (fraction with |den_i| < 1% of the median
    |den|); NaN for kernels without one.
    """
    options = dict(options or {})
    if attention == "focused":
        options.setdefault("kernel_size", 0)  # the DWC acts on V alone, not through A
    q, k, v = _qkv(tokens, head_dim, heads, batch_size, seed)
    amap = implied_attention(attention, q, k, **options)
    ref = implied_attention(reference, q, k) @ v
    out = amap @ v
    row: dict[str, Any] = {
        "scaled_error": _scaled_error(out, ref),
        "row_sum": float(amap.sum(-1).mean()),
        "negative_share": float(amap.clamp_max(0).abs().sum() / amap.abs().sum()),
        "max_weight": float(amap.abs().max()),
        "nonpositive_den": float("nan"), "small_den": float("nan"),
    }
    core = build_core(attention, head_dim=head_dim, num_heads=heads, **options).double()
    w = _raw_weights(core, q, k)
    if w is not None:
        den = w.sum(-1)
        row["nonpositive_den"] = float((den <= 0).double().mean())
        row["small_den"] = float((den.abs() < 0.01 * den.abs().median()).double().mean())
    return row


def _label(attention: str, options: dict[str, Any]) -> str:
    if not options:
        return attention
    return attention + " (" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")"


def approximation_table(names: Sequence[str] | None = None, tokens: int = 196, head_dim: int = 64,
                        heads: int = 6, batch_size: int = 2, seed: int = 0, forms: bool = True) -> pd.DataFrame:
    """Approximation of softmax attention by each kernel, its diagnostics, and the published top-1.

    One row per variant (registry defaults; ``forms`` adds those of :data:`APPROXIMATION_FORMS`, the
    normalised and unnormalised cosine and mean kernels, that differ from the defaults, labelled
    "name (option=value)"; the ``options`` column names every row's settings), plus ``uniform``
    (A = 1/N, the plain mean of V, for reference). Columns: label, attention, options, rel_error and row entropy (nats) from
    :func:`~vitspeed.studies.compare.approximation`, the :func:`kernel_diagnostics`, and
    ``published_top1`` (QT-ViT Table 2, EfficientViT-B1 setting; NaN where the paper has no row).
    """
    names = [n for n in _check_names(VARIANTS if names is None else names) if n != "softmax"]
    cands = [candidate(n, attention=n) for n in names]
    if forms:
        defaults = {a: validate_options(get_attention(a), None) for a, _ in APPROXIMATION_FORMS}
        cands += [candidate(_label(a, o), attention=a, options=o) for a, o in APPROXIMATION_FORMS
                  if a not in names or {**defaults[a], **o} != defaults[a]]  # a default form is the variant's own row
    rows = approximation(cands, tokens=tokens, head_dim=head_dim, heads=heads, batch_size=batch_size, seed=seed)
    out = []
    for cand, row in zip(cands, rows):
        diag = kernel_diagnostics(cand["attention"], cand.get("options"), tokens=tokens, head_dim=head_dim,
                                  heads=heads, batch_size=batch_size, seed=seed)
        is_default = not cand.get("options")
        key = "softmax" if cand["attention"] == "softmax_explicit" else cand["attention"]
        published = PUBLISHED_TOP1.get(key, float("nan")) if is_default else float("nan")
        used = validate_options(get_attention(cand["attention"]), cand.get("options"))
        if cand["attention"] == "focused":
            used["kernel_size"] = 0  # approximation() drops the DWC: it acts on V, not through A
        out.append({**row, **diag, "options": ", ".join(f"{k}={v}" for k, v in used.items()),
                    "published_top1": published})
    # the uniform average: what a kernel that cannot tell keys apart does
    q, k, v = _qkv(tokens, head_dim, heads, batch_size, seed)
    ref = implied_attention("softmax", q, k) @ v
    mean_v = v.mean(-2, keepdim=True).expand_as(v)
    out.append({"label": "uniform (mean of V)", "attention": "-", "tokens": tokens, "head_dim": head_dim,
                "rel_error": float((mean_v - ref).norm() / ref.norm()), "row_entropy": math.log(tokens),
                "reference_entropy": out[0]["reference_entropy"] if out else float("nan"),
                "uniform_entropy": math.log(tokens), "scaled_error": _scaled_error(mean_v, ref),
                "row_sum": 1.0, "negative_share": 0.0, "max_weight": 1.0 / tokens,
                "nonpositive_den": float("nan"), "small_den": float("nan"), "options": "", "published_top1": float("nan")})
    return pd.DataFrame(out)


def elu_form_finding(rows: pd.DataFrame, dtype: str) -> dict[str, Any]:
    """What timing the two ways of computing elu + 1 (``kind == 'form'`` rows of one run) says.

    Returns tokens, elu_ms and exp_ms (median ms of the linear_elu core with ``F.elu(x) + 1`` and with
    ``exp(min(x, 0)) + relu(x)``), ratio (elu_ms / exp_ms: > 1, the exp form is faster), noise (the
    two medians' relative spread), faster (the form that is faster beyond the spread, or '' when
    within it) and sentence. An empty dict when the run has no such rows in ``dtype``.
    """
    if "kind" not in rows:
        return {}
    ok = rows[(rows.kind == "form") & (rows.dtype == dtype)]
    if "status" in ok:
        ok = ok[ok.status.fillna("ok") == "ok"]
    by = ok.set_index("label")
    label_of = {form: label for label, form in ELU_FORM_LABELS.items()}
    elu_label, exp_label = label_of["elu"], label_of["exp"]
    if elu_label not in by.index or exp_label not in by.index:
        return {}
    elu, exp = by.loc[elu_label], by.loc[exp_label]
    ratio = float(elu.median_ms / exp.median_ms)
    rel = rows_noise(elu, exp)
    faster = ("exp" if ratio > 1 else "elu") if beyond_spread(ratio, rel) else ""
    sentence = (f"At {int(elu.tokens)} tokens in {dtype} the linear_elu core takes {elu.median_ms:.3g} ms with "
                f"F.elu(x) + 1 and {exp.median_ms:.3g} ms with exp(min(x, 0)) + relu(x): the exp form is "
                f"{said(ratio, rel)}.")
    return {"tokens": int(elu.tokens), "elu_ms": float(elu.median_ms), "exp_ms": float(exp.median_ms),
            "ratio": ratio, "noise": rel, "faster": faster, "sentence": sentence}


#: the kinds of rows that time variants eager and compiled: cores alone, and whole models
COMPILED_KINDS = ("compiled", "model_compiled")
_SETTING = {"compiled": ["tokens"], "model_compiled": ["model", "img_size", "batch_size"]}


def _where(kind: str, key: dict[str, Any]) -> str:
    """Where a compiled comparison was made, in words: "at N = 196" or "in deit_small at 224 px"."""
    if kind == "compiled":
        return f"at N = {int(key['tokens'])}"
    return f"in {key['model']} at {int(key['img_size'])} px"


def eager_drift(rows: pd.DataFrame) -> pd.Series:
    """How far the compile group's eager medians lie from the same cores' medians in the main core
    table of one run (``kind == 'core'`` rows): 100 x (eager_ms / median_ms - 1) per core timed in both
    (same hardware, dtype, token count and variant), in percent; empty when none was. The two were
    timed at different moments, so this is the drift between measurements, not an effect of
    compiling."""
    comp = compiled_table(rows, "compiled")
    if comp.empty or "kind" not in rows:
        return pd.Series(dtype=float)
    status = rows["status"].fillna("ok") if "status" in rows else "ok"
    cores = rows[(rows.kind == "core") & (status == "ok")].rename(columns={"label": "variant"})
    both = comp.merge(cores[["hardware", "dtype", "tokens", "variant", "median_ms"]],
                      on=["hardware", "dtype", "tokens", "variant"])
    return 100 * (both.eager_ms / both.median_ms - 1)


def compiled_table(rows: pd.DataFrame, kind: str = "compiled") -> pd.DataFrame:
    """Eager against compiled, per variant, from the rows of ``kind`` ('compiled': cores, per token
    count; 'model_compiled': whole models, per model and image size), any hardware and dtype.

    One row per (hardware, dtype, threads, setting, variant), in the order measured: eager_ms,
    eager_iqr_ms, compiled_ms, compiled_iqr_ms (medians and IQRs, ms per call); speedup (eager /
    compiled: > 1, compiling made it faster), noise (the difference it must exceed to count,
    :func:`~vitspeed.studies.wording.rows_noise`: round by round where both forms kept their samples)
    and speedup_said (:func:`~vitspeed.studies.wording.said`, with the spread caveat); reference
    (which softmax form is faster in that setting, 'eager' or 'compiled', by the medians), vs_softmax
    and compiled_vs_softmax (the faster softmax's time over the variant's eager and compiled times:
    > 1, faster than the best softmax), compile_s (the first call's seconds), compile_rel_err and status: 'ok' when both forms were timed, else the compiled
    twin's (compile_error, mismatch, oom, nonfinite, or 'not compiled'), or 'eager <status>' when
    only the eager form failed; eager_samples_ms, compiled_samples_ms, eager_group, compiled_group (each
    form's samples and timing group, where kept: comparisons between forms are then round by round).
    The setting columns are tokens for cores, model, img_size and batch_size for models.
    Empty when there are no such rows.
    """
    if kind not in COMPILED_KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid choices: {', '.join(COMPILED_KINDS)}")
    setting = _SETTING[kind]
    cols = ["hardware", "dtype", "threads", *setting, "variant", "eager_ms", "eager_iqr_ms", "compiled_ms",
            "compiled_iqr_ms", "speedup", "noise", "speedup_said", "reference", "vs_softmax", "compiled_vs_softmax",
            "compile_s", "compile_rel_err", "status", "eager_samples_ms", "compiled_samples_ms", "eager_group",
            "compiled_group"]
    if "kind" not in rows or not (rows.kind == kind).any():
        return pd.DataFrame(columns=cols)
    df = rows[rows.kind == kind].copy()
    df["status"] = df.status.fillna("ok") if "status" in df else "ok"
    for col in ("hardware", "threads", "compile_s", "compile_rel_err", "iqr_ms", "median_ms"):
        if col not in df:
            df[col] = math.nan if col != "hardware" else df.device
    for col in setting:
        if col != "model":
            df[col] = df[col].astype(int)
    df["compiled"] = df.label.str.endswith(COMPILED_SUFFIX)
    df["variant"] = df.label.str.removesuffix(COMPILED_SUFFIX)
    out = []
    for key, grp in df.groupby(["hardware", "dtype", "threads", *setting], sort=False):
        fixed = dict(zip(["hardware", "dtype", "threads", *setting], key))
        ok = grp[grp.status == "ok"]
        eager, comp = ok[~ok.compiled].set_index("variant"), grp[grp.compiled].set_index("variant")
        eager_status = grp[~grp.compiled].set_index("variant").status
        refs = {form: t.loc["softmax"] for form, t in (("eager", eager), ("compiled", comp[comp.status == "ok"]))
                if "softmax" in t.index}
        ref_form = min(refs, key=lambda f: float(refs[f].median_ms)) if refs else ""
        ref_ms = float(refs[ref_form].median_ms) if refs else math.nan
        for v in dict.fromkeys(grp.variant):
            e = eager.loc[v] if v in eager.index else None
            c = comp.loc[v] if v in comp.index else None
            c_ok = c is not None and c.status == "ok"
            e_ms = float(e.median_ms) if e is not None else math.nan
            c_ms = float(c.median_ms) if c_ok else math.nan
            speed = e_ms / c_ms
            rel = rows_noise(e, c) if e is not None and c_ok else math.nan
            out.append({**fixed, "variant": v,
                        "eager_ms": e_ms, "eager_iqr_ms": float(e.iqr_ms) if e is not None else math.nan,
                        "compiled_ms": c_ms, "compiled_iqr_ms": float(c.iqr_ms) if c_ok else math.nan,
                        "speedup": speed, "noise": rel, "speedup_said": said(speed, rel), "reference": ref_form,
                        "vs_softmax": ref_ms / e_ms, "compiled_vs_softmax": ref_ms / c_ms,
                        "compile_s": float(c.compile_s) if c is not None else math.nan,
                        "compile_rel_err": float(c.compile_rel_err) if c is not None else math.nan,
                        "status": (str(c.status) if c is not None and c.status != "ok" else "not compiled" if c is None
                                   else "ok" if e is not None else f"eager {eager_status.get(v, 'missing')}"),
                        **{f"{form}_{col}": (row.get(key) if row is not None else None)
                           for form, row in (("eager", e), ("compiled", c if c_ok else None))
                           for col, key in (("samples_ms", "samples_ms"), ("group", "timing_group"))}})
    return pd.DataFrame(out, columns=cols)


def compile_findings(rows: pd.DataFrame, dtype: str, kind: str = "compiled") -> dict[str, Any]:
    """What compiling changes in one run's rows of ``kind`` (see :func:`compiled_table`) in ``dtype``.

    Keys: settings (the token counts, or "model at size px", compared); gain_sentence (per setting,
    the variants that compiling made faster and slower beyond the two medians' spread, largest
    first); softmax_sentence (softmax compiled against eager); count_sentence (per setting, how many
    of the other variants beat the faster softmax form, eager and compiled, beyond the spread);
    failed_sentence (variants not timed both ways, with the status saying why); softmax_overhead_us
    (compiled minus eager softmax in the first setting, overhead_where, in microseconds: what
    compiled code costs per call where there is little to fuse) and overhead_beyond_spread (whether
    that difference exceeds the two medians' spread); n_timed (variants timed both ways);
    compile_s_median; max_rel_err. For cores the other variants are the kernels (:data:`KERNELS`),
    for models every variant but softmax. An empty dict when the run has no such rows in ``dtype``.
    """
    table = compiled_table(rows, kind)
    table = table[table.dtype == dtype]
    if table.empty:
        return {}
    setting = _SETTING[kind]
    gains, counts, soft, where_all = [], [], [], []
    overhead_us, overhead_where, overhead_rel = math.nan, "", math.nan
    for key, t in table.groupby(setting, sort=True):
        key = dict(zip(setting, key if isinstance(key, tuple) else (key,)))
        where = _where(kind, key)
        where_all.append(where.removeprefix("at ").removeprefix("in "))
        t = t.set_index("variant")
        ok = t[t.status == "ok"]
        faster, slower = [], []
        for v, r in ok.iterrows():
            word_ = verdict(float(r.speedup), float(r.noise), above="faster", below="slower")
            if word_ in ("faster", "slower"):
                (faster if word_ == "faster" else slower).append((v, float(r.speedup)))
        faster.sort(key=lambda p: -p[1])
        slower.sort(key=lambda p: p[1])
        part = f"{where}, " + (("faster when compiled: " + ", ".join(f"{v} ({_times(x)} times)" for v, x in faster))
                               if faster else "no variant faster when compiled")
        part += ("; slower: " + ", ".join(f"{v} ({_times(x)} times)" for v, x in slower)) if slower else "; none slower"
        if ok.empty:
            gains.append(f"{where}, no variant was timed both ways")
        else:
            gains.append(part + f"; {len(ok) - len(faster) - len(slower)} of {len(ok)} within the spread")
        if "softmax" not in t.index or not t.loc["softmax", "reference"]:
            continue  # no softmax form timed here: nothing to compare with
        r = t.loc["softmax"]
        if r.status == "ok":
            soft.append(f"{said(float(r.speedup), float(r.noise))} {where}")
            if math.isnan(overhead_us):
                overhead_us, overhead_where = 1e3 * float(r.compiled_ms - r.eager_ms), where
                overhead_rel = float(r.noise)
        ref_form = str(r.reference)
        ref = _form_row(r, ref_form)
        others = [k for k in (KERNELS if kind == "compiled" else t.index) if k in ok.index and k != "softmax"]
        n_e, n_c = (sum(_speed_verdict(ref, _form_row(ok.loc[k], form)) == "faster" for k in others)
                    for form in ("eager", "compiled"))
        noun = "kernels" if kind == "compiled" else "variants"
        if not others:
            continue
        counts.append(f"{where}, {n_e} of {len(others)} {noun} beat fused softmax in its faster form (here "
                      f"{ref_form}) when run eagerly and {n_c} when compiled")
    failed = table[table.status != "ok"]
    failed_sentence = ("Not timed both ways: " + ", ".join(f"{v} ({s})" for v, s in zip(failed.variant, failed.status))
                       + "." if not failed.empty else "Every variant was compiled and timed both ways.")
    return {"settings": where_all,
            "gain_sentence": _sentence(gains),
            "softmax_sentence": ("Compiling softmax made it " + " and ".join(soft) + "." if soft else ""),
            "count_sentence": _sentence(counts),
            "failed_sentence": failed_sentence,
            "softmax_overhead_us": overhead_us, "overhead_where": overhead_where,
            "overhead_beyond_spread": beyond_spread(1 + overhead_us / 1e3 / float(
                table[(table.variant == "softmax") & (table.status == "ok")].eager_ms.iloc[0]), overhead_rel)
            if math.isfinite(overhead_us) else False,
            "n_timed": int((table.status == "ok").sum()),
            "compile_s_median": float(table.compile_s.median()),
            "max_rel_err": float(table.compile_rel_err.max())}


def _compiled_verdict(r: Any) -> str:
    """'faster' / 'slower' when compiling changed a :func:`compiled_table` row's time beyond the two
    medians' spread, else 'no different within the spread' (or 'not measured')."""
    return verdict(float(r.speedup), float(r.noise), above="faster", below="slower")


def compile_prose(rows: pd.DataFrame, dtype: str, device: str) -> dict[str, str]:
    """The chapter's sentences on compiled cores (``kind == 'compiled'`` rows of one run in ``dtype``
    on ``device``), built from :func:`compile_findings` and :func:`compiled_table`, ready to glue.

    Keys: overhead_clause (what compiled fused softmax costs per call at the smallest N, said as a
    cost only when beyond the two medians' spread); slow_big (the variants slower compiled, beyond
    the spread, at the largest N by more than that per-call cost, in microseconds, with what
    profiling the mean kernel showed on the CPU; '' when none); bullet (the summary: variants faster
    compiled at every compiled N, whether softmax gained, the counts against the faster softmax, and
    what that says about the eager comparison).
    """
    found = compile_findings(rows, dtype)
    over_us, where = found.get("softmax_overhead_us", math.nan), found.get("overhead_where", "")
    if not math.isfinite(over_us):
        clause = "fused softmax was not timed both ways here, so that cost is not measured"
    elif found.get("overhead_beyond_spread") and over_us > 0:
        clause = (f"fused softmax, which compiling leaves as one SDPA call, took {sig(over_us, 2)} µs more per call "
                  f"compiled {where}")
    else:
        clause = (f"fused softmax, which compiling leaves as one SDPA call, showed no such cost beyond the spread "
                  f"{where} ({sig(over_us, 2)} µs)")
    table = compiled_table(rows)
    table = table[(table.dtype == dtype) & (table.status == "ok")] if not table.empty else table
    if table.empty:
        return {"overhead_clause": clause, "slow_big": "", "bullet": "nothing was compiled in this run."}
    big = table[table.tokens == table.tokens.max()]
    slow = [f"{r.variant} ({sig(1e3 * (r.compiled_ms - r.eager_ms), 2)} µs)" for _, r in big.iterrows()
            if r.variant != "softmax" and _compiled_verdict(r) == "slower"
            and 1e3 * (r.compiled_ms - r.eager_ms) > max(over_us, 0.0)]
    slow_big = ""
    if slow:
        slow_big = (f"At N = {int(big.tokens.iloc[0])}, though, compiled code was slower beyond the spread by more "
                    f"than that cost: {', '.join(slow)}.")
        if device == "cpu" and any(x.startswith("linear_mean ") for x in slow):
            slow_big += (" Profiling the mean kernel on this study's CPU put the difference inside the batched "
                         "products, not in the compiled code's per-call checks, although its compiled code skips "
                         "two scaling passes. In development probes (not kept in data/), the generated code's "
                         "exact calls (same library function, buffers and strides) replayed outside the compiled "
                         "region ran at the eager speed, while a compiled graph of one batched product was slower "
                         "by a margin that grew with N: the cost comes with running inside the compiled region, by "
                         "a mechanism we did not find.")
    n_settings = table.tokens.nunique()
    gain_all = [v for v, g in table.groupby("variant", sort=False) if v != "softmax" and len(g) == n_settings
                and all(_compiled_verdict(r) == "faster" for _, r in g.iterrows())]
    soft_gain = any(_compiled_verdict(r) == "faster" for _, r in table[table.variant == "softmax"].iterrows())
    bullet = (f"faster beyond the spread at every compiled N: {', '.join(gain_all) if gain_all else 'none'}; fused "
              f"softmax {'gained too' if soft_gain else 'did not gain beyond the spread'}. "
              + found.get("count_sentence", "")
              + (" Compiling helped softmax too, so the eager comparison is not the last word here." if soft_gain
                 else " The eager comparison of cores is fair to softmax and, if anything, unfair to the kernels "
                      "that gain" + (" (and kind to the few that compiling slows)." if slow else ".")))
    return {"overhead_clause": clause, "slow_big": slow_big, "bullet": bullet}


def _sentence(parts: list[str]) -> str:
    """Clauses joined by semicolons into one sentence, its first letter upper case ("" for none)."""
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "." if text else ""


def _form_row(r: Any, form: str) -> dict[str, Any]:
    """One form ('eager' or 'compiled') of a :func:`compiled_table` row as a result row (median_ms, iqr_ms
    and, where kept, samples_ms and timing_group), for :func:`vitspeed.studies.wording.rows_noise`."""
    return {"median_ms": r[f"{form}_ms"], "iqr_ms": r[f"{form}_iqr_ms"],
            "samples_ms": r.get(f"{form}_samples_ms"), "timing_group": r.get(f"{form}_group")}


def _speed_verdict(ref: Any, row: Any) -> str:
    """``row`` against the reference ``ref`` (each with median_ms and iqr_ms): "faster" or "slower" beyond
    the two medians' spread, else "no different within the spread"."""
    return verdict(float(ref["median_ms"] / row["median_ms"]), rows_noise(row, ref), above="faster", below="slower")


def faster_softmax(medians: pd.Series) -> str:
    """Which softmax form (``softmax``, fused SDPA, or ``softmax_explicit``) has the lower median in
    ``medians`` (label -> median ms at one setting); fused when the explicit form is missing (out of
    memory) or not faster."""
    fused, explicit = medians.get("softmax", math.nan), medians.get("softmax_explicit", math.nan)
    return "softmax_explicit" if explicit < fused else "softmax"


def core_findings(rows: pd.DataFrame, dtype: str) -> dict[str, Any]:
    """The numbers the chapter states about the cores of one run in ``dtype``, ready to glue.

    ``rows``: the run's rows (``kind == 'core'`` used; rows whose status is not 'ok', such as
    out-of-memory ones, are ignored). The smallest and largest token counts are those at which fused
    softmax was measured; a kernel missing at the largest (out of memory) is left out of the counts
    there and named in ``missing_sentence``. The reference at each token count is the faster softmax
    form there (:func:`faster_softmax`: fused SDPA or the explicit form, by median), named in
    ``ref_lo`` / ``ref_hi``. Ratios are reference time / kernel time (> 1: the kernel is faster), said
    the way round that is at least 1 with a word (``*_word``: faster/slower). A kernel counts as faster
    (``n_faster_*``) only when the difference exceeds the two medians' spread
    (:func:`vitspeed.studies.wording.noise`); ``n_tied_*`` counts those within it (with no IQRs in
    ``rows``, every difference is within the spread).
    Keys: n_lo, n_hi, ref_lo, ref_hi, n_kernels, n_faster_lo, n_tied_lo, n_faster_hi, n_tied_hi, fastest_hi,
    fastest_hi_ratio, fastest_hi_word, relu_hi_ratio, relu_hi_word, relu_macs_hi, relu_gain_word, relu_crossing,
    explicit_hi_ratio, explicit_sentence, focused_hi_ratio, focused_hi_word, missing_sentence.
    """
    n_lo, n_hi, ms, macs = core_grid(rows, dtype)
    hi, lo = ms.loc[n_hi].dropna(), ms.loc[n_lo].dropna()
    measured = [k for k in KERNELS if k in ms.columns]
    kernels_hi = [k for k in measured if k in hi.index]
    kernels_lo = [k for k in measured if k in lo.index]
    ok = rows[(rows.kind == "core") & (rows.dtype == dtype) & (rows.status.fillna("ok") == "ok")]
    iqr = (ok.assign(tokens=ok.tokens.astype(int))
           .pivot_table(index="tokens", columns="label", values="iqr_ms", aggfunc="median")
           if "iqr_ms" in ok else ms * math.nan)

    ref_of = {n: faster_softmax(ms.loc[n].dropna()) for n in ms.index}

    def faster_and_tied(n: int, kernels: list[str]) -> tuple[int, int]:
        """(kernels faster than the faster softmax beyond the two medians' spread, kernels within it) at n."""
        ref = {"median_ms": ms.loc[n, ref_of[n]], "iqr_ms": iqr.loc[n].get(ref_of[n], math.nan)}
        said = [_speed_verdict(ref, {"median_ms": ms.loc[n, k], "iqr_ms": iqr.loc[n].get(k, math.nan)})
                for k in kernels]
        return said.count("faster"), len(said) - said.count("faster") - said.count("slower")

    (f_lo, t_lo), (f_hi, t_hi) = faster_and_tied(n_lo, kernels_lo), faster_and_tied(n_hi, kernels_hi)
    ref_hi = ref_of[n_hi]
    out: dict[str, Any] = {"n_lo": n_lo, "n_hi": n_hi, "ref_lo": SOFTMAX_FORM_NAMES[ref_of[n_lo]],
                           "ref_hi": SOFTMAX_FORM_NAMES[ref_hi], "n_kernels": len(measured), "n_faster_lo": f_lo,
                           "n_tied_lo": t_lo, "n_faster_hi": f_hi, "n_tied_hi": t_hi}
    missing = [k for k in measured if k not in kernels_hi]
    out["missing_sentence"] = (f"Not measured at N = {n_hi} for lack of memory: {', '.join(missing)}." if missing
                               else f"Every kernel ran at N = {n_hi}.")
    if kernels_hi:
        fastest = str(hi[kernels_hi].idxmin())
        r = ratio_of(hi, ref_hi, fastest)
        out.update(fastest_hi=fastest, fastest_hi_ratio=_times(r), fastest_hi_word=_word(r))
    else:
        out.update(fastest_hi="none (no kernel measured)", fastest_hi_ratio=math.nan, fastest_hi_word="-")
    relu = ratio_of(hi, ref_hi, "linear_relu")
    out.update(relu_hi_ratio=_times(relu), relu_hi_word=_word(relu))
    relu_macs = ratio_of(macs.loc[n_hi].dropna(), ref_hi, "linear_relu")
    out["relu_macs_hi"] = float(round(relu_macs, 1)) if math.isfinite(relu_macs) else math.nan
    out["relu_gain_word"] = ("smaller" if relu < relu_macs else "larger") if math.isfinite(relu * relu_macs) else "-"
    both = ms[["softmax", "linear_relu"]].dropna() if "linear_relu" in ms.columns else ms.iloc[:0]
    crossing = [int(n) for n in both.index if both.loc[n, "linear_relu"] < ms.loc[n, ref_of[n]]]
    if not crossing:
        out["relu_crossing"] = "at none of the measured token counts"
    elif crossing == [int(n) for n in both.index if n >= crossing[0]] and crossing[0] == int(both.index.min()):
        out["relu_crossing"] = f"at every measured N (from N = {crossing[0]} on)"
    else:
        out["relu_crossing"] = f"from N = {crossing[0]}"
    explicit = ratio_of(hi, "softmax_explicit", "softmax")
    explicit_lo = ratio_of(lo, "softmax_explicit", "softmax")
    lo_noise = rows_noise({"median_ms": lo.get("softmax", math.nan), "iqr_ms": iqr.loc[n_lo].get("softmax", math.nan)},
                          {"median_ms": lo.get("softmax_explicit", math.nan),
                           "iqr_ms": iqr.loc[n_lo].get("softmax_explicit", math.nan)})
    lo_clause = (f" At N = {n_lo}, though, the explicit form was the faster one in this measurement "
                 f"({_times(explicit_lo)} times"
                 + ("" if beyond_spread(explicit_lo, lo_noise) else ", within the spread of the two medians")
                 + "), which is why every kernel is compared with the faster form at each N."
                 if explicit_lo < 1 else "")
    if math.isfinite(explicit):
        out["explicit_hi_ratio"] = float(round(explicit, 2))
        out["explicit_sentence"] = (f"At N = {n_hi} the explicit softmax takes {explicit:.2f} times the time of the "
                                    "fused one" + (": a kernel compared with the textbook form there looks faster "
                                                   "than it is." if explicit > 1 else
                                                   ", so there the textbook form is the faster baseline.")
                                    + lo_clause)
    else:
        out["explicit_hi_ratio"] = math.nan
        out["explicit_sentence"] = (f"The explicit softmax could not run at N = {n_hi} (its N x N map did not fit "
                                    "in memory), which the fused kernel never materializes." + lo_clause)
    focused = ratio_of(hi, ref_hi, "focused")
    out.update(focused_hi_ratio=_times(focused), focused_hi_word=_word(focused))
    return out


def model_verdicts(rows: pd.DataFrame, model: str, img_size: int, dtype: str) -> str:
    """One sentence on the whole-model rows (``kind == 'model'``) of ``model`` at ``img_size`` px in
    ``dtype``: which variants are faster or slower than the same model with the faster softmax form
    (:func:`faster_softmax`, named in the sentence) beyond the two medians' spread (with the ratio of
    medians), and how many are within it."""
    m = rows[(rows.kind == "model") & (rows.model == model) & (rows.dtype == dtype)
             & (rows.status.fillna("ok") == "ok")]
    m = m[m.img_size.astype(int) == int(img_size)]
    m = m.drop_duplicates("label", keep="last").set_index("label")
    if "softmax" not in m.index:
        return f"{model} at {img_size} px was not measured with fused softmax in {dtype}."
    ref_label = faster_softmax(m.median_ms)
    ref = m.loc[ref_label]
    faster, slower, within = [], [], 0
    others = [k for k in m.index if k not in REFERENCES]
    for label in others:
        said = _speed_verdict(ref, m.loc[label])
        if said not in ("faster", "slower"):
            within += 1
        else:
            (faster if said == "faster" else slower).append(
                f"{label} ({_times(float(ref['median_ms'] / m.loc[label, 'median_ms']))} times)")
    parts = [f"faster: {', '.join(faster)}" if faster else "none faster",
             f"slower: {', '.join(slower)}" if slower else "none slower"]
    return (f"{model} at {img_size} px against the faster softmax ({SOFTMAX_FORM_NAMES[ref_label]}), beyond the "
            f"spread: {'; '.join(parts)}; {within} of {len(others)} within the spread")
