"""Symbolic formulas: the Swin paper's equations and the crossover points."""
import pytest
import sympy as sp

from vitspeed import formulas as F


def test_msa_and_wmsa_match_swin_equations():
    N, C, M = F.N, F.C, F.M
    assert sp.simplify(F.msa_macs() - (4 * N * C**2 + 2 * N**2 * C)) == 0
    assert sp.simplify(F.wmsa_macs() - (4 * N * C**2 + 2 * M**2 * N * C)) == 0
    assert sp.simplify(F.ffn_macs(ratio=4) - 8 * N * C**2) == 0


def test_crossovers():
    assert sp.simplify(F.crossover_tokens(F.msa_macs(), F.ffn_macs(ratio=4)) - 2 * F.C) == 0
    assert sp.simplify(F.crossover_tokens(2 * F.N**2 * F.C, F.ffn_macs(ratio=4)) - 4 * F.C) == 0


def test_evaluate_gives_exact_integers_and_rejects_free_symbols():
    assert F.evaluate(F.msa_macs(), N=197, C=384) == 4 * 197 * 384**2 + 2 * 197**2 * 384
    with pytest.raises(ValueError, match="still has free symbols"):
        F.evaluate(F.msa_macs(), N=197)
    with pytest.raises(ValueError, match="is not an integer at"):
        F.evaluate(F.N / 2, N=3)


def test_registered_formulas_cover_exactly_the_variants_with_a_formula():
    from vitspeed.attention import get_attention, list_attentions

    found = F.registered_formulas()
    assert set(found) == {n for n in list_attentions() if get_attention(n).formula is not None}
    assert {"softmax", "linear_relu", "taylor2_compact"} <= set(found)
    assert all({"macs", "elementwise"} <= set(f) for f in found.values())
    # softmax's core: two N^2 products per head, B h N^2 2d = 2 B N^2 C with C = h d the width
    assert F.evaluate(found["softmax"]["macs"], B=1, N=4, C=16) == 2 * 4**2 * 16


def test_attention_module_formula_adds_projections_to_the_core():
    f = F.attention_module_formula("softmax", batch=1, tokens=197, width=384, heads=6)
    assert int(f["macs"]) == F.evaluate(F.msa_macs(), N=197, C=384)


def test_seed_complexity_table():
    rows = {r["layer"]: r["complexity per layer"] for r in F.asymptotic_table()}
    assert rows["Self-attention"] == "O(d*n**2)"
    assert rows["Recurrent"] == "O(d**2*n)"
