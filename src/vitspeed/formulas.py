"""Closed-form cost of transformer layers, derived symbolically with sympy.

Convention: MACs (multiply-accumulates; the vision literature's "FLOPs", fvcore's unit). Formulas
count the products (projections, QK^T, AV, FFN layers) exactly as :mod:`vitspeed.flops` counts them;
elementwise work (softmax, activations, feature maps) is a separate term, in ops, one per element.

Symbols: ``N`` tokens (h*w), ``C`` channels, ``h`` heads (head dim ``d = C/h``), ``M`` window side,
``r`` FFN expansion ratio, ``B`` batch.
"""
from __future__ import annotations

from typing import Any

import sympy as sp

from vitspeed.attention.registry import get_attention, list_attentions

__all__ = [
    "B", "N", "C", "h", "M", "r", "d",
    "msa_macs", "wmsa_macs", "ffn_macs", "projection_macs",
    "attention_module_formula", "core_formula", "crossover_tokens",
    "asymptotic_table", "evaluate", "registered_formulas",
]

B, N, C, h, M, r = sp.symbols("B N C h M r", positive=True, integer=True)
d = C / h


def projection_macs(tokens: sp.Expr = N, width: sp.Expr = C) -> sp.Expr:
    """MACs of the q, k, v and output projections: 4 N C^2 (biases are not MACs)."""
    return 3 * tokens * width**2 + tokens * width**2


def msa_macs(tokens: sp.Expr = N, width: sp.Expr = C) -> sp.Expr:
    """Global multi-head self-attention, Swin eq. (1): 4 N C^2 + 2 N^2 C (independent of heads)."""
    heads = sp.Symbol("h", positive=True, integer=True)
    head_dim = width / heads
    scores = heads * tokens * tokens * head_dim  # QK^T over all heads
    weighted = heads * tokens * tokens * head_dim  # A V over all heads
    return sp.simplify(projection_macs(tokens, width) + scores + weighted)


def wmsa_macs(tokens: sp.Expr = N, width: sp.Expr = C, window: sp.Expr = M) -> sp.Expr:
    """Window attention, Swin eq. (2): 4 N C^2 + 2 M^2 N C (N/M^2 windows of M^2 tokens)."""
    windows = tokens / window**2
    return sp.simplify(projection_macs(tokens, width) + windows * 2 * window**4 * width)


def ffn_macs(tokens: sp.Expr = N, width: sp.Expr = C, ratio: sp.Expr = r) -> sp.Expr:
    """Two-layer FFN C -> rC -> C: 2 r N C^2 (8 N C^2 at ratio 4)."""
    return 2 * ratio * tokens * width**2


def core_formula(variant: str, batch: Any = B, tokens: Any = N, head_dim: Any = None, heads: Any = h,
                 **options: Any) -> dict[str, sp.Expr]:
    """Cost of a registered variant's core alone on (B, heads, N, head_dim) tensors.

    Returns ``{"macs": ..., "elementwise": ...}`` with the variant's default options unless given.
    """
    spec = get_attention(variant)
    if spec.formula is None:
        raise ValueError(f"attention {variant!r} has no closed-form formula")
    merged = {**spec.options, **options}
    head_dim = d if head_dim is None else head_dim
    out = spec.formula(batch, tokens, head_dim, heads, **merged)
    return {k: sp.simplify(sp.sympify(v)) for k, v in out.items()}


def attention_module_formula(variant: str, batch: Any = B, tokens: Any = N, width: Any = C, heads: Any = h,
                             **options: Any) -> dict[str, sp.Expr]:
    """Cost of a whole attention module (projections + core), global attention, no bias.

    The default shell's projections cost 4 B N C^2 MACs; variants with their own shell
    (hallucinated attention) provide ``spec.formula`` for the core and ``module_formula`` on the core
    class for the projections they change.
    """
    spec = get_attention(variant)
    core = core_formula(variant, batch, tokens, width / heads, heads, **options)
    projections = getattr(spec.core, "projection_macs", None)
    proj = projections(batch, tokens, width, heads, **{**spec.options, **options}) if projections else \
        batch * projection_macs(tokens, width)
    return {"macs": sp.simplify(core["macs"] + proj), "elementwise": core["elementwise"]}


def crossover_tokens(lhs: sp.Expr, rhs: sp.Expr, var: sp.Symbol = N) -> sp.Expr:
    """The positive token count where ``lhs`` overtakes ``rhs`` (solve lhs = rhs for ``var``)."""
    roots = [s for s in sp.solve(sp.Eq(lhs, rhs), var) if s != 0]
    if not roots:
        raise ValueError(f"{lhs} never equals {rhs} for positive {var}")
    return sp.simplify(roots[0])


def asymptotic_table() -> list[dict[str, str]]:
    """The per-layer complexity table of Vaswani et al. (2017) that the seed slides reproduce."""
    n, dd, k, rr = sp.symbols("n d k r", positive=True)
    rows = [
        ("Self-attention", n**2 * dd, "O(1)", "O(1)"),
        ("Recurrent", n * dd**2, "O(n)", "O(n)"),
        ("Convolutional", k * n * dd**2, "O(1)", "O(log_k n)"),
        ("Self-attention (restricted)", rr * n * dd, "O(1)", "O(n/r)"),
    ]
    return [{"layer": name, "complexity per layer": f"O({sp.sstr(expr)})", "sequential ops": seq,
             "max path length": path} for name, expr, seq, path in rows]


def evaluate(expr: sp.Expr, **values: Any) -> int:
    """Substitute numbers for symbols (by name) and return an exact integer."""
    subs = {sp.Symbol(k, positive=True, integer=True): v for k, v in values.items()}
    result = sp.nsimplify(sp.sympify(expr).subs(subs))
    if not result.is_number:
        raise ValueError(f"{expr} still has free symbols {result.free_symbols} after substitution")
    if result != int(result):
        raise ValueError(f"{expr} is not an integer at {values}: {result}")
    return int(result)


def registered_formulas() -> dict[str, dict[str, sp.Expr]]:
    """Symbolic core formulas of every registered variant that has one (default options)."""
    return {name: core_formula(name) for name in list_attentions() if get_attention(name).formula is not None}
