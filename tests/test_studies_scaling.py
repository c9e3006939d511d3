"""Tests of the scaling chapter's study module: tiny sizes, CPU, one thread."""
import math

import pandas as pd
import pytest

from vitspeed.attention import list_attentions
from vitspeed.results import read_results
from vitspeed.roofline import roofline
from vitspeed.studies import scaling as S


pytestmark = pytest.mark.usefixtures("one_thread", "frozen_gc")


def test_resolve_variants():
    assert S.resolve_variants("all") == list_attentions()
    assert S.resolve_variants(["linear_relu"]) == ["softmax", "linear_relu"]  # reference always first
    with pytest.raises(ValueError, match="valid choices"):
        S.resolve_variants(["no_such_attention"])


def test_model_tokens_and_bad_sizes():
    assert S.model_tokens(224) == 197 and S.model_tokens(512) == 1025
    with pytest.raises(ValueError, match="multiple of the patch size"):
        S.model_tokens(100)
    with pytest.raises(ValueError, match="perfect squares"):
        S.run_scaling(["focused"], [60], ["softmax"], [32])


def test_crossover_point_interpolates_log_log():
    n, status = S.crossover_point([100, 400], [2.0, 0.5])
    assert status == S.CROSSES
    assert n == pytest.approx(200.0)  # log-linear: halfway in log N where log r crosses 0
    n, status = S.crossover_point([64, 256, 1024], [3.0, 0.9, 1.2])
    assert status == S.SLOWER_FROM and 256 < n < 1024  # a dip below 1 that does not last
    n, status = S.crossover_point([64, 256, 1024], [3.0, 1.9, 1.2])
    assert status == S.NOT_IN_RANGE and math.isnan(n)
    n, status = S.crossover_point([64, 256, 1024], [1.5, 1.2, 0.8])
    assert status == S.CROSSES and 256 < n < 1024
    assert S.crossover_point([64, 256], [0.5, 0.4])[1] == S.FASTER_THROUGHOUT
    assert S.crossover_point([64], [0.5])[1] == S.TOO_FEW
    # noisy dip below 1 then back above: the last crossing counts
    n, status = S.crossover_point([16, 64, 256, 1024], [2.0, 0.9, 1.1, 0.5])
    assert status == S.CROSSES and 256 < n < 1024


def test_crossover_point_with_spread():
    noise = [0.05, 0.05, 0.05]
    # tied at 64 (2% inside 5%), clearly faster from 256: the crossing is at or below 256
    assert S.crossover_point([64, 256, 1024], [1.02, 0.8, 0.5], noise) == (256.0, S.FASTER_BY)
    # strictly slower before: interpolated as without spread
    n, status = S.crossover_point([64, 256, 1024], [1.5, 0.8, 0.5], noise)
    assert status == S.CROSSES and 64 < n < 256
    # faster at small N, slower at large N: the variant loses as tokens grow
    n, status = S.crossover_point([197, 577, 1025], [0.9, 1.2, 1.3], noise)
    assert status == S.SLOWER_FROM and 197 < n < 577
    assert S.crossover_point([197, 577, 1025], [0.9, 1.01, 1.3], noise) == (1025.0, S.SLOWER_FROM)
    assert S.crossover_point([64, 256, 1024], [0.99, 1.03, 0.98], noise)[1] == S.WITHIN_THROUGHOUT
    assert S.crossover_point([64, 256, 1024], [0.5, 0.8, 0.98], noise)[1] == S.WITHIN_AT_MAX
    assert S.crossover_point([64, 256, 1024], [1.5, 1.2, 1.1], noise)[1] == S.NOT_IN_RANGE
    assert S.crossover_point([64, 256], [0.9, 0.8], [0.01, 0.01])[1] == S.FASTER_THROUGHOUT
    # without spreads, the same ratios are read strictly
    assert S.crossover_point([64, 256, 1024], [1.02, 0.8, 0.5])[1] == S.CROSSES
    assert S.crossover_label(S.FASTER_BY, 256.0) == "by 256"
    assert S.crossover_label(S.CROSSES, 198.4) == "198"
    assert S.crossover_label(S.SLOWER_FROM, 600.0) == "slower from 600"
    assert S.crossover_label(S.NOT_IN_RANGE, math.nan) == S.NOT_IN_RANGE


