"""Chapter 5 study module: Taylor ablations' formulas, QT-ViT-1 counts, sweeps and approximations."""
from __future__ import annotations

import math

import pytest
import sympy as sp

from vitspeed.studies import taylor as T


pytestmark = pytest.mark.usefixtures("one_thread")


def test_labels_and_published_ablation():
    assert set(T.PUBLISHED_ABLATION) <= set(T.VARIANTS)
    assert T.PUBLISHED_ABLATION["random"] == 61.8 and T.PUBLISHED_ABLATION["full"] == 79.7
    with pytest.raises(ValueError, match="valid choices"):
        T.taylor_candidates(["full", "pool p=3"])
    # softmax variants are not linear kernels: left out of model candidates
    assert [c["label"] for c in T.taylor_candidates(["softmax", "full"], model=T.MODEL)] == ["full"]


def test_formula_table_feature_dimensions():
    table = T.formula_table(symbolic_options=True).set_index("label")
    d = sp.Symbol("d", positive=True)
    assert sp.simplify(table.loc["full", "features"] - ((d + 1) ** 2 + 1)) == 0
    assert sp.simplify(table.loc["compact", "features"] - (2 * d + 1)) == 0
    assert sp.simplify(table.loc["compact (code)", "features"] - (d + 1)) == 0
    assert sp.simplify(table.loc["pool p=2", "features"] - ((d / 2 + 1) ** 2 + 1)) == 0
    assert sp.simplify(table.loc["chunk c=4", "features"] - (d ** 2 / 4 + d + 1)) == 0
    assert table.loc["softmax", "features"] == "-"
    assert {"pool p", "chunk c"} <= set(table.index)


def test_qtvit_costs_counts_every_op():
    costs = T.qtvit_costs(img_size=64, labels=["full", "compact", "chunk c=2"]).set_index("label")
    assert list(costs.index) == ["full", "compact", "chunk c=2", "relu (QT-ViT shell)", "EfficientViT-B1 (timm)"]
    assert (costs.unhandled == "").all()
    assert costs.loc["full", "gmacs"] > costs.loc["chunk c=2", "gmacs"] > costs.loc["compact", "gmacs"]
    assert costs.loc["compact", "attn_gmacs"] < costs.loc["compact", "gmacs"]
    assert costs.loc["compact", "published_top1"] == 79.6 and math.isnan(costs.loc["relu (QT-ViT shell)", "published_top1"])


def test_sweep_rows_and_head_dim_check(results_dir):
    rows = T.run_taylor([16], [64], head_dims=[8], heads=2, labels=["softmax", "full", "compact", "chunk c=8"],
                        warmup=0, repeats=1, run_id="t")
    cores, models = rows[rows.kind == "core"], rows[rows.kind == "model"]
    assert list(cores.label) == ["softmax", "full", "compact", "chunk c=8"] and (cores.head_dim == 8).all()
    assert list(models.label) == ["full", "compact", "chunk c=8", "relu (QT-ViT shell)", "EfficientViT-B1 (timm)"]
    assert (rows.status == "ok").all() and (rows.median_ms > 0).all()
    c = cores.set_index("label")
    assert c.loc["full", "macs"] == 2 * 2 * 16 * ((8 + 1) ** 2 + 1) * (8 + 1)  # 2 h N D (d + 1)
    with pytest.raises(ValueError, match="not divisible"):
        T.run_taylor([16], [], head_dims=[6], labels=["chunk c=4"], run_id="bad")


def test_approximation_against_exact_kernel_and_softmax():
    table = T.approximation_table(labels=["full", "chunk c=2", "random", "compact"], tokens=36, head_dims=[8],
                                  heads=2, batch_size=1)
    vf = table[table.reference == "taylor2_full"].set_index("label")
    vs = table[table.reference == "softmax"].set_index("label")
    assert vf.loc["full", "rel_error"] < 1e-12
    assert vf.loc["chunk c=2", "scaled_error"] < vf.loc["compact", "scaled_error"]
    assert vf.loc["random", "negative_share"] > 0 and vf.loc["compact", "negative_share"] == 0
    assert 0 < vs.loc["full", "rel_error"] < 1
    assert vf.loc["random", "published_top1"] == 61.8
