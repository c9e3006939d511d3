"""Chapter "redundancy": hallucinated attention (hMHSA) and the compact FFN (cFFN) on DeiT-T/S.

Xu et al. (arXiv 2306.10875) claim 10-20% fewer FLOPs and parameters on DeiT with hMHSA + cFFN
but never measured speed. For each base model (DeiT-T, DeiT-S) four variants are built and timed
side by side, interleaved, at each (resolution, batch, dtype): the stock model, hMHSA alone, cFFN
alone and both (hDeiT). Our reading of the paper is the one in
:mod:`vitspeed.attention.hallucinated` and :mod:`vitspeed.ffn`; cFFN is always timed in its merged
(deployed) form: two plain matmuls, the training branches folded.

Units: FLOPs are MACs per image (``gmacs``, billions), parameters in millions (``params_m``),
latency in ms per batch (median, IQR), throughput in images/s. Savings are percentages of the
stock model measured in the same interleaved group (positive = fewer / faster).
"""
from __future__ import annotations

from typing import Any, Iterable

import pandas as pd
import sympy as sp

from vitspeed import formulas as F
from vitspeed.attention import families as _families  # noqa: F401  registers every variant in book order first
from vitspeed.attention import hallucinated as _hallucinated_module
from vitspeed import ffn as _ffn_module
from vitspeed.ffn import cffn_rank
from vitspeed.models import create_model
from vitspeed.models.hvit import merge_ffns
from vitspeed.studies.compare import Candidate, candidate, compare_models_finite, run_sweep
from vitspeed.studies.wording import joined, measured_elsewhere

__all__ = ["BASES", "VARIANTS", "hmhsa_ratio", "redundancy_candidates", "compare_redundancy",
           "run_redundancy", "predicted_savings", "counted_savings", "interpretation", "CLAIMED_RANGE_PCT",
           "conversion", "conversion_words"]

CHAPTER = "redundancy"
# base timm name -> (short label, composite hViT model)
BASES = {
    "deit_tiny_patch16_224": ("DeiT-T", "hdeit_tiny"),
    "deit_small_patch16_224": ("DeiT-S", "hdeit_small"),
}
# variant id -> label suffix
VARIANTS = {"stock": "", "hmhsa": " + hMHSA", "cffn": " + cFFN", "hmhsa+cffn": " + hMHSA + cFFN"}
CLAIMED_RANGE_PCT = (10.0, 20.0)  # the paper's abstract: 10-20% fewer FLOPs and params on DeiT


def _check_base(base: str) -> tuple[str, str]:
    if base not in BASES:
        raise ValueError(f"unknown base model {base!r} for the redundancy study; valid choices: {', '.join(BASES)}")
    return BASES[base]


def hmhsa_ratio(num_heads: int) -> float:
    """Computed-head ratio used on a model with ``num_heads`` heads: 1/2, or 2/3 for DeiT-T's 3 heads.

    The same split as :mod:`vitspeed.models.hvit` (half the heads when h is even; otherwise the
    largest whole number of computed heads below h, i.e. one hallucinated head for h = 3).
    """
    if num_heads % 2 == 0:
        return 0.5
    return (num_heads - 1) / num_heads


def _geometry(base: str) -> dict[str, int]:
    model = create_model(base)
    blk = model.blocks[0]
    return {"depth": len(model.blocks), "width": model.embed_dim, "heads": blk.attn.num_heads,
            "hidden": blk.mlp.fc1.out_features, "patch": model.patch_embed.patch_size[0]}


def redundancy_candidates(base: str, num_heads: int | None = None) -> list[Candidate]:
    """The four models compared for ``base``: stock, + hMHSA, + cFFN (merged), hDeiT (both).

    Each candidate carries ``variant`` (stock / hmhsa / cffn / hmhsa+cffn) besides the fields that
    :func:`vitspeed.studies.compare.compare_models` reads.
    """
    short, composite = _check_base(base)
    heads = num_heads if num_heads is not None else _geometry(base)["heads"]
    ratio = hmhsa_ratio(heads)
    return [
        candidate(short, model=base, variant="stock"),
        candidate(short + VARIANTS["hmhsa"], model=base, variant="hmhsa", attention="hallucinated",
                  options={"ratio": ratio}),
        candidate(short + VARIANTS["cffn"], model=base, variant="cffn", ffn="cffn", prepare=merge_ffns),
        candidate(short + VARIANTS["hmhsa+cffn"], model=composite, variant="hmhsa+cffn"),
    ]