def _row(attention, n, ms, iqr=0.0, dtype="float32"):
    return {"level": "core", "attention": attention, "tokens": n, "median_ms": ms, "iqr_ms": iqr, "status": "ok",
            "hardware": "h", "dtype": dtype, "batch_size": 1}


def test_crossovers_from_rows():
    rows = []
    for n, (ts, tl) in {64: (1.0, 4.0), 256: (4.0, 4.0 * 1.0), 1024: (16.0, 4.0)}.items():
        rows += [_row("softmax", n, ts), _row("linear_relu", n, tl)]
    rows.append({"level": "core", "attention": "taylor2_full", "tokens": 1024, "status": "capped",
                 "hardware": "h", "dtype": "float32", "batch_size": 1})
    out = S.crossovers(pd.DataFrame(rows), level="core", spread=False).set_index("attention")
    assert out.loc["linear_relu", "status"] == S.CROSSES
    assert out.loc["linear_relu", "crossover_tokens"] == pytest.approx(256.0)  # ratio exactly 1 at 256
    assert "taylor2_full" not in out.index  # capped rows are not measurements
    ratios = S.latency_ratios(pd.DataFrame(rows), level="core")
    assert ratios[ratios.attention == "softmax"].ratio.eq(1).all()


def test_crossovers_against_the_faster_softmax_form():
    # the explicit form is faster than fused SDPA at every N (as on a CPU in bfloat16): against fused
    # alone ReLU would cross at 128, against the faster form only at 512
    rows = []
    for n, (fused, explicit, relu) in {64: (2.0, 1.0, 4.0), 256: (8.0, 2.0, 4.0), 1024: (32.0, 8.0, 4.0)}.items():
        rows += [_row("softmax", n, fused), _row("softmax_explicit", n, explicit), _row("linear_relu", n, relu)]
    df = pd.DataFrame(rows)
    best = S.crossovers(df).set_index("attention")
    assert list(best.index) == ["linear_relu"]  # the reference forms are not listed
    assert best.loc["linear_relu", "reference_forms"] == "softmax_explicit"
    assert best.loc["linear_relu", "status"] == S.CROSSES
    assert best.loc["linear_relu", "crossover_tokens"] == pytest.approx(512.0)  # ratios 2, 0.5 around it
    fused = S.crossovers(df, reference="softmax").set_index("attention")
    assert fused.loc["linear_relu", "crossover_tokens"] == pytest.approx(128.0)
    assert fused.loc["softmax_explicit", "status"] == S.FASTER_THROUGHOUT
    ref = S.reference_latency(df[df.tokens == 64])
    assert ref.reference_form.tolist() == ["softmax_explicit"] and ref.reference_ms.tolist() == [1.0]
    with pytest.raises(ValueError, match="valid choices"):
        S.crossovers(df, reference="no_such_form")


def test_crossovers_count_a_ratio_inside_the_spread_as_a_tie():
    rows = []
    for n, (soft, relu, iqr) in {197: (10.0, 9.9, 1.0), 577: (40.0, 30.0, 1.0), 1025: (120.0, 60.0, 1.0)}.items():
        rows += [_row("softmax", n, soft, iqr), _row("linear_relu", n, relu, iqr)]
    out = S.crossovers(pd.DataFrame(rows)).iloc[0]
    assert out.status == S.FASTER_BY and out.crossover_tokens == 577  # 0.99 at 197 is inside a ~10% spread
    assert out.noise_max_n == pytest.approx(0.5 * (1 / 60 + 1 / 120))
    strict = S.crossovers(pd.DataFrame(rows), spread=False).iloc[0]
    assert strict.status == S.FASTER_THROUGHOUT


