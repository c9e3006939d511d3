"""vitspeed.studies.complexity: the closed forms checked against counts of real timm modules."""
import pytest

from vitspeed.attention import get_attention, list_attentions
from vitspeed.studies import complexity as CX

# hand counts at N = 196 tokens, C = 96 channels, 7x7 windows (Swin eq. (1)-(2), the FFN at ratio 4)
N, C = 196, 96
PROJECTIONS = 4 * N * C * C  # qkv (3 N C^2) and the output projection (N C^2): 7,225,344
MSA = PROJECTIONS + 2 * N * N * C  # + QK^T and AV: 14,601,216
WMSA = PROJECTIONS + 2 * 49 * N * C  # each token attends within its 49-token window: 9,069,312
FFN = 8 * N * C * C  # 14,450,688


def test_layer_check_counts_timm_modules_exactly_as_the_swin_equations():
    table = CX.layer_check([49, N], [C], heads=3)
    assert (table.exact).all() and (table.unhandled == "-").all()
    assert (table.counted_macs == table.formula_macs).all()
    at = table[table.N == N].set_index("layer")
    assert at.loc["MSA", "formula_macs"] == MSA == 14_601_216
    assert at.loc["W-MSA", "formula_macs"] == WMSA == 9_069_312
    assert at.loc["FFN", "formula_macs"] == FFN == 14_450_688
    # one 7x7 window is global attention: at N = 49, W-MSA costs what MSA costs
    one = table[table.N == 49].set_index("layer")
    assert one.loc["W-MSA", "counted_macs"] == one.loc["MSA", "counted_macs"]
    # a token count that is not a whole number of windows has no W-MSA row
    assert set(CX.layer_check([50], [C], heads=3).layer) == {"MSA", "FFN"}


def test_crossovers_are_2C_and_4C_at_ffn_ratio_4():
    found = CX.crossovers(C)
    assert found["msa_vs_ffn"] == 2 * C and found["scores_vs_ffn"] == 4 * C
    assert found["msa_vs_ffn_expr"] == "2*C" and found["scores_vs_ffn_expr"] == "4*C"
    # at the whole-layer crossover MSA and FFN cost the same
    curves = CX.cost_curves(C, [2 * C]).set_index("layer")
    assert curves.loc["MSA", "GMACs"] == pytest.approx(curves.loc["FFN", "GMACs"])


def test_cost_curves_in_gmacs():
    curves = CX.cost_curves(C, [N, 4 * N])
    at = curves[curves.N == N].set_index("layer")["GMACs"]
    assert at["MSA"] == pytest.approx(MSA / 1e9) and at["W-MSA"] == pytest.approx(WMSA / 1e9)
    assert at["FFN"] == pytest.approx(FFN / 1e9)
    assert sorted(set(curves.layer)) == ["FFN", "MSA", "W-MSA"] and len(curves) == 6


def test_variant_check_covers_every_variant_with_a_formula_and_all_agree():
    table = CX.variant_check([(16, 8, 2), (49, 16, 4)], batch=2)
    with_formula = {n for n in list_attentions() if get_attention(n).formula is not None}
    assert set(table.variant) == with_formula and len(table) == 2 * len(with_formula)
    assert table.exact.all(), table[~table.exact]
    assert (table.unhandled == "-").all()
    soft = table[(table.variant == "softmax") & (table.N == 16)].iloc[0]
    assert soft.counted_macs == 2 * 2 * 16 * 16 * 2 * 8  # B h N^2 (d + d)
    assert soft.counted_elementwise == 3 * 2 * 2 * 16 * 16  # softmax: 3 per score


def test_variant_traffic_intensity_is_flops_per_byte():
    table = CX.variant_traffic([256], head_dim=32, heads=2, variants=["softmax", "linear_relu"]).set_index("variant")
    for name in ("softmax", "linear_relu"):
        row = table.loc[name]  # the columns are rounded to three decimals
        flops = 2 * row["MMACs"] * 1e6 + row["M elementwise"] * 1e6
        assert row["FLOPs per byte"] == pytest.approx(flops / (row["MB moved"] * 1e6), rel=0.01)
    # fused softmax reads q, k, v and writes the output once: 4 x 2 heads x 256 x 32 float32 values
    assert table.loc["softmax", "MB moved"] == pytest.approx(4 * 2 * 256 * 32 * 4 / 1e6, abs=1e-3)
    assert table.loc["softmax", "MMACs"] == pytest.approx(2 * 256**2 * 2 * 32 / 1e6, abs=1e-3)
    assert table.loc["linear_relu", "MB moved"] > table.loc["softmax", "MB moved"]  # eager: every operator


def test_save_counts_writes_a_run_once_and_refuses_other_counts_under_its_id(results_dir):
    import pandas as pd

    env = {"device": "cpu", "device_type": "cpu", "cpu_model": "Test CPU", "threads": 2, "date": "2026-01-01"}
    tables = {"layer": pd.DataFrame({"N": [49, 196]}), "variant": pd.DataFrame({"N": [16]})}
    said = CX.save_counts(tables, env, run_id="c1")
    assert said.startswith("wrote 3 rows to complexity/") and said.endswith("__c1.csv in the results folder")
    [path] = (results_dir / "complexity").glob("*__c1.csv")
    before = path.read_bytes()
    assert "already holds this run's 3 rows; nothing written" in CX.save_counts(tables, env, run_id="c1")
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match="holds 3 rows where this run counts 1; remove the file or give another"):
        CX.save_counts({"layer": tables["layer"].head(1)}, env, run_id="c1")
    assert path.read_text().splitlines()[0].split(",")[-1] == "kind"  # each row says which table it came from
