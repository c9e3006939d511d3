"""Chapter 7 study: hybrids timed against their FLOPs, BatchNorm folding, rank correlation, pairs."""
import math

import pandas as pd
import pytest
import torch

from vitspeed.models import create_model, get_model_spec
from vitspeed.studies import hybrids as H


def test_every_listed_model_is_known_to_the_factory():
    for name in H.MODELS:
        get_model_spec(name)  # ValueError if unknown
    assert set(H.DEFAULT_MODELS) <= set(H.MODELS)
    assert {m for pair in H.PAIRS for m in pair} <= set(H.MODELS)


def test_published_table_holds_the_papers_numbers_and_nothing_invented():
    pub = H.published_table().set_index("model")
    assert list(pub.index) == list(H.MODELS)
    assert pub.loc["levit_128s", "published_gmacs"] == 0.305
    assert pub.loc["efficientvit_b1", "published_top1"] == 79.4
    assert pub.loc["swin_tiny_patch4_window7_224", "published_params_m"] == 29.0  # the paper, not the README
    assert pub.loc["flatten_swin_tiny", "published_top1"] == 82.1
    assert math.isnan(pub.loc["levit_256", "published_gmacs"]) and pub.loc["levit_256", "source"] == ""


def test_fold_conv_bn_keeps_outputs_and_removes_every_convnorm_batchnorm():
    torch.manual_seed(0)
    model = create_model("efficientvit_b1")
    for m in model.modules():  # non-trivial running statistics, so folding is really tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        before = model(x)
    assert H.count_batchnorms(model) > 0
    H.fold_conv_bn(model)
    assert H.count_batchnorms(model) == 0
    with torch.inference_mode():
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)