def test_crossovers_compare_rows_of_one_measurement_round_by_round():
    # a drifting host: each median's IQR is 20%, but in every round linear_relu is 5% faster than softmax
    drift = [10.0, 11.0, 12.0, 13.0, 14.0, 13.0, 12.0, 11.0, 10.0]
    text = lambda k: " ".join(f"{k * x:.6g}" for x in drift)  # noqa: E731
    rows = []
    for n, group in ((197, "a"), (577, "b")):
        rows += [{**_row("softmax", n, 12.0, 2.4), "samples_ms": text(1.0), "timing_group": group},
                 {**_row("linear_relu", n, 12.0 * 0.95, 2.4 * 0.95), "samples_ms": text(0.95), "timing_group": group}]
    df = pd.DataFrame(rows)
    ratios = S.latency_ratios(df)
    relu = ratios[ratios.attention == "linear_relu"]
    assert relu.noise.tolist() == pytest.approx([0.0, 0.0], abs=1e-5)
    assert relu.reference_timing_group.tolist() == ["a", "b"]
    assert S.crossovers(df).iloc[0].status == S.FASTER_THROUGHOUT
    # without the samples the unpaired rule calls the 5% a tie at both sizes
    bare = S.crossovers(df.drop(columns=["samples_ms", "timing_group"])).iloc[0]
    assert bare.status == S.WITHIN_THROUGHOUT and bare.noise_max_n == pytest.approx(0.2)
    # graph replays are compared by their own medians and IQRs, never with the eager samples
    g = df.assign(graph_median_ms=df.median_ms, graph_iqr_ms=df.iqr_ms)
    assert S.latency_ratios(g, graph=True).noise.min() > 0.15


def test_predicted_crossovers():
    pred = S.predicted_crossovers("all").set_index("attention")
    assert "softmax" not in pred.index and len(pred) == len(list_attentions()) - 1
    # linear_relu: 2 h N D (d + 1) with D = d vs 2 h N^2 d -> N = d + 1 = 65
    assert pred.loc["linear_relu", "macs_crossover"] == pytest.approx(65.0, rel=1e-6)
    # exact Kronecker Taylor kernel: D = (d + 1)^2 + 1 -> N = D (d + 1) / d
    assert pred.loc["taylor2_full", "macs_crossover"] == pytest.approx((65 ** 2 + 1) * 65 / 64, rel=1e-6)
    assert pred.loc["softmax_explicit", "macs_status"] == "same cost at every N"
    assert pred.loc["softmax_explicit", "total_status"] == "never"
    assert pred.loc["hallucinated", "macs_status"] == "cheaper at every N"