def _savings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add savings against the stock row of the same group (percent, positive = fewer / faster)."""
    stock = next(r for r in rows if r["variant"] == "stock")
    nan = float("nan")
    for r in rows:
        counted = "gmacs" in r and "gmacs" in stock  # absent from rows with a non-finite output
        r["macs_saved_pct"] = 100.0 * (1.0 - r["gmacs"] / stock["gmacs"]) if counted else nan
        r["params_saved_pct"] = 100.0 * (1.0 - r["params_m"] / stock["params_m"]) if counted else nan
        ok = r.get("status") == "ok" and stock.get("status") == "ok"
        r["latency_saved_pct"] = 100.0 * (1.0 - r["median_ms"] / stock["median_ms"]) if ok else float("nan")
        r["speedup"] = stock["median_ms"] / r["median_ms"] if ok else float("nan")
    return rows


def compare_redundancy(base: str, img_size: int = 224, batch_size: int = 1, device: str = "cpu",
                       dtype: str = "float32", warmup: int = 3, repeats: int = 10) -> list[dict[str, Any]]:
    """Time the four variants of ``base`` interleaved; rows of compare_models plus savings.

    A variant whose output is not finite (e.g. overflow in float16) gets ``status='nonfinite'``
    and the others are timed without it.

    Extra columns: base (timm name), base_label (DeiT-T / DeiT-S), variant, hmhsa_ratio, tokens,
    macs_saved_pct, params_saved_pct, latency_saved_pct (vs the stock model, %), speedup (stock / variant).
    """
    geo = _geometry(base)
    cands = redundancy_candidates(base, geo["heads"])
    rows = compare_models_finite(cands, img_size=img_size, batch_size=batch_size, device=device, dtype=dtype,
                                 warmup=warmup, repeats=repeats)
    tokens = (img_size // geo["patch"]) ** 2 + 1
    for cand, row in zip(cands, rows):
        row.update(base=base, base_label=BASES[base][0], variant=cand["variant"], tokens=tokens,
                   hmhsa_ratio=hmhsa_ratio(geo["heads"]) if "hmhsa" in cand["variant"] else float("nan"))
    return _savings(rows)


def run_redundancy(bases: Iterable[str], img_sizes: Iterable[int] = (224,), batch_sizes: Iterable[int] = (1,),
                   device: str = "cpu", dtypes: Iterable[str] = ("float32",), warmup: int = 3,
                   repeats: int = 10, run_id: str | None = None) -> pd.DataFrame:
    """Sweep bases x sizes x batches x dtypes into data/redundancy (resumable by run id); this run's rows."""
    bases = list(bases)
    for b in bases:
        _check_base(b)
    dtypes = list(dtypes)
    configs = [{"base": b, "img_size": s, "batch_size": n, "dtype": dt}
               for dt in dtypes for b in bases for s in img_sizes for n in batch_sizes]

    def group(cfg: dict[str, Any]) -> list[dict[str, Any]]:
        return compare_redundancy(cfg["base"], cfg["img_size"], cfg["batch_size"], device=device,
                                  dtype=cfg["dtype"], warmup=warmup, repeats=repeats)

    return run_sweep(CHAPTER, configs, group, key_fields=("base", "img_size", "batch_size", "dtype"),
                     device=device, dtypes=dtypes, run_id=run_id)


