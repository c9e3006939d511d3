"""Where a core's or a model's CPU time goes by operator, read from data/op_profiles (written by
``vitspeed profile --by operator``).

The Taylor chapter measures that time per MAC differs several times between the Taylor kernels, and
the hybrids chapter that QT-ViT-1 takes more time than its MACs over EfficientViT-B1 would say; an
operator profile says which operators of the forward pass take the time and at what MAC rate
(:mod:`vitspeed.op_profile`). Every call is profiled in several interleaved rounds; the tables give
the median over rounds, and the range, since the shares move with the machine's noise.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import pandas as pd

from vitspeed.op_profile import CATEGORIES, CHAPTER
from vitspeed.results import read_results
from vitspeed.studies.profiles import call_size, newest_calls

__all__ = ["load_op_profiles", "CALL_KEY", "category_ms", "median_shares", "category_table", "product_rates",
           "per_conv_ms", "taylor_text", "qtvit_text", "NO_MACS"]

#: what identifies one profiled call within a hardware (rounds are repeats of a call)
CALL_KEY = ["kind", "target", "attention", "tokens", "img_size", "batch_size", "dtype", "threads"]
#: the categories of operators that do no counted MACs
NO_MACS = ("elementwise", "data movement", "other")


def load_op_profiles(hardware: str | None = None, roots: Sequence[str | os.PathLike] | None = None) -> pd.DataFrame:
    """Every operator-profiled call of every hardware (of ``hardware`` only when given), from all its
    runs: a call profiled in several runs is taken from the newest (greatest run id, a UTC time),
    all its rounds. Numeric columns are floats, ``batch_size`` and ``round`` ints. An empty frame when
    there is none. ``roots``: as for :func:`vitspeed.results.read_results`."""
    prof = newest_calls(read_results(CHAPTER, roots=roots), CALL_KEY, hardware)
    if not len(prof):
        return prof
    floats = ["calls_per_pass", "ms_per_pass", "share_pct", "macs", "elementwise", "gmacs_per_s",
              "profiled_ms_per_pass", "wall_ms_per_pass", "page_faults_per_pass"]
    return prof.assign(**{c: pd.to_numeric(prof[c], errors="coerce") for c in floats if c in prof},
                       batch_size=prof.batch_size.astype(int), round=prof["round"].astype(int))


_CALL = ["hardware", "kind", "target", "size", "batch_size", "dtype"]


def category_ms(ops: pd.DataFrame) -> pd.DataFrame:
    """Milliseconds per pass and percent of the operator time per category, for each profiled call
    and round: columns ``hardware``, ``kind``, ``target``, ``size``, ``batch_size``, ``dtype``,
    ``round``, ``category``, ``ms``, ``share_pct``, ``macs``; categories with no operator left out."""
    if not len(ops):
        return pd.DataFrame(columns=["hardware", "kind", "target", "size", "batch_size", "dtype", "round",
                                     "category", "ms", "share_pct", "macs"])
    df = ops.assign(size=[call_size(r) for r in ops.itertuples()])
    keys = ["hardware", "kind", "target", "size", "batch_size", "dtype", "round"]
    out = df.groupby(keys + ["category"], as_index=False).agg(ms=("ms_per_pass", "sum"), share_pct=("share_pct", "sum"),
                                                              macs=("macs", "sum"))
    return out


def _round_shares(c: pd.DataFrame) -> pd.DataFrame:
    """:func:`category_ms` rows as percent per category (columns) for each call and round (rows), a
    category a round has no operator of counted as 0."""
    return c.pivot_table(index=_CALL + ["round"], columns="category", values="share_pct", aggfunc="sum",
                         fill_value=0.0)


def median_shares(ops: pd.DataFrame) -> pd.DataFrame:
    """Percent of the operator time per category, the median over rounds, one row per profiled call
    and category: columns ``hardware``, ``kind``, ``target``, ``size``, ``batch_size``, ``dtype``,
    ``category``, ``share_pct`` (as :func:`category_table`'s medians, for figures and prose)."""
    c = category_ms(ops)
    if not len(c):
        return pd.DataFrame(columns=_CALL + ["category", "share_pct"])
    med = _round_shares(c).groupby(level=_CALL).median()
    return med.stack().rename("share_pct").reset_index()


def category_table(ops: pd.DataFrame) -> pd.DataFrame:
    """Percent of the operator time per category (columns, in :data:`~vitspeed.op_profile.CATEGORIES`
    order; one no round gives 0.5% left out), the median over rounds with the range in brackets
    (``"41 (38-45)"``), one row per profiled call (hardware, kind, target, size, batch size, dtype),
    plus ``ms per pass`` (median of the summed operator time) and ``rounds``."""
    c = category_ms(ops)
    if not len(c):
        return pd.DataFrame()
    keys = _CALL
    full = _round_shares(c)
    # a category no round gives half a percent (``other``: a type promotion) would be a column of zeros
    cats = [x for x in CATEGORIES if x in full.columns and full[x].max() >= 0.5]
    g = full[cats].groupby(level=keys)
    med, lo, hi = g.median(), g.min(), g.max()
    table = pd.DataFrame({cat: [f"{m:.0f} ({a:.0f}-{b:.0f})" for m, a, b in zip(med[cat], lo[cat], hi[cat])]
                          for cat in cats}, index=med.index)
    totals = c.groupby(keys + ["round"]).ms.sum().groupby(level=keys)
    table["ms per pass"] = totals.median().round(2)
    table["rounds"] = totals.size()
    return table


def product_rates(ops: pd.DataFrame) -> pd.DataFrame:
    """MAC rate (GMAC/s, median over rounds) of each product operator of each profiled call, with
    its share of the call's MACs: columns ``hardware``, ``kind``, ``target``, ``size``,
    ``batch_size``, ``dtype``, ``operator``, ``gmacs_per_s``, ``macs_pct``, ``time_pct``."""
    cols = ["hardware", "kind", "target", "size", "batch_size", "dtype", "operator", "gmacs_per_s", "macs_pct",
            "time_pct"]
    if not len(ops):
        return pd.DataFrame(columns=cols)
    df = ops.assign(size=[call_size(r) for r in ops.itertuples()])
    keys = _CALL
    total_macs = df.groupby(keys + ["round"]).macs.transform("sum")
    df = df.assign(macs_pct=100.0 * df.macs / total_macs)
    p = df[df.category == "products"]
    out = p.groupby(keys + ["operator"], as_index=False).agg(gmacs_per_s=("gmacs_per_s", "median"),
                                                            macs_pct=("macs_pct", "median"),
                                                            time_pct=("share_pct", "median"))
    return out[cols]


def _operator_share(ops: pd.DataFrame, target: str, operator: str) -> float:
    rows = ops[(ops.target == target) & (ops.operator == operator)]
    return float(rows.groupby("round").share_pct.sum().median()) if len(rows) else 0.0


def taylor_text(ops: pd.DataFrame, names: Mapping[str, str], compact: str = "taylor2_compact",
                random: str = "taylor2_random") -> str | None:
    """What the operator profiles of the Taylor cores (eager, one hardware) say about where their
    time goes: the share of products, of elementwise passes and of data movement of each profiled
    core (medians over rounds, :func:`median_shares`), and the gathers' (``index_select``) share in
    ``random``. ``names`` maps attention variants to the labels to print. None when ``compact`` was
    not profiled as a core."""
    cores = ops[ops.kind == "core"] if len(ops) else ops
    if not len(cores) or compact not in set(cores.target):
        return None
    targets = list(dict.fromkeys(cores.target))
    shares = median_shares(cores).set_index(["target", "category"]).share_pct
    tokens = int(cores.tokens.astype(float).iloc[0])

    def part(t: str, cat: str) -> float:
        return float(shares.get((t, cat), 0.0))

    def listed(cat: str) -> str:
        return ", ".join(f"{names.get(t, t)} {part(t, cat):.0f}%" for t in targets)

    text = (f"An operator profile of the cores at N = {tokens} (the profile section below) shows where: the "
            f"matrix products take {listed('products')} of the operator time; elementwise passes (the squares, "
            f"outer products and means that form the features, the final division) {listed('elementwise')}; "
            f"copies that assemble the feature maps (concatenations, pads, gathers) {listed('data movement')}")
    if random in targets:
        text += (f"; the random cut's two gathers (index_select) alone take "
                 f"{_operator_share(cores, random, 'aten::index_select'):.0f}%")
    return text + "."


def per_conv_ms(ops: pd.DataFrame, target: str, batch_size: int) -> pd.Series | None:
    """Milliseconds of each category of operator per millisecond of convolution (``aten::conv2d``) in
    one eager model profile: the median over rounds, indexed by category, with the convolutions' own
    products taken out of ``products`` (so ``products`` is the other products: matmul, linear).
    Within one profile this ratio does not move with the machine's speed, as absolute times do.
    None when the model was not profiled at that batch size or has no convolution."""
    rows = ops[(ops.kind == "model") & (ops.target == target) & (ops.batch_size == batch_size)]
    if not len(rows):
        return None
    conv = rows[rows.operator == "aten::conv2d"].groupby("round").ms_per_pass.sum()
    if not len(conv) or not (conv > 0).all():
        return None
    rest = rows[rows.operator != "aten::conv2d"].pivot_table(index="round", columns="category",
                                                             values="ms_per_pass", aggfunc="sum", fill_value=0.0)
    return rest.div(conv, axis=0).median()


def qtvit_text(ops: pd.DataFrame, qtvit: str, base: str, names: Mapping[str, str],
               batch_sizes: Sequence[int]) -> str | None:
    """What the operator profiles of ``qtvit`` and ``base`` (eager models of one hardware whose
    convolutions do the same work) say about the time QT-ViT adds, at each batch size in
    ``batch_sizes`` profiled for both: the milliseconds of other operators per millisecond of
    convolution in each model (:func:`per_conv_ms`), the time ratio this predicts,
    (1 + other_qtvit) / (1 + other_base), the part of the difference in operators with no MACs
    (:data:`NO_MACS`), and the MAC rate of ``qtvit``'s ``matmul`` against its convolutions. None when
    no batch size was profiled for both."""
    if not len(ops):
        return None
    rates = product_rates(ops[ops.kind == "model"])
    found = []
    for b in batch_sizes:
        q, e = per_conv_ms(ops, qtvit, b), per_conv_ms(ops, base, b)
        if q is None or e is None:
            continue
        cats = q.index.union(e.index)
        q, e = q.reindex(cats, fill_value=0.0), e.reindex(cats, fill_value=0.0)
        extra = q - e
        free = float(extra[[c for c in cats if c in NO_MACS]].sum())
        r = rates[(rates.target == qtvit) & (rates.batch_size == b)].set_index("operator")
        found.append({"b": b, "q": float(q.sum()), "e": float(e.sum()), "ratio": (1 + q.sum()) / (1 + e.sum()),
                      "free_pct": 100.0 * free / float(extra.sum()) if extra.sum() > 0 else float("nan"),
                      "mm": r.gmacs_per_s.get("aten::matmul"), "conv": r.gmacs_per_s.get("aten::conv2d"),
                      "mm_macs": r.macs_pct.get("aten::matmul")})
    if not found:
        return None
    qn, en = names.get(qtvit, qtvit), names.get(base, base)
    batches = " and ".join(str(f["b"]) for f in found)
    plural = "es" if len(found) > 1 else ""

    def each(key: str, fmt: str, unit: str = "") -> str:
        return " and ".join(format(f[key], fmt) for f in found) + unit

    text = (f"An operator profile (the profile section above) tests this, with the convolutions as the yardstick "
            f"since they do the same work in both models: per millisecond of convolution at batch{plural} {batches}, "
            f"{qn} runs {each('q', '.2f', ' ms')} of other operators, {en} {each('e', '.2f', ' ms')}; this "
            f"predicts {each('ratio', '.2f')} times {en}'s time. ")
    if all(f["q"] > f["e"] for f in found):
        text += (f"Of that extra, {each('free_pct', '.0f', '%')} is in operators that do no MACs "
                 "(copies such as concatenations and pads, and elementwise passes)")
    else:
        text += "The profile does not show extra operator time in it"
    if all(f["mm"] is not None and f["conv"] is not None for f in found):
        text += (f"; the attention's products (matmul, {found[0]['mm_macs']:.1f}% of {qn}'s MACs) run at "
                 f"{each('mm', '.0f', ' GMAC/s')}, its convolutions at {each('conv', '.0f', ' GMAC/s')}")
    return text + "."