def test_run_scaling_writes_one_run_with_caps_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    kw = dict(core_variants=["linear_relu", "taylor2_full", "focused"], core_tokens=[16, 64],
              model_variants=["linear_relu"], img_sizes=[32, 48], batch_sizes=[1, 2], batch_img_size=32,
              warmup=0, repeats=1, caps={"taylor2_full": 20}, run_id="t1",
              model="deit_tiny_patch16_224", ceiling_sizes=(64, 1 << 16))
    df = S.run_scaling(**kw)
    ceil = df[df.level == "ceiling"]
    assert sorted(ceil.attention) == ["copy", "matmul"] and (ceil.dtype == "float32").all()
    assert ceil.set_index("attention").loc["matmul", "flops"] == 2 * 64 ** 3
    # every core row can be placed under the ceilings measured in the same run
    roof = roofline(df)
    assert len(roof) == len(df[(df.level == "core") & (df.status == "ok")])
    assert set(roof.bound) <= {"memory", "compute"} and roof.efficiency.gt(0).all()
    core = df[df.level == "core"]
    assert set(core.attention) == {"softmax", "linear_relu", "taylor2_full", "focused"}
    capped = df[df.status == "capped"]
    assert list(capped.attention) == ["taylor2_full"] and list(capped.tokens) == [64]
    assert capped.cap_tokens.iloc[0] == 20
    # the cap counts tokens x batch: 5 tokens x batch 2 = 10 <= 20 runs, so no model row is capped
    kw2 = {**kw, "core_variants": ["softmax"], "model_variants": ["taylor2_full"], "img_sizes": [32],
           "batch_sizes": [2, 8], "caps": {"taylor2_full": 12}, "run_id": "t2", "ceilings": False,
           "allocator_tokens": 16}
    df2 = S.run_scaling(**kw2)
    alloc = df2[df2.level == "allocator"]
    assert sorted(zip(alloc.allocator, alloc.attention)) == [
        ("glibc default", "softmax"), ("glibc default", "softmax_explicit"),
        ("kept heap", "softmax"), ("kept heap", "softmax_explicit")]
    assert (alloc.tokens == 16).all() and alloc.median_ms.gt(0).all()
    # after every other measurement, the kept heap before glibc's default (whose churn slows what follows)
    assert list(df2.level.iloc[-4:]) == ["allocator"] * 4
    assert list(alloc.allocator) == ["kept heap", "kept heap", "glibc default", "glibc default"]
    assert len(S.run_scaling(**kw2)) == len(df2)  # a rerun of the same run id resumes: nothing measured twice
    assert set(S.allocator_effect(df2.assign(hardware="h")).attention) == {"softmax", "softmax_explicit"}
    assert set(S.latency_ratios(df2.assign(hardware="h"), level="core").level) == {"core"}
    m2 = df2[(df2.level == "model") & (df2.attention == "taylor2_full")].set_index("batch_size")
    assert m2.loc[2, "status"] == "ok" and m2.loc[8, "status"] == "capped"
    model = df[df.level == "model"]
    # (32, b1), (48, b1) and (32, b2): the shared point (32, 1) is measured once
    assert sorted(zip(model.img_size, model.batch_size)) == [(32, 1)] * 2 + [(32, 2)] * 2 + [(48, 1)] * 2
    assert set(model.tokens) == {5, 10}
    for col in ["median_ms", "iqr_ms", "throughput", "peak_mem_mb", "family", "status"]:
        assert col in df.columns
    ok = df[df.status == "ok"]
    assert ok.median_ms.gt(0).all()
    assert len(S.run_scaling(**kw)) == len(df)  # resumed: nothing measured twice, ceilings included
    assert "ceiling" not in set(df2.level)
    stored = read_results("scaling", roots=[tmp_path])
    assert len(stored[stored.run_id == "t1"]) == len(df)


def test_out_of_memory_recorded_per_candidate(oom_on_call):
    oom_on_call(2)  # the second core (linear_relu) runs out of memory
    rows = S.core_group(["softmax", "linear_relu"], tokens=16, warmup=0, repeats=1)
    assert [r["status"] for r in rows] == ["ok", "oom"]
    assert rows[1]["level"] == "core" and "out of memory" in rows[1]["error"]


def test_nonfinite_core_is_recorded_and_others_timed(nonfinite_on):
    nonfinite_on("linear_relu")
    rows = S.core_group(["softmax", "linear_relu", "linear_elu"], tokens=16, warmup=0, repeats=1)
    assert [r["status"] for r in rows] == ["ok", "nonfinite", "ok"]
    assert rows[1]["level"] == "core" and rows[1]["family"] == "linear"


