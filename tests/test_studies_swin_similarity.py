"""Chapter 3 study: Swin-T variants timed against the fused base, seed ratios, timm's fused flag."""
import json
import math

import pandas as pd
import pytest

from vitspeed.studies import compare
from vitspeed.studies import swin_similarity as S
from vitspeed.timing import NonFiniteOutput


def test_seed_ratios_are_the_seed_numbers():
    seed = S.seed_ratios().set_index("label")
    assert seed.loc["stock", "seed_ratio"] == 1.0
    assert seed.loc["jaccard", "seed_ratio"] == pytest.approx(0.0096664 / 0.0091863)
    assert seed.loc["jaccard", "seed_ratio"] == pytest.approx(1.0523, abs=1e-4)
    assert seed.loc["euclidean", "seed_ratio"] == pytest.approx(0.9575, abs=1e-4)


def test_timm_swin_takes_the_explicit_path_unless_experimental_fused_attn_is_on():
    from timm.layers import config

    previous = config._USE_FUSED_ATTN
    try:
        config.set_fused_attn(True)  # the default: tested modules only
        state = S.timm_fused_attn()
        assert state["vit_fused"] is True and state["window_fused"] is False
        config.set_fused_attn(True, experimental=True)  # what TIMM_FUSED_ATTN=2 does
        assert S.timm_fused_attn()["window_fused"] is True
    finally:
        config._USE_FUSED_ATTN = previous


def _row(label, median, status="ok", batch=2):
    return {"label": label, "median_ms": median, "status": status, "batch_size": batch}


def test_add_ratios_against_fused_base_and_stock():
    rows = S.add_ratios([_row("stock", 30.0), _row("softmax", 20.0), _row("jaccard", 25.0),
                         _row("cosine", float("nan"), status="oom")])
    by = {r["label"]: r for r in rows}
    assert by["softmax"]["ratio_vs_softmax"] == 1.0
    assert by["jaccard"]["ratio_vs_softmax"] == pytest.approx(1.25)
    assert by["jaccard"]["ratio_vs_stock"] == pytest.approx(25 / 30)
    assert by["stock"]["ms_per_image"] == pytest.approx(15.0)
    assert math.isnan(by["cosine"]["ratio_vs_softmax"]) and math.isnan(by["cosine"]["ms_per_image"])
    assert by["jaccard"]["description"] == S.VARIANTS["jaccard"][1]
    # without the base in the group, the ratio is NaN rather than wrong
    (alone,) = S.add_ratios([_row("jaccard", 25.0)])
    assert math.isnan(alone["ratio_vs_softmax"])


def test_unknown_variant_is_a_value_error():
    with pytest.raises(ValueError, match="valid choices"):
        S.run_swin_similarity(variants=["softmax", "dot"])
    with pytest.raises(ValueError, match="no Swin variant"):
        S.run_swin_similarity(variants=[])


def test_ratio_table_pairs_ours_with_the_seed():
    results = pd.DataFrame([{**_row(v, m, batch=1), "hardware": "hw", "dtype": "float32", "threads": 2,
                             "p10_ms": m - 1.0, "p90_ms": m + 2.0}
                            for v, m in [("stock", 10.0), ("softmax", 8.0), ("jaccard", 12.0)]])
    results = pd.DataFrame(S.add_ratios(results.to_dict("records")))
    table = S.ratio_table(results, batch_size=1).set_index("label")
    assert table.loc["jaccard", "ours_vs_stock"] == pytest.approx(1.2)
    # whiskers: jaccard's own percentiles over the stock model's median
    assert table.loc["jaccard", "ours_p10_vs_stock"] == pytest.approx(1.1)
    assert table.loc["jaccard", "ours_p90_vs_stock"] == pytest.approx(1.4)
    assert table.loc["jaccard", "seed_ratio"] == pytest.approx(1.0523, abs=1e-4)
    assert math.isnan(table.loc["softmax", "seed_ratio"])


def test_compare_models_finite_records_a_nonfinite_candidate_and_times_the_rest(monkeypatch):
    calls = []

    def fake(cands, **kwargs):
        calls.append([c["label"] for c in cands])
        if any(c["label"] == "jaccard" for c in cands):
            raise NonFiniteOutput("output of jaccard contains 3 non-finite value(s) (NaN or inf); refusing", "jaccard")
        return [{"label": c["label"], "status": "ok", "median_ms": 1.0} for c in cands]

    monkeypatch.setattr(compare, "compare_models", fake)
    rows = compare.compare_models_finite([compare.candidate(v, model=S.SWIN) for v in ["softmax", "jaccard", "cosine"]],
                                         batch_size=4, dtype="float16")
    assert [r["label"] for r in rows] == ["softmax", "jaccard", "cosine"]
    assert rows[1]["status"] == "nonfinite" and rows[1]["batch_size"] == 4 and rows[1]["dtype"] == "float16"
    assert calls == [["softmax", "jaccard", "cosine"], ["softmax", "cosine"]]
    # any other error still propagates
    monkeypatch.setattr(compare, "compare_models", lambda c, **k: (_ for _ in ()).throw(ValueError("bad size")))
    with pytest.raises(ValueError, match="bad size"):
        compare.compare_models_finite([compare.candidate("softmax", model=S.SWIN)])