def predicted_savings(base: str, img_size: int = 224) -> list[dict[str, Any]]:
    """Closed-form MACs and parameters saved by each module, per model (depth x per-block saving).

    MACs (per image): attention = :func:`vitspeed.formulas.attention_module_formula` of softmax minus
    that of hallucinated (projections + core, no bias); FFN = N (H C - r (H + C)) for the rank-r
    factorized fc2. Params: qkv shrinks from 3C to 2 h_c d + C outputs (weights and biases) and
    gains the (h - h_c) x h_c mixing logits; fc2 goes from H C + C to r H + r C + C.
    Rows: variant, macs_saved (int), params_saved (int), tokens.
    """
    geo = _geometry(base)
    C, h, H, L = geo["width"], geo["heads"], geo["hidden"], geo["depth"]
    n_tok = (img_size // geo["patch"]) ** 2 + 1
    ratio = hmhsa_ratio(h)
    hc = round(ratio * h)
    d = C // h
    soft = F.attention_module_formula("softmax", 1, n_tok, C, h)["macs"]
    hall = F.attention_module_formula("hallucinated", 1, n_tok, C, h, ratio=ratio)["macs"]
    attn_macs = int(sp.nsimplify(soft - hall))
    r = cffn_rank(H, C)
    ffn_macs = n_tok * (H * C - r * (H + C))
    attn_params = (C + 1) * (2 * C - 2 * hc * d) - (h - hc) * hc
    ffn_params = H * C - r * (H + C)
    out = []
    for variant, m, p in (("hmhsa", attn_macs, attn_params), ("cffn", ffn_macs, ffn_params),
                          ("hmhsa+cffn", attn_macs + ffn_macs, attn_params + ffn_params)):
        out.append({"base": base, "variant": variant, "tokens": n_tok, "macs_saved": L * m,
                    "params_saved": L * p})
    return out


def counted_savings(bases: Iterable[str], img_size: int = 224) -> pd.DataFrame:
    """Counted MACs/params of the four variants of each base (batch 1), beside the closed form.

    Columns: base_label, variant, gmacs, params_m, macs_saved_pct, params_saved_pct,
    macs_saved / params_saved (counted, absolute), predicted_macs_saved / predicted_params_saved
    and ``exact`` (counted saving == closed form, MACs and params).
    """
    import torch

    from vitspeed.flops import count_flops, count_params

    rows = []
    for base in bases:
        pred = {p["variant"]: p for p in predicted_savings(base, img_size)}
        counted = {}
        for cand in redundancy_candidates(base):
            model = create_model(cand["model"], img_size=img_size, attention=cand.get("attention"),
                                 attention_options=cand.get("options"), ffn=cand.get("ffn"))
            if cand.get("prepare") is not None:
                model = cand["prepare"](model)
            fc = count_flops(model, torch.zeros(1, 3, img_size, img_size))
            counted[cand["variant"]] = (fc.macs, count_params(model), cand["label"])
        macs0, params0, _ = counted["stock"]
        for variant, (macs, params, label) in counted.items():
            p = pred.get(variant, {"macs_saved": 0, "params_saved": 0})
            rows.append({"base_label": BASES[base][0], "variant": variant, "model": label, "img_size": img_size,
                         "gmacs": macs / 1e9, "params_m": params / 1e6,
                         "macs_saved_pct": 100.0 * (macs0 - macs) / macs0,
                         "params_saved_pct": 100.0 * (params0 - params) / params0,
                         "macs_saved": macs0 - macs, "predicted_macs_saved": p["macs_saved"],
                         "params_saved": params0 - params, "predicted_params_saved": p["params_saved"],
                         "exact": macs0 - macs == p["macs_saved"] and params0 - params == p["params_saved"]})
    return pd.DataFrame(rows)


def interpretation() -> str:
    """Our stated reading of hMHSA and cFFN: the interpretation paragraphs of the two module docstrings."""
    hall = _hallucinated_module.__doc__ or ""
    start = hall.index("Only the paper's abstract")
    stop = hall.index("Cheapest exact form")
    ffn = _ffn_module.__doc__ or ""
    fstart = ffn.index("``cffn``")
    fstop = ffn.index("Cost (MACs per token")
    return ("hMHSA (vitspeed.attention.hallucinated):\n" + hall[start:stop].rstrip() + "\n\n"
            "cFFN (vitspeed.ffn):\n" + ffn[fstart:fstop].rstrip())


def conversion(rows: pd.DataFrame) -> pd.DataFrame:
    """How much of its MACs saving each variant turns into latency saved: ``latency_saved_pct /
    macs_saved_pct`` (a fraction; 1 = the latency falls by as much as the MACs, below 1 = less) per
    (base_label, variant, batch_size), from rows of one measurement with those columns; stock rows
    (nothing saved) are left out."""
    saved = rows[(rows.variant != "stock") & (rows.status.fillna("ok") == "ok")]
    return (saved.assign(share=saved.latency_saved_pct / saved.macs_saved_pct)
            .set_index(["base_label", "variant", "batch_size"]).share.sort_index())


def conversion_words(share: pd.Series, close: float = 0.05) -> str:
    """hMHSA's conversion of MACs into time (see :func:`conversion`) per base and batch size, set against
    cFFN's in words. Shares within ``close`` (fraction points) of each other are "about as much"; the
    cause is said as a hypothesis (fits / does not fit a fixed per-call overhead), since no run here
    profiles hMHSA's operators."""
    bases = [b for b in dict.fromkeys(share.index.get_level_values(0)) if (b, "hmhsa") in share.droplevel(2).index]
    if not bases:
        return ""
    batches = sorted(set(share.loc[bases[0], "hmhsa"].index))

    def _cmp(base: str, b: int) -> str:
        h, c = share.get((base, "hmhsa", b)), share.get((base, "cffn", b))
        if h is None or c is None:
            return "not compared"
        return "about as much as cFFN" if abs(h - c) <= close else ("less than cFFN" if h < c else "more than cFFN")

    def _pcts(base: str, labelled: bool) -> str:
        return joined([f"{100 * share[(base, 'hmhsa', n)]:.0f}%" + (f" (batch {n})" if labelled else "")
                       for n in batches])

    text = (f"hMHSA turns {_pcts(bases[0], True)} of its MACs saving into time on {bases[0]}"
            + "".join(f", {_pcts(b, False)} on {b}" for b in bases[1:]) + ".")
    clauses = []
    for n in batches:
        words = [_cmp(b, n) for b in bases]
        if len(set(words)) == 1:
            clauses.append(f"at batch {n} that is {words[0]}" + (" on both models" if len(bases) == 2 else ""))
        else:
            clauses.append(f"at batch {n} " + " and ".join(f"{w} on {b}" for w, b in zip(words, bases)))
    per_batch = "; ".join(clauses)
    text += " " + per_batch[0].upper() + per_batch[1:] + "."
    rising = len(batches) > 1 and all(share[(b, "hmhsa", batches[-1])] > share[(b, "hmhsa", batches[0])] + close
                                      for b in bases)
    ops = "its extra operators (the head-mixing product, the split into computed and hallucinated heads, the concatenation)"
    if rising:
        text += (f" Its share grows with the batch on {'both models' if len(bases) == 2 else bases[0]}, which fits, "
                 f"but does not prove, a fixed per-call cost of {ops} that a larger batch spreads over more images.")
    else:
        text += (f" Where the shares differ, {ops} and the attention maps it forms explicitly for its computed "
                 "heads (the stock model's fused kernel does not) are where we would look; no run here profiles them.")
    return text


def other_hardware_text(results: pd.DataFrame, this_hardware: str, base: str = "DeiT-S") -> str:
    """hDeiT (hMHSA + cFFN) against its stock base at the smallest image size, at each batch size, on
    every hardware of ``results`` other than ``this_hardware``, per precision, as one sentence (time
    ratios: above 1 is slower). Empty when no other hardware measured ``base``."""
    need = {"hardware", "dtype", "base_label", "variant", "img_size", "batch_size", "median_ms"}
    if not need <= set(results.columns):
        return ""
    ok = results[(results.status.fillna("ok") == "ok") if "status" in results else slice(None)]
    ok = ok[(ok.hardware != this_hardware) & (ok.base_label == base)]
    parts = []
    for (hw, dt), g in ok.groupby(["hardware", "dtype"], sort=True):
        g = g[g.img_size == g.img_size.min()]
        per_batch = []
        for b, gb in g.groupby("batch_size", sort=True):
            t = gb.set_index("variant").median_ms
            if {"stock", "hmhsa+cffn"} <= set(t.index):
                whose = f" {base}'s time" if not per_batch else ""
                per_batch.append(f"{t['hmhsa+cffn'] / t['stock']:.2f} times{whose} at batch {int(b)}")
        if per_batch:
            parts.append(f"on {hw} in {dt} at {int(g.img_size.iloc[0])} px, h{base} (hMHSA + cFFN) takes "
                         + " and ".join(per_batch))
    return measured_elsewhere(parts)