def test_allocator_effect_puts_both_settings_side_by_side():
    import pandas as pd

    rows = pd.DataFrame([
        {"level": "allocator", "hardware": "h", "dtype": "float32", "tokens": 64, "attention": a, "allocator": al,
         "median_ms": ms, "iqr_ms": 0.1, "status": "ok"}
        for a, al, ms in [("softmax", "glibc default", 3.0), ("softmax", "kept heap", 2.0),
                          ("softmax_explicit", "glibc default", 9.0), ("softmax_explicit", "kept heap", 3.0)]]
        + [{"level": "core", "hardware": "h", "dtype": "float32", "tokens": 64, "attention": "softmax",
            "median_ms": 1.0, "status": "ok"}])
    eff = S.allocator_effect(rows).set_index("attention")
    assert eff.loc["softmax", "slowdown"] == 1.5 and eff.loc["softmax_explicit", "slowdown"] == 3.0
    assert eff.loc["softmax_explicit", "default_ms"] == 9.0 and eff.loc["softmax_explicit", "kept_ms"] == 3.0
    assert S.allocator_effect(rows[rows.level == "core"]).empty
    assert eff.default_faults.isna().all()  # rows made before page faults were counted
    counted = rows.assign(page_faults_per_call=[12.0, 0.0, 4096.0, 0.5, 0.0])
    eff = S.allocator_effect(counted).set_index("attention")
    assert (eff.loc["softmax_explicit", "default_faults"], eff.loc["softmax_explicit", "kept_faults"]) == (4096.0, 0.5)


def test_allocator_finding_states_the_slowdowns_or_their_absence():
    rows = pd.DataFrame([
        {"level": "allocator", "dtype": "bfloat16", "tokens": n, "attention": a, "allocator": al, "median_ms": ms,
         "iqr_ms": 0.1, "status": "ok"}
        for n in (256, 4096)
        for a, al, ms in [("softmax", "glibc default", 3.0), ("softmax", "kept heap", 2.0),
                          ("softmax_explicit", "glibc default", 9.0 * n / 256), ("softmax_explicit", "kept heap", 3.0)]])
    text = S.allocator_finding(rows, "bfloat16", current="kept heap")
    assert text.startswith("At 4096 tokens in bfloat16, with glibc's default allocator the explicit softmax takes "
                           "144 ms per call (IQR 0.1) against 3 ms (IQR 0.1) with the kept heap (48.00 times by the "
                           "medians); fused SDPA 3 ms per call (IQR 0.1) against 2 ms (IQR 0.1) with the kept heap "
                           "(1.50 times by the medians).")
    # a default allocator whose samples scatter more than the slowdown: said to be within the spread
    wild = rows.assign(iqr_ms=[4.0, 0.1, 0.1, 0.1] * 2)
    assert "(1.50 times by the medians, within their spread)" in S.allocator_finding(wild, "bfloat16")
    assert text.endswith("used the kept heap setting (the cpu preset's).")
    assert S.allocator_finding(rows, "bfloat16", current="glibc default").endswith("glibc default setting.")
    # several precisions: one sentence each, in the order asked
    both = pd.concat([rows, rows.assign(dtype="float32", median_ms=rows.median_ms * 2)])
    text = S.allocator_finding(both, ["float32", "bfloat16"], current="kept heap")
    assert text.startswith("At 4096 tokens in float32, with glibc's default allocator the explicit softmax takes 288 ms")
    assert " At 4096 tokens in bfloat16, with glibc's default allocator the explicit softmax takes 144 ms" in text
    assert text.count("The other rows of this run") == 1
    assert "not run here" in S.allocator_finding(rows, "float32")
    counted = rows.assign(page_faults_per_call=[0.0, 0.0, 36864.0, 0.25] * 2)
    assert ("with the kept heap (48.00 times by the medians, 36,864 against 0 page faults per call, "
            "3.8 µs of extra time per extra fault)"
            in S.allocator_finding(counted, "bfloat16"))
    assert ("fused SDPA 3 ms per call (IQR 0.1) against 2 ms (IQR 0.1) with the kept heap (1.50 times by the "
            "medians, no page faults per call under either setting: the allocator cannot cause a gap here"
            in S.allocator_finding(counted, "bfloat16"))
    assert "not run here" in S.allocator_finding(rows.assign(level="core"), "bfloat16")


