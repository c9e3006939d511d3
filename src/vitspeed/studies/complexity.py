"""Chapter 1 (complexity): closed-form costs checked against the counter on real modules.

All counts are MACs for products and ops for elementwise work (see :mod:`vitspeed.flops`).
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd
import torch
from timm.layers import Mlp
from timm.models.swin_transformer import WindowAttention as TimmWindowAttention

try:
    from timm.layers import Attention
except ImportError:  # timm < 1.0.16 defines ViT's Attention in the model module only
    from timm.models.vision_transformer import Attention

from vitspeed import formulas as F
from vitspeed.attention import build_core, get_attention, list_attentions
from vitspeed.flops import count_flops

__all__ = ["layer_check", "variant_check", "variant_traffic", "cost_curves", "crossovers", "save_counts"]


def layer_check(tokens: Iterable[int], widths: Iterable[int], heads: int = 6, window: int = 7) -> pd.DataFrame:
    """Counted vs closed-form MACs of timm's MSA (fused SDPA), W-MSA and FFN modules.

    One row per (layer, N, C): ``counted_macs`` from the counter on the real timm module (batch 1),
    ``formula_macs`` from Swin eq. (1)-(2) and the FFN formula, and whether they agree exactly.
    """
    rows = []
    for C in widths:
        for n in tokens:
            x = torch.zeros(1, n, C)
            cases = [("MSA", Attention(C, num_heads=heads, qkv_bias=True), (x,), F.msa_macs())]
            cases.append(("FFN", Mlp(C, 4 * C), (x,), F.ffn_macs(ratio=4)))
            if n % (window * window) == 0:
                xw = torch.zeros(n // (window * window), window * window, C)
                cases.append(("W-MSA", TimmWindowAttention(C, heads, window_size=window), (xw,), F.wmsa_macs()))
            for layer, module, inputs, expr in cases:
                fc = count_flops(module.eval(), inputs)
                formula = F.evaluate(expr, N=n, C=C, M=window)
                rows.append({"layer": layer, "N": n, "C": C, "counted_macs": fc.macs, "formula_macs": formula,
                             "elementwise_ops": fc.elementwise, "exact": fc.macs == formula,
                             "unhandled": ",".join(sorted(fc.unhandled)) or "-"})
    return pd.DataFrame(rows)


def variant_check(sizes: Iterable[tuple[int, int, int]], batch: int = 1,
                  variants: Iterable[str] | None = None) -> pd.DataFrame:
    """Counted vs closed-form cost of every registered variant's core at each (N, head_dim, heads).

    Default options of each variant; inputs are random (B, heads, N, head_dim) tensors.
    """
    rows = []
    torch.manual_seed(0)
    for name in variants or list_attentions():
        spec = get_attention(name)
        if spec.formula is None:
            continue
        for n, d, h in sizes:
            core = build_core(name, head_dim=d, num_heads=h).eval()
            q, k, v = (torch.randn(batch, h, n, d) for _ in range(3))
            if spec.shell is not None:  # hallucinated attention computes q, k for a fraction of heads
                hq = getattr(core, "num_computed", h)
                q, k = q[:, :hq], k[:, :hq]
            fc = count_flops(core, (q, k, v))
            expected = F.core_formula(name, batch, n, d, h)
            rows.append({"variant": name, "family": spec.family, "N": n, "d": d, "heads": h,
                         "counted_macs": fc.macs, "formula_macs": int(expected["macs"]),
                         "counted_elementwise": fc.elementwise, "formula_elementwise": int(expected["elementwise"]),
                         "exact": fc.macs == int(expected["macs"]) and fc.elementwise == int(expected["elementwise"]),
                         "unhandled": ",".join(sorted(fc.unhandled)) or "-"})
    return pd.DataFrame(rows)


def cost_curves(width: int, tokens: Iterable[int], window: int = 7, ratio: int = 4) -> pd.DataFrame:
    """MACs of one MSA, W-MSA and FFN layer of width ``width`` as the token count grows (long form)."""
    rows = []
    for n in tokens:
        for layer, expr in (("MSA", F.msa_macs()), ("W-MSA", F.wmsa_macs()), ("FFN", F.ffn_macs(ratio=ratio))):
            rows.append({"layer": layer, "N": n, "GMACs": F.evaluate(expr, N=n, C=width, M=window, r=ratio) / 1e9})
    return pd.DataFrame(rows)


def crossovers(width: int, ratio: int = 4) -> dict[str, float]:
    """Token counts where attention's cost overtakes the FFN's, symbolically then at ``width``.

    ``msa_vs_ffn``: whole MSA layer = FFN layer (N = 2C at ratio 4); ``scores_vs_ffn``: only the
    N^2 term (QK^T + AV) = FFN (N = 4C at ratio 4).
    """
    whole = F.crossover_tokens(F.msa_macs(), F.ffn_macs(ratio=ratio))
    scores = F.crossover_tokens(2 * F.N**2 * F.C, F.ffn_macs(ratio=ratio))
    return {"msa_vs_ffn": float(whole.subs(F.C, width)), "scores_vs_ffn": float(scores.subs(F.C, width)),
            "msa_vs_ffn_expr": str(whole), "scores_vs_ffn_expr": str(scores)}


def variant_traffic(tokens: Iterable[int], head_dim: int = 64, heads: int = 6, batch: int = 1,
                    variants: Iterable[str] | None = None) -> pd.DataFrame:
    """MACs, elementwise ops and bytes moved (fp32, eager) of every variant's core at each N.

    ``FLOPs per byte`` ((2 x MACs + elementwise) / bytes, as in the scaling chapter) is the arithmetic
    intensity: the higher, the more a variant can use a device's compute
    before its memory bandwidth limits it (see :mod:`vitspeed.traffic`).
    """
    from vitspeed.traffic import count_traffic

    rows = []
    torch.manual_seed(0)
    for name in variants or list_attentions():
        for n in tokens:
            core = build_core(name, head_dim=head_dim, num_heads=heads).eval()
            hq = getattr(core, "num_computed", heads)
            q, k = (torch.randn(batch, hq, n, head_dim) for _ in range(2))
            v = torch.randn(batch, heads, n, head_dim)
            fc = count_flops(core, (q, k, v))
            traffic = count_traffic(core, (q, k, v))
            rows.append({"variant": name, "N": n, "MMACs": round(fc.macs / 1e6, 3),
                         "M elementwise": round(fc.elementwise / 1e6, 3), "MB moved": round(traffic.total / 1e6, 3),
                         "FLOPs per byte": round((2 * fc.macs + fc.elementwise) / traffic.total, 3)})
    return pd.DataFrame(rows)


def save_counts(tables: dict[str, pd.DataFrame], env_record: dict, run_id: str | None = None) -> str:
    """Write the chapter's count tables (``kind`` -> rows, e.g. layer / variant / traffic) as one run of
    data/complexity and say where, in a sentence. The counts are deterministic, so a run id given again
    finds its rows there and nothing is written; a file of that run id holding another number of rows
    raises ValueError (counts of another configuration under the same id)."""
    from vitspeed.results import ResultsWriter

    writer = ResultsWriter("complexity", env_record, run_id=run_id or None)
    counted = [row for kind, table in tables.items() for row in table.assign(kind=kind).to_dict("records")]
    where = f"{writer.path.parent.name}/{writer.path.name} in the results folder"
    if not writer.resumed:
        writer.extend(counted)
        return f"wrote {len(counted)} rows to {where}"
    if len(writer.rows) == len(counted):
        return f"{where} already holds this run's {len(counted)} rows; nothing written"
    raise ValueError(f"{where} holds {len(writer.rows)} rows where this run counts {len(counted)}; "
                     "remove the file or give another run id")