def test_spearman():
    assert H.spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert H.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert H.spearman([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(0.6)
    assert math.isnan(H.spearman([1, 2], [1, 2]))
    assert math.isnan(H.spearman([1, 2, 3], [5, 5, 5]))
    with pytest.raises(ValueError, match="equal length"):
        H.spearman([1, 2, 3], [1, 2])


def _results():
    rows = []
    for batch, ms in [(1, {"a": 1.0, "b": 4.0, "c": 2.0}), (8, {"a": 8.0, "b": 16.0, "c": 24.0})]:
        for model, gmacs in [("a", 1.0), ("b", 2.0), ("c", 4.0)]:
            rows.append({"hardware": "hw", "dtype": "float32", "threads": 2, "batch_size": batch, "model": model,
                         "label": model.upper(), "gmacs": gmacs, "median_ms": ms[model], "status": "ok",
                         "ms_per_image": ms[model] / batch, "ms_per_gmac": ms[model] / batch / gmacs})
    rows.append({**rows[0], "model": "d", "label": "D", "status": "oom", "median_ms": float("nan")})
    return pd.DataFrame(rows)


def test_rank_correlation_per_group_ignores_failed_rows():
    rho = H.rank_correlation(_results()).set_index("batch_size")
    assert rho.loc[1, "models"] == 3 and rho.loc[1, "spearman"] == pytest.approx(0.5)
    assert rho.loc[8, "spearman"] == pytest.approx(1.0)


def test_flops_fit_and_pairs():
    fit = H.add_flops_fit(_results()).set_index(["batch_size", "model"])
    assert "d" not in fit.index.get_level_values("model")
    # batch 1: ms per gmac a=1, b=2, c=0.5 -> median 1
    assert fit.loc[(1, "b"), "time_vs_flops"] == pytest.approx(2.0)
    assert fit.loc[(1, "c"), "time_vs_flops"] == pytest.approx(0.5)
    pairs = H.pair_ratios(_results(), pairs=[("c", "a"), ("a", "missing")])
    assert len(pairs) == 2  # one per batch size; the pair with an absent model is skipped
    p1 = pairs[pairs.batch_size == 1].iloc[0]
    assert p1.pair == "C / A" and p1.macs_ratio == 4.0 and p1.time_ratio == 2.0 and p1.time_per_macs == 0.5
    assert math.isnan(p1.noise)  # no IQRs, no spread
    with_iqr = _results().assign(iqr_ms=lambda d: 0.1 * d.median_ms)
    p1 = H.pair_ratios(with_iqr, pairs=[("c", "a")]).iloc[0]
    assert p1.noise == pytest.approx(0.1)  # half of 10% plus half of 10%


def test_unknown_model_is_a_value_error():
    with pytest.raises(ValueError, match="valid choices"):
        H.run_hybrids(models=["levit_128s", "resnet50"])


def test_run_writes_rows_with_cost_per_gmac(tmp_path, monkeypatch):
    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    df = H.run_hybrids(models=["levit_128s", "efficientvit_b1"], batch_sizes=[2], warmup=0, repeats=1,
                       run_id="t1")
    assert list(df.label) == ["LeViT-128S", "EfficientViT-B1"] and set(df.status) == {"ok"}
    assert list(df.family) == ["LeViT", "EfficientViT"] and df.bn_folded.all()
    no_bn = H.run_hybrids(models=["deit_tiny_patch16_224"], batch_sizes=[1], warmup=0, repeats=1, run_id="t2")
    assert not no_bn.bn_folded.any()  # LayerNorm only: nothing folded
    for col in ["median_ms", "iqr_ms", "throughput", "gmacs", "params_m", "peak_mem_mb", "ms_per_image",
                "ms_per_gmac"]:
        assert col in df, col
    assert (df.ms_per_image == df.median_ms / 2).all()
    assert df.ms_per_gmac.tolist() == pytest.approx((df.ms_per_image / df.gmacs).tolist())
    by = df.set_index("model")
    assert by.loc["levit_128s", "gmacs"] == pytest.approx(0.305, rel=0.01)  # published 305M
    assert by.loc["efficientvit_b1", "gmacs"] == pytest.approx(0.52, rel=0.01)  # published 0.52G, BN folded
    left = H.batchnorms_left(["levit_128s", "efficientvit_b1"]).set_index("model").batchnorms
    assert left.to_dict() == {"levit_128s": 0, "efficientvit_b1": 0}


def test_inversions_are_pairs_flops_order_one_way_and_latency_the_other_beyond_the_spread():
    inv = H.inversions(_results().assign(iqr_ms=lambda d: 0.1 * d.median_ms))
    assert inv[["batch_size", "more", "fewer"]].values.tolist() == [[1, "C", "B"]]
    assert inv.macs_ratio.iloc[0] == pytest.approx(2.0) and inv.time_ratio.iloc[0] == pytest.approx(0.5)
    # a reversal inside the spread is not an inversion
    wide = _results().assign(iqr_ms=lambda d: 2.0 * d.median_ms)
    assert H.inversions(wide).empty


def test_per_gmac_drop_is_the_share_of_the_small_batch_cost_per_gmac_removed():
    drop = H.per_gmac_drop(_results().assign(family="f"), 1, 8).set_index("model")
    # a: 1 ms per GMAC at batch 1, 1 at batch 8; b: 2 -> 1; c: 0.5 -> 0.75
    assert drop.loc["a", "drop_pct"] == pytest.approx(0.0)
    assert drop.loc["b", "drop_pct"] == pytest.approx(50.0)
    assert drop.loc["c", "drop_pct"] == pytest.approx(-50.0)
    assert "d" not in drop.index  # failed at batch 1, absent at batch 8


def test_swin_is_timed_with_fused_softmax_and_sources_are_named():
    cands = {c["model"]: c for c in H._candidates(["swin_tiny_patch4_window7_224", "flatten_swin_tiny"], True)}
    assert cands["swin_tiny_patch4_window7_224"]["attention"] == "softmax"
    assert "attention" not in cands["flatten_swin_tiny"]
    pub = H.published_table().set_index("model")
    assert pub.loc["deit_tiny_patch16_224", "cited"] == "PVT (Wang et al. 2021), Table 2"
    assert set(pub.source) - {""} <= set(H.SOURCES)


def test_flops_fit_extreme_names_a_runner_up_within_the_spread():
    rows = H.add_flops_fit(_results().assign(iqr_ms=lambda d: 0.1 * d.median_ms))
    one = rows[rows.batch_size == 1]  # ms per GMAC: a 1.0, b 2.0, c 0.5
    worst = H.flops_fit_extreme(one, worst=True)
    assert worst["label"] == "B" and worst["runner_up"] == "A" and not worst["tied"]
    assert worst["time_vs_flops"] == pytest.approx(2.0)
    best = H.flops_fit_extreme(one, worst=False)
    assert best["label"] == "C" and best["time_vs_flops"] == pytest.approx(0.5)
    noisy = H.add_flops_fit(_results().assign(iqr_ms=lambda d: 3.0 * d.median_ms))
    assert H.flops_fit_extreme(noisy[noisy.batch_size == 1])["tied"]


def test_swin_form_is_read_from_the_rows_and_the_swin_chapter(tmp_path, monkeypatch):
    rows = pd.DataFrame([{"model": "swin_tiny_patch4_window7_224", "attention": "stock"}])
    assert not H.swin_is_fused(rows)
    assert H.swin_is_fused(rows.assign(attention="softmax"))
    assert not H.swin_is_fused(rows.iloc[:0])
    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    assert math.isnan(H.swin_fused_vs_stock("cpu-x-2t", "float32"))  # nothing measured
    from vitspeed.results import ResultsWriter
    writer = ResultsWriter("swin_similarity", {"device": "cpu", "cpu": "x", "threads": 2}, run_id="r1")
    writer.extend([{"label": "stock", "dtype": "float32", "batch_size": 1, "median_ms": 50.0, "status": "ok"},
                   {"label": "softmax", "dtype": "float32", "batch_size": 1, "median_ms": 49.0, "status": "ok"}])
    hw = writer.hardware
    assert H.swin_fused_vs_stock(hw, "float32") == pytest.approx(0.98)
    assert math.isnan(H.swin_fused_vs_stock(hw, "bfloat16"))


def test_other_hardware_text_gives_each_other_hardwares_correlation_and_fastest_model():
    rows = []
    for hw, ms in [("here", [1.0, 2.0, 3.0]), ("gpu", [3.0, 1.0, 2.0])]:
        for b in (1, 64):
            for (label, gmacs), t in zip([("A", 1.0), ("B", 2.0), ("C", 3.0)], ms):
                rows.append({"hardware": hw, "dtype": "float32", "threads": 16, "batch_size": b, "status": "ok",
                             "label": label, "model": label.lower(), "gmacs": gmacs, "ms_per_image": t / b})
    df = pd.DataFrame(rows)
    text = H.other_hardware_text(df, "here")
    # on "gpu" the ranks of MACs (1, 2, 3) and time (3, 1, 2) correlate at -0.5; B has the lowest time
    assert text == ("Measured elsewhere: on gpu in float32, at batch 1 the Spearman correlation of MACs and latency "
                    "is -0.50 and the lowest median per image is B's; at batch 64 the Spearman correlation of MACs "
                    "and latency is -0.50 and the lowest median per image is B's.")
    assert "on here" not in text
    assert H.other_hardware_text(df[df.hardware == "here"], "here") == ""


def test_precision_ratio_text_contrasts_hybrids_with_deit_per_gpu_batch():
    rows = []
    for model, f32, bf16 in [("efficientvit_b1", 5.0, 10.0), ("qtvit_1", 7.0, 14.7), ("deit_small_patch16_224", 3.0, 3.3)]:
        for dt, t in [("float32", f32), ("bfloat16", bf16)]:
            rows.append({"hardware": "cuda-x", "batch_size": 1, "model": model, "dtype": dt, "ms_per_image": t,
                         "status": "ok"})
            rows.append({"hardware": "cpu-y", "batch_size": 1, "model": model, "dtype": dt, "ms_per_image": 1.0,
                         "status": "ok"})
    df = pd.DataFrame(rows)
    assert H.precision_ratio_text(df) == (
        "In the tables above, on cuda-x at batch 1, bfloat16 takes 2.00 to 2.10 times the float32 time per image "
        "for the EfficientViT and QT-ViT models and 1.10 to 1.10 times for the DeiTs.")
    assert H.precision_ratio_text(df[df.dtype == "float32"]) == ""