def test_crossovers_from_graph_replay_times():
    # eager batch-1 times on a GPU are launch-bound (the linear core runs more kernels); graph replay removes that
    rows = []
    for n, (soft, relu, g_soft, g_relu) in {256: (0.02, 0.08, 0.010, 0.012), 4096: (0.30, 0.10, 0.28, 0.05)}.items():
        rows += [{**_row("softmax", n, soft), "graph_median_ms": g_soft, "graph_iqr_ms": 0.0},
                 {**_row("linear_relu", n, relu), "graph_median_ms": g_relu, "graph_iqr_ms": 0.0}]
    df = pd.DataFrame(rows)
    eager = S.crossovers(df, reference="softmax").iloc[0]
    graph = S.crossovers(df, reference="softmax", graph=True).iloc[0]
    assert eager.status == graph.status == S.CROSSES
    assert graph.crossover_tokens < eager.crossover_tokens  # 1.2 -> 0.18 crosses earlier than 4 -> 0.33
    assert S.latency_ratios(df, graph=True).ratio.tolist() == pytest.approx([1.0, 1.2, 1.0, 0.05 / 0.28])
    assert S.crossovers(df.drop(columns=["graph_median_ms", "graph_iqr_ms"]), graph=True).empty


def test_level_comparison_says_where_model_and_core_crossovers_differ():
    def table(rows):
        return pd.DataFrame([{"attention": a, "crossover_tokens": n, "status": st} for a, n, st in rows])

    core = table([("linear_relu", 130.0, S.CROSSES), ("taylor2_compact", 1024.0, S.FASTER_BY),
                  ("linear_mean", 100.0, S.CROSSES), ("focused", math.nan, S.NOT_IN_RANGE)])
    model = table([("linear_relu", 250.0, S.CROSSES), ("taylor2_compact", 262.0, S.CROSSES),
                   ("linear_mean", 110.0, S.CROSSES), ("focused", 300.0, S.CROSSES)])
    text = S.level_comparison(core, model)
    assert text.startswith("Of the 3 variants whose crossover is placed at both levels, 1 crosses at about the same")
    assert "later in the whole model: linear_relu (250 in the model, 130 as a core)" in text
    # a core bound (at or below 1024) above the model's 262 cannot order the two
    assert "1 cannot be ordered, a bound at the measured sizes being too coarse (taylor2_compact)" in text
    model2 = table([("linear_relu", 577.0, S.FASTER_BY), ("linear_mean", 60.0, S.FASTER_BY)])
    text2 = S.level_comparison(core, model2)  # by 577 vs 130: unordered; by 60 vs 100: clearly earlier
    assert "earlier in the whole model than as a core: linear_mean (by 60 in the model, 100 as a core)" in text2
    assert "1 cannot be ordered" in text2 and "(linear_relu)" in text2
    assert "focused" not in text  # not placed at the core level
    assert S.level_comparison(core.iloc[3:], model).startswith("No variant's crossover is placed at both levels")


def test_gemm_shapes_time_the_models_token_count_and_one_fewer(one_thread):
    rows = S.gemm_shapes([32, 48], warmup=1, repeats=3)  # DeiT-S: 4 + 1 and 9 + 1 tokens
    assert sorted(r["size"] for r in rows) == [4, 5, 9, 10]
    for r in rows:
        assert r["level"] == "gemm" and r["status"] == "ok" and r["flops"] == 2 * r["size"] * 384 * 1536
        assert r["flops_per_s"] == pytest.approx(r["flops"] / (r["median_ms"] / 1e3))
    assert len({r["timing_group"] for r in rows}) == 1  # one interleaved measurement, compared round by round
    assert all(len(r["samples_ms"].split()) == r["n"] for r in rows)
    table = S.gemm_shape_table(pd.DataFrame(rows).assign(hardware="hw"))
    assert table.img_size.tolist() == [32, 48] and table.tokens.tolist() == [5, 10]