def test_run_writes_rows_with_ratios_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    # The pipeline on a small stand-in (DeiT-T at 112 px) keeps the test fast; Swin-T itself is built below.
    for v in ["softmax", "euclidean"]:
        monkeypatch.setitem(S.VARIANTS, v, ({"model": "deit_tiny_patch16_224", "attention": v}, S.VARIANTS[v][1]))
    kw = dict(img_size=112, batch_sizes=[2], variants=["softmax", "euclidean"], warmup=0, repeats=1, run_id="t1")
    df = S.run_swin_similarity(**kw)
    assert list(df.label) == ["softmax", "euclidean"]
    assert set(df.status) == {"ok"}
    for col in ["median_ms", "iqr_ms", "p10_ms", "p90_ms", "throughput", "gmacs", "g_elementwise", "params_m",
                "peak_mem_mb", "ratio_vs_softmax", "ratio_vs_stock", "ms_per_image", "description"]:
        assert col in df, col
    by = df.set_index("label")
    assert by.loc["softmax", "ratio_vs_softmax"] == 1.0
    assert by.loc["euclidean", "ratio_vs_softmax"] == pytest.approx(
        by.loc["euclidean", "median_ms"] / by.loc["softmax", "median_ms"])
    assert by.loc["euclidean", "ms_per_image"] == pytest.approx(by.loc["euclidean", "median_ms"] / 2)
    assert by.loc["softmax", "batch_size"] == 2 and by.loc["softmax", "img_size"] == 112
    assert by.loc["euclidean", "gmacs"] == by.loc["softmax", "gmacs"]  # same products
    assert by.loc["euclidean", "g_elementwise"] > by.loc["softmax", "g_elementwise"]
    assert math.isnan(by.loc["softmax", "ratio_vs_stock"])  # stock not in this run
    assert list((tmp_path / S.CHAPTER).glob("*__t1.csv"))
    again = S.run_swin_similarity(**kw)  # same run id: nothing re-measured
    assert len(again) == len(df)


def test_every_variant_builds_as_a_swin_tiny_with_the_named_attention():
    from vitspeed.models import create_model

    for label, (spec, _) in S.VARIANTS.items():
        model = create_model(spec["model"], attention=spec.get("attention"))
        attn = model.layers[2].blocks[0].attn
        if label == "stock":
            assert type(attn).__module__.startswith("timm")
        elif label == "flatten":
            assert model.layers[0].blocks[0].attn.variant == "focused" and attn.variant == "softmax"
        else:
            assert attn.variant == spec["attention"]


def test_a_run_over_several_dtypes_records_each(tmp_path, monkeypatch):
    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    monkeypatch.setitem(S.VARIANTS, "softmax", ({"model": "deit_tiny_patch16_224", "attention": "softmax"}, "s"))
    df = S.run_swin_similarity(img_size=64, batch_sizes=[1], dtypes=["float32", "bfloat16"], variants=["softmax"],
                               warmup=0, repeats=1, run_id="t2")
    assert list(df.dtype) == ["float32", "bfloat16"] and set(df.status) == {"ok"}
    (env,) = (tmp_path / S.CHAPTER).glob("*__t2.env.json")
    assert json.loads(env.read_text())["dtype"] == "float32,bfloat16"


def test_single_pass_spread_is_the_p10_to_p90_range_over_the_median_per_variant():
    rows = pd.DataFrame([{"label": "stock", "median_ms": 50.0, "p10_ms": 48.0, "p90_ms": 55.0, "status": "ok"},
                         {"label": "jaccard", "median_ms": 20.0, "p10_ms": 19.0, "p90_ms": 20.0, "status": "ok"},
                         {"label": "cosine", "median_ms": float("nan"), "p10_ms": float("nan"),
                          "p90_ms": float("nan"), "status": "oom"}])
    spread = S.single_pass_spread(rows)
    assert list(spread.index) == ["stock", "jaccard"]
    assert spread["stock"] == pytest.approx(14.0)
    assert spread["jaccard"] == pytest.approx(5.0)


def test_other_hardware_text_lists_each_variant_against_the_fused_base():
    import pandas as pd

    rows = [{"hardware": hw, "dtype": "float32", "batch_size": 1, "status": "ok", "label": label, "ratio_vs_softmax": r}
            for hw in ("here", "cuda-x") for label, r in [("softmax", 1.0), ("stock", 0.92), ("jaccard", 1.08)]]
    df = pd.DataFrame(rows)
    assert S.other_hardware_text(df, "here") == (
        "Measured elsewhere (each variant's time over the fused base's): on cuda-x in float32 at batch 1: "
        "stock 0.92, jaccard 1.08.")
    assert S.other_hardware_text(df[df.hardware == "here"], "here") == ""