def test_gemm_shape_finding_names_slow_shapes_beyond_the_spread():
    table = pd.DataFrame([
        {"hardware": "hw", "dtype": "bfloat16", "img_size": 384, "tokens": 577, "rate_ratio": 0.75, "beyond_spread": True},
        {"hardware": "hw", "dtype": "bfloat16", "img_size": 512, "tokens": 1025, "rate_ratio": 0.8, "beyond_spread": False},
        {"hardware": "hw", "dtype": "float32", "img_size": 384, "tokens": 577, "rate_ratio": 0.98, "beyond_spread": False}])
    text = S.gemm_shape_finding(table, "hw")
    assert "bfloat16 at 384 px (577 tokens: 75% of the rate at 576)" in text and "1025" not in text
    assert S.gemm_shape_finding(table[table.dtype == "float32"], "hw").startswith("No image size and precision")
    assert "the lowest ratio, 80% in bfloat16 at 512 px, is within it" in S.gemm_shape_finding(table.iloc[1:], "hw")
    assert "not measured" in S.gemm_shape_finding(table, "other")


def test_hardware_contrast_text_sets_each_hardwares_crossover_beside_its_ridge():
    rows = []
    # linear_relu crosses between 64 and 256 tokens on "cpu", between 256 and 1024 on "gpu"
    for hw, times in {"cpu": {64: (1.0, 4.0), 256: (4.0, 3.0), 1024: (16.0, 4.0)},
                      "gpu": {64: (0.1, 0.4), 256: (0.1, 0.3), 1024: (0.2, 0.1), 4096: (2.0, 0.5)}}.items():
        for n, (soft, relu) in times.items():
            extra = {"graph_median_ms": soft / 2, "graph_iqr_ms": 0.0} if hw == "gpu" else {}
            g_relu = {"graph_median_ms": 0.05 if n == 64 else (relu / 2 if n >= 256 else relu),
                      "graph_iqr_ms": 0.0} if hw == "gpu" else {}
            counts = {"macs": 1e6, "elementwise": 0.0, "bytes_moved": 1e6}  # for the roofline's ridge
            rows += [{**_row("softmax", n, soft), "hardware": hw, **extra, **counts},
                     {**_row("linear_relu", n, relu), "hardware": hw, **g_relu, **counts}]
    for hw, flops, bw in [("cpu", 1e12, 1e11), ("gpu", 5e13, 4e12)]:
        rows += [{"level": "ceiling", "attention": "matmul", "status": "ok", "hardware": hw, "dtype": "float32",
                  "flops_per_s": flops, "batch_size": None},
                 {"level": "ceiling", "attention": "copy", "status": "ok", "hardware": hw, "dtype": "float32",
                  "bytes_per_s": bw, "batch_size": None}]
    df = pd.DataFrame(rows)
    text = S.hardware_contrast_text(df)
    assert text.startswith("In float32, linear_relu overtakes the faster softmax form on cpu (ridge 10.0 FLOPs per byte)")
    cpu_n = S.crossovers(df[df.hardware == "cpu"]).set_index("attention").crossover_tokens["linear_relu"]
    gpu_n = S.crossovers(df[df.hardware == "gpu"]).set_index("attention").crossover_tokens["linear_relu"]
    assert 64 < cpu_n < 256 < gpu_n < 1024
    assert f"on cpu (ridge 10.0 FLOPs per byte): at {cpu_n:.0f} tokens;" in text
    assert f"on gpu (ridge 12.5 FLOPs per byte): at {gpu_n:.0f} tokens (at " in text
    assert "tokens with launches removed by CUDA graphs)." in text
    # one hardware, or a precision only one hardware measured: nothing to contrast
    assert S.hardware_contrast_text(df[df.hardware == "gpu"]) == ""
    assert "bfloat16" not in text
