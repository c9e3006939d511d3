"""Conclusions: speedups over the faster softmax form, the fastest variant, the reference in words."""
import math

import pandas as pd
import pytest

from vitspeed.studies import conclusions as C


def _scaling_rows():
    rows = []
    # (dtype, img_size) -> median ms of fused softmax, explicit softmax, linear_relu
    times = {("float32", 224): (10.0, 9.0, 8.0), ("float32", 512): (40.0, 60.0, 20.0),
             ("bfloat16", 224): (12.0, 6.0, 7.0), ("bfloat16", 512): (50.0, 30.0, 25.0)}
    for (dtype, size), (fused, explicit, relu) in times.items():
        for attention, ms in [("softmax", fused), ("softmax_explicit", explicit), ("linear_relu", relu)]:
            rows.append({"level": "model", "hardware": "hw", "dtype": dtype, "img_size": size, "batch_size": 1,
                         "attention": attention, "family": "linear" if attention == "linear_relu" else "quadratic",
                         "tokens": (size // 16) ** 2 + 1, "median_ms": ms, "iqr_ms": 0.1, "status": "ok"})
    rows.append({**rows[0], "level": "core"})  # other levels are ignored
    return pd.DataFrame(rows)


def test_speedup_is_over_the_faster_softmax_form_at_each_point():
    speed = C.speedups(_scaling_rows()).set_index(["dtype", "img_size", "attention"])
    relu = speed.xs("linear_relu", level="attention")
    assert relu.loc[("float32", 224), "reference_form"] == "softmax_explicit"  # 9 ms < 10 ms
    assert relu.loc[("float32", 224), "speedup"] == pytest.approx(9.0 / 8.0)
    assert relu.loc[("float32", 512), "reference_form"] == "softmax"
    assert relu.loc[("float32", 512), "speedup"] == pytest.approx(2.0)


def test_fastest_per_point():
    best = C.fastest(C.speedups(_scaling_rows())).set_index(["dtype", "img_size"]).attention
    assert best[("float32", 512)] == "linear_relu" and best[("bfloat16", 224)] == "softmax_explicit"
    # within an accuracy budget only replacements compete: ReLU (79.4) even where softmax is faster
    good = C.fastest(C.speedups(_scaling_rows()), min_top1_drop=0.5).set_index(["dtype", "img_size"]).attention
    assert (good == "linear_relu").all()
    assert C.fastest(C.speedups(_scaling_rows()), min_top1_drop=0.1).empty  # nothing within 0.1 of 79.8


def test_reference_forms_in_words():
    text = C.reference_forms(C.speedups(_scaling_rows()), "hw")
    assert text == ("the explicit form at every measured point in bfloat16; "
                    "in float32 the explicit form at 224 px (batch 1); fused SDPA at 512 px (batch 1)")
    # the batch size is part of the point: fused softmax wins at 512 px batch 1 but not at batch 8
    rows = _scaling_rows()
    batch8 = rows[(rows.level == "model") & (rows.dtype == "float32") & (rows.img_size == 512)].assign(batch_size=8)
    batch8["median_ms"] = batch8.attention.map({"softmax": 90.0, "softmax_explicit": 80.0, "linear_relu": 70.0})
    text = C.reference_forms(C.speedups(pd.concat([rows, batch8], ignore_index=True)), "hw")
    assert text.endswith("in float32 the explicit form at 224 px (batch 1), 512 px (batch 8); "
                         "fused SDPA at 512 px (batch 1)")
    with pytest.raises(ValueError, match="valid choices: hw"):
        C.reference_forms(C.speedups(_scaling_rows()), "gpu")


def test_speedup_says_whether_it_exceeds_the_spread_of_the_two_medians():
    rows = _scaling_rows()
    rows.loc[(rows.dtype == "float32") & (rows.img_size == 224), "iqr_ms"] = 2.0  # 20-25 % spreads
    speed = C.speedups(rows).set_index(["dtype", "img_size", "attention"])
    noisy = speed.loc[("float32", 224, "linear_relu")]  # 9 / 8 = 1.125, inside 0.5 * (2/8 + 2/9)
    assert noisy.noise == pytest.approx(0.5 * (2 / 8 + 2 / 9)) and not noisy.clear
    assert bool(speed.loc[("float32", 512, "linear_relu")].clear)  # 2x with 0.1 ms spreads
    assert not bool(speed.loc[("float32", 512, "softmax")].clear)  # the reference against itself
    assert speed.tokens.dtype.kind == "i"


def _chapter_frames():
    base = {"hardware": "hw", "dtype": "float32", "img_size": 224, "batch_size": 1, "status": "ok"}
    return {
        "time_share": pd.DataFrame([
            {**base, "model": "deit_small_patch16_224", "component": c, "median_ms": 1.0, "iqr_ms": 0.1,
             "total_ms": 60.0, "total_iqr_ms": 1.2} for c in ("attention", "ffn", "rest")]),
        "hybrids": pd.DataFrame([
            {**base, "model": "deit_small_patch16_224", "label": "DeiT-S", "median_ms": 66.0, "iqr_ms": 2.0,
             "copy_gbps": 31.5},
            {**base, "model": "levit_128s", "label": "LeViT-128S", "median_ms": 9.0, "iqr_ms": 0.3},
            {**base, "model": "deit_small_patch16_224", "label": "DeiT-S", "batch_size": 8, "median_ms": 400.0,
             "iqr_ms": 5.0},
            # Swin-T through the fused shell is not timm's stock Swin-T: not the same model as chapter 3's
            {**base, "model": "swin_tiny_patch4_window7_224", "attention": "softmax", "label": "Swin-T",
             "median_ms": 70.0, "iqr_ms": 1.0}]).fillna({"attention": "stock"}),
        "scaling": pd.DataFrame([
            {**base, "level": "model", "attention": a, "median_ms": ms, "iqr_ms": 1.0, "cpu_pressure_pct": 12.5,
             "steal_pct": 0.5}
            for a, ms in (("softmax", 63.0), ("linear_relu", 58.0))]
            + [{**base, "level": "model", "attention": "softmax", "img_size": 384, "median_ms": 200.0, "iqr_ms": 3.0}]),
    }


def test_same_models_finds_one_stock_model_per_chapter():
    rows = C.same_models(_chapter_frames()).set_index("chapter")
    assert sorted(rows.index) == ["hybrids", "scaling", "time_share"]  # no LeViT, no batch 8, no 384 px
    assert (rows.model == "DeiT-S").all() and (rows.dtype == "float32").all() and (rows.hardware == "hw").all()
    assert "Swin-T" not in set(rows.model)
    assert rows.loc["time_share", "median_ms"] == 60.0 and rows.loc["time_share", "iqr_ms"] == 1.2  # whole model
    assert rows.loc["scaling", "median_ms"] == 63.0  # softmax, not the swapped attention
    # the Taylor chapter's EfficientViT-B1 keeps its BatchNorms (the hybrids chapter folds them): not the same model
    unfolded = pd.DataFrame([{"kind": "model", "label": "EfficientViT-B1 (timm)", "model": "efficientvit_b1",
                              "img_size": 224, "batch_size": 1, "median_ms": 20.0, "iqr_ms": 1.0, "hardware": "hw",
                              "dtype": "float32", "status": "ok"}])
    assert "taylor" not in set(C.same_models({**_chapter_frames(), "taylor": unfolded}).chapter)


def test_same_models_count_the_linear_kernels_chapters_two_eager_groups_apart():
    base = {"hardware": "hw", "dtype": "float32", "img_size": 224, "batch_size": 1, "status": "ok",
            "model": "deit_small_patch16_224", "iqr_ms": 1.0}
    lk = pd.DataFrame([{**base, "kind": "model", "label": "softmax", "median_ms": 59.0},
                       {**base, "kind": "model_compiled", "label": "softmax", "median_ms": 74.0},
                       {**base, "kind": "model_compiled", "label": "softmax (compiled)", "median_ms": 70.0}])
    rows = C.same_models({**_chapter_frames(), "linear_kernels": lk}).set_index("measurement")
    assert rows.loc["linear_kernels", "median_ms"] == 59.0
    assert rows.loc["linear_kernels (compile group)", "median_ms"] == 74.0  # eager, not the compiled twin
    assert (rows.loc[["linear_kernels", "linear_kernels (compile group)"], "chapter"] == "linear_kernels").all()
    agree = C.agreement(rows.reset_index()).iloc[0]
    assert (agree.chapters, agree.measurements) == (4, 5) and agree.highest_ms == 74.0


def test_agreement_reports_the_spread_between_chapters():
    agree = C.agreement(C.same_models(_chapter_frames())).iloc[0]
    assert agree.chapters == 3 and agree.measurements == 3 and agree.lowest_ms == 60.0 and agree.highest_ms == 66.0
    assert agree.spread_pct == pytest.approx(10.0)
    assert agree.median_iqr_pct == pytest.approx(2.0)  # median of 2.0, 3.03 and 1.59 %
    assert agree.max_cpu_pressure_pct == 12.5 and agree.max_steal_pct == 0.5  # chapters without the record: nan
    assert agree.min_copy_gbps == 31.5  # the one chapter that recorded it
    assert C.agreement(C.same_models({})).empty


def test_core_share_bounds_what_a_kernel_can_save():
    rows = pd.DataFrame([
        {"kind": "core", "label": "softmax", "heads": 6, "head_dim": 64, "tokens": 196, "median_ms": 0.5},
        {"kind": "core", "label": "softmax", "heads": 6, "head_dim": 64, "tokens": 784, "median_ms": 5.0},
        {"kind": "core", "label": "linear_relu", "heads": 6, "head_dim": 64, "tokens": 196, "median_ms": 0.2},
        {"kind": "model", "label": "softmax", "model": "deit_small_patch16_224", "img_size": 224, "median_ms": 60.0},
    ]).assign(hardware="h", dtype="float32", batch_size=1, status="ok")
    out = C.core_share(rows, "h", "float32")
    assert out["tokens"] == 196  # the core size nearest the model's 197 tokens
    assert out["share"] == pytest.approx(12 * 0.5 / 60.0)
    assert out["bound"] == pytest.approx(1 / (1 - 0.1))
    assert C.core_share(rows, "h", "bfloat16") is None


def test_faster_architecture_within_the_accuracy_budget():
    rows = pd.DataFrame([
        {"model": "deit_small_patch16_224", "median_ms": 60.0, "iqr_ms": 1.2, "gmacs": 4.6},
        {"model": "efficientvit_b1", "median_ms": 15.0, "iqr_ms": 0.3, "gmacs": 0.52},
        {"model": "levit_128s", "median_ms": 9.0, "iqr_ms": 0.2, "gmacs": 0.31},
    ]).assign(hardware="h", dtype="float32", img_size=224, batch_size=1, status="ok")
    top1 = {"deit_small_patch16_224": 79.9, "efficientvit_b1": 79.4, "levit_128s": 76.6}
    out = C.faster_architecture(rows, top1, "h", "float32", budget=0.5)
    assert out["model"] == "efficientvit_b1"  # LeViT-128S is faster but 3.3 points less accurate
    assert out["speedup"] == pytest.approx(4.0) and out["noise"] == pytest.approx(0.5 * (0.02 + 0.02))
    assert C.faster_architecture(rows, top1, "h", "float32", budget=0.1) is None
    assert C.faster_architecture(rows, top1, "other", "float32") is None


def test_tied_with_names_the_variants_within_the_spread_of_a_row():
    speed = pd.DataFrame([
        {"attention": a, "median_ms": ms, "iqr_ms": iqr, "hardware": "h", "dtype": dt, "img_size": 224, "batch_size": 1}
        for a, ms, iqr, dt in [("softmax", 10.0, 0.2, "float32"), ("linear_relu", 8.0, 0.2, "float32"),
                               ("linear_mean", 8.1, 0.2, "float32"), ("focused", 9.5, 0.2, "float32"),
                               ("linear_mean", 5.0, 0.1, "bfloat16")]])
    best = speed.iloc[1]  # a Series: its dtype attribute must not be taken for the dtype column
    assert C.tied_with(speed, best) == ["linear_mean"]  # not softmax (a reference form), not bfloat16's row
    assert C.tied_with(speed, speed.iloc[3]) == []
    assert C.tied_with(speed, {**best.to_dict(), "attention": "absent"}) == []


def test_ties_in_speedups_are_decided_round_by_round():
    # Two variants timed in one group: their medians differ by 5%, inside the unpaired spread (wide
    # IQRs from a drifting host), but every round has the same 5% gap, so round by round they differ.
    rows = _scaling_rows()
    rows = rows[(rows.level == "model") & (rows.dtype == "float32") & (rows.img_size == 224)].copy()
    drift = [1.0, 1.3, 0.8, 1.2, 0.9, 1.1, 1.0]
    extra = rows[rows.attention == "linear_relu"].assign(attention="linear_mean", median_ms=8.4)
    rows = pd.concat([rows, extra], ignore_index=True)
    rows["iqr_ms"] = 0.3 * rows.median_ms
    rows["timing_group"] = "g1"
    rows["samples_ms"] = [" ".join(f"{ms * f:.4f}" for f in drift) for ms in rows.median_ms]
    speed = C.speedups(rows)
    assert {"samples_ms", "timing_group"} <= set(speed.columns)
    relu = speed[speed.attention == "linear_relu"].iloc[0]
    assert C.tied_with(speed, relu) == []
    assert C.tied_with(speed.drop(columns=["samples_ms", "timing_group"]), relu) == ["linear_mean"]
    assert {"samples_ms", "timing_group"} <= set(C.swin_sets(pd.DataFrame([
        {"hardware": "h", "dtype": "float32", "batch_size": 1, "label": "stock", "median_ms": 1.0, "iqr_ms": 0.1,
         "samples_ms": "1 1 1", "timing_group": "g", "ratio_vs_softmax": 1.0, "status": "ok"}])).columns)


def test_hmhsa_in_two_chapters_pairs_each_chapters_own_reference():
    common = {"hardware": "h", "dtype": "float32", "img_size": 224, "batch_size": 1, "status": "ok"}
    red = pd.DataFrame([{**common, "base": "deit_small_patch16_224", "variant": "stock", "median_ms": 60.0, "iqr_ms": 0.6},
                        {**common, "base": "deit_small_patch16_224", "variant": "hmhsa", "median_ms": 57.0, "iqr_ms": 0.6},
                        {**common, "base": "deit_tiny_patch16_224", "variant": "hmhsa", "median_ms": 10.0, "iqr_ms": 0.1}])
    sca = pd.DataFrame([{**common, "level": "model", "attention": "softmax", "median_ms": 66.0, "iqr_ms": 3.3},
                        {**common, "level": "model", "attention": "hallucinated", "median_ms": 65.0, "iqr_ms": 3.3},
                        {**common, "level": "core", "attention": "hallucinated", "median_ms": 1.0, "iqr_ms": 0.1}])
    out = C.hmhsa_in_two_chapters(red, sca, "h").set_index("chapter")
    assert out.loc["redundancy", "speedup"] == pytest.approx(60 / 57) and bool(out.loc["redundancy", "clear"])
    assert out.loc["scaling", "speedup"] == pytest.approx(66 / 65) and not out.loc["scaling", "clear"]
    assert C.hmhsa_in_two_chapters(red, sca.iloc[:0], "h").chapter.tolist() == ["redundancy"]
    assert C.hmhsa_in_two_chapters(red, sca, "other").empty


def test_bare_kernel_caveat_quotes_flattens_deit_t_ablation():
    text = C.bare_kernel_caveat()
    assert "1.7 points below softmax (70.5 against 72.2)" in text
    assert "0.4 below (71.8)" in text and "(74.1)" in text and "EfficientViT-B1" in text


def test_within_budget_reads_qtvit_table_2():
    assert C.within_budget(0.5) == {"linear_relu", "taylor2_compact"}  # 79.4 and 79.6 against 79.8
    assert "linear_mean" in C.within_budget(1.0) and "softmax" not in C.within_budget(5.0)
    assert "focused" not in C.within_budget(5.0)  # not in Table 2: another setting


def test_precision_answer_names_the_fastest_and_the_fastest_within_budget():
    def row(size, att, speedup, clear):
        return {"hardware": "hw", "dtype": "bfloat16", "img_size": size, "attention": att, "speedup": speedup,
                "clear": clear}

    best = pd.DataFrame([row(224, "hallucinated", 1.04, True), row(512, "linear_relu", 1.53, True)])
    good = pd.DataFrame([row(224, "linear_relu", 1.0, False), row(512, "linear_relu", 1.53, True)])
    text = C.precision_answer(best, good, "hw", "bfloat16")
    assert text.startswith("In bfloat16 on hw, at 224 px the fastest variant is hallucinated, 1.04x the best softmax "
                           "(beyond the spread of the two medians), and the fastest within the accuracy budget is "
                           "linear_relu, 1.00x (within the spread of the two medians, so not a clear win);")
    assert text.endswith("at 512 px linear_relu is both the fastest variant and the fastest within the accuracy "
                         "budget, 1.53x the best softmax (beyond the spread of the two medians).")
    assert "within the accuracy budget" not in C.precision_answer(best, good.iloc[:0], "hw", "bfloat16")
    with pytest.raises(ValueError, match="valid choices: hw bfloat16"):
        C.precision_answer(best, good, "hw", "float32")


def test_pairing_counts_what_comparing_round_by_round_decides():
    drift = [10.0, 11.0, 12.0, 13.0, 14.0, 13.0, 12.0, 11.0]
    text = lambda k: " ".join(f"{k * x:.6g}" for x in drift)  # noqa: E731

    def row(label, k, group, status="ok"):
        return {"label": label, "hardware": "cpu-x", "median_ms": 12.0 * k, "iqr_ms": 2.0 * k,
                "samples_ms": text(k), "timing_group": group, "status": status}

    # group g1: b is 3% faster in every round (the unpaired rule, 16.7%, cannot see it); group g2: a tie
    rows = pd.DataFrame([row("a", 1.0, "g1"), row("b", 1 / 1.03, "g1"), row("c", 1.0, "g2"), row("d", 1.0, "g2"),
                         row("e", 0.5, "g2", status="oom")])
    out = C.pairing({"scaling": rows, "old": rows.drop(columns=["samples_ms", "timing_group"])})
    assert out.chapter.tolist() == ["scaling"]  # a run without samples has nothing to pair
    r = out.iloc[0]
    assert r.pairs == 2  # a-b and c-d: rows of different groups, and failed rows, are never paired
    assert r.unpaired_pct == pytest.approx(100 * 0.5 * (1 / 6 + 1 / 6), rel=1e-3)
    assert r.paired_pct == pytest.approx(0.0, abs=1e-3)
    assert r.narrower_pct == 100.0 and r.ratio_wider_pct == 0.0 and r.only_paired == 1 and r.only_unpaired == 0
    # medians that disagree with the rounds: the round ratio is as tight, the widening makes the rule wider
    odd = rows.copy()
    odd.loc[0, "median_ms"] = odd.loc[1, "median_ms"] * 0.99
    odd.loc[[0, 1], "iqr_ms"] = 0.1  # unpaired: under 1%; paired: 0 for the rounds, plus their 3.9% gap
    r = C.pairing({"scaling": odd}).iloc[0]
    assert r.narrower_pct == 50.0 and r.ratio_wider_pct == 0.0 and r.only_paired == 0


def test_pairing_text_gives_the_range_and_the_counts():
    pairs = pd.DataFrame([
        {"chapter": "scaling", "hardware": "h", "pairs": 100, "unpaired_pct": 5.0, "paired_pct": 3.0,
         "narrower_pct": 65.0, "ratio_wider_pct": 8.0, "only_paired": 20, "only_unpaired": 3},
        {"chapter": "hybrids", "hardware": "h", "pairs": 50, "unpaired_pct": 6.0, "paired_pct": 4.0,
         "narrower_pct": 92.0, "ratio_wider_pct": 1.0, "only_paired": 5, "only_unpaired": 0}])
    text = C.pairing_text(pairs)
    assert text.startswith("On this machine the paired spread was the narrower for 65% of the pairs (scaling) "
                           "to 92% (hybrids). Over all 150 pairs the paired rule decided 25 comparisons")
    assert "the unpaired rule 3 that the paired one does not" in text and "at most 8% of a chapter's pairs" in text
    assert C.PAIRED_SINCE in C.pairing_text(pairs.iloc[0:0])


def _condition_rows(copies, steal=0.0, groups=True):
    rows = []
    for i, copy in enumerate(copies):
        for label in ("a", "b"):  # two rows per measured group
            rows.append({"hardware": "h", "label": label, "steal_pct": steal, "cpu_pressure_pct": 1.0,
                         "copy_gbps": copy, **({"timing_group": f"g{i}"} if groups else {})})
    return pd.DataFrame(rows)


def test_conditions_flag_groups_off_their_runs_median_and_slow_runs():
    frames = {"quiet": _condition_rows([40.0, 41.0, 39.0, 40.0]),
              "odd": _condition_rows([40.0, 40.0, 20.0, 40.0]),  # one group at half the run's bandwidth
              "slow": _condition_rows([17.0, 17.0, 17.0]),  # the whole run on a slow memory system
              "busy": _condition_rows([40.0, 40.0], steal=12.0),
              "old": pd.DataFrame([{"hardware": "h", "median_ms": 1.0}])}  # no readings: left out
    table = C.conditions(frames).set_index("chapter")
    assert list(table.index) == ["quiet", "odd", "slow", "busy"]
    assert table.loc["quiet", "groups"] == 4 and table.loc["quiet", "flagged"] == 0
    assert table.loc["odd", "flagged"] == 1 and table.loc["odd", "copy_gbps_min"] == 20.0
    assert table.loc["busy", "flagged"] == 2 and table.loc["busy", "max_steal_pct"] == 12.0
    assert table.loc["slow", "flagged"] == 0 and table.loc["slow", "copy_vs_hardware"] < 0.5
    text = C.conditions_text(table.reset_index())
    assert "1 of 4 groups in odd" in text and "2 of 2 groups in busy" in text
    assert "the slow run's memory copies ran at 17.0 GB/s" in text and "quiet" not in text
    assert C.conditions(frames={"x": _condition_rows([40.0, 30.0], groups=False)}).groups.iloc[0] == 4
    assert C.conditions_text(C.conditions({})).startswith("No run on this machine")


def test_runs_agree_when_the_gap_is_within_both_spreads():
    two = pd.DataFrame({"chapter": ["redundancy", "scaling"], "speedup": [1.059, 1.023], "noise": [0.024, 0.067]})
    gap, agree = C.runs_agree(two)
    assert gap == pytest.approx(1.059 / 1.023 - 1) and agree
    assert C.runs_agree(two.assign(noise=[0.01, 0.01])) == (pytest.approx(gap), False)
    with pytest.raises(ValueError, match="exactly two"):
        C.runs_agree(two.iloc[:1])


def test_swin_sets_rank_the_seeds_sets_within_each_batch_and_drop_the_rest():
    def row(label, batch, ms, status="ok"):
        return {"hardware": "h", "dtype": "float32", "batch_size": batch, "label": label, "median_ms": ms,
                "iqr_ms": 0.1, "ratio_vs_softmax": float("nan"), "status": status}

    swin = pd.DataFrame([row("softmax", 1, 10.0), row("jaccard", 1, 12.0), row("cosine", 1, 9.0),
                         row("stock", 1, 1.0),  # not one of the seed's sets
                         row("euclidean", 1, 5.0, status="oom"),  # not measured
                         row("softmax", 8, 50.0), row("jaccard", 8, 40.0)])
    sets = C.swin_sets(swin)
    assert list(zip(sets.batch_size, sets.label, sets["rank"])) == [
        (1, "cosine", 1), (1, "softmax", 2), (1, "jaccard", 3), (8, "jaccard", 1), (8, "softmax", 2)]


def test_ok_rows_keep_measured_and_unlabelled_rows_only():
    df = pd.DataFrame({"status": ["ok", "oom", None, "capped", "nonfinite"], "x": range(5)})
    assert list(C.ok_rows(df).x) == [0, 2]
    plain = pd.DataFrame({"x": [1, 2]})
    assert C.ok_rows(plain) is plain  # no status column: every row was measured


def test_published_accuracy_has_one_row_per_variant_with_its_source():
    table = C.published_accuracy()
    assert list(table.attention) == list(C.PUBLISHED_TOP1)
    assert table.attention.is_unique and (table.source != "").all()
    assert set(table.columns) == {"attention", "published_top1", "setting", "source"}
    assert ((table.published_top1 > 50) & (table.published_top1 < 100)).all()  # ImageNet-1k top-1, percent


def test_spread_words():
    assert C.spread_words(True) == "beyond the spread of the two medians"
    assert C.spread_words(False) == "within the spread of the two medians, so not a clear win"


def test_conditions_keep_gpu_runs_which_read_no_copy_bandwidth():
    gpu = pd.DataFrame([{"hardware": "cuda-h200", "timing_group": g, "steal_pct": s, "cpu_pressure_pct": 1.0}
                        for g, s in (("a", 0.2), ("b", 11.0), ("c", 0.1))])
    table = C.conditions({"scaling": gpu, "cpu": _condition_rows([40.0, 41.0])})
    row = table[table.hardware == "cuda-h200"].iloc[0]
    assert row.groups == 3 and row.flagged == 1 and row.max_steal_pct == 11.0  # only the busy group
    assert math.isnan(row.copy_gbps_min) and math.isnan(row.copy_vs_hardware)
    text = C.conditions_text(table[table.hardware == "cuda-h200"])
    assert "1 of 3 groups in scaling" in text and "read around CPU runs only" in text and "nan" not in text


def test_the_narrative_describes_the_hardware_of_this_execution():
    slugs = ["cuda-nvidia-h200", "cpu-amd-epyc-2t", "cpu-amd-epyc-2t"]
    assert C.narrative_hardware(slugs, "cpu") == "cpu-amd-epyc-2t"
    assert C.narrative_hardware(slugs, "cuda:0") == "cuda-nvidia-h200"
    assert C.narrative_hardware(["cpu-amd-epyc-2t"], "cuda") == "cpu-amd-epyc-2t"  # no GPU run: the one there is
    with pytest.raises(ValueError, match="no hardware"):
        C.narrative_hardware([], "cpu")


def test_other_hardware_text_answers_for_every_other_hardware_and_precision():
    def row(hw, dt, size, att, x):
        return {"hardware": hw, "dtype": dt, "img_size": size, "batch_size": 1, "attention": att, "speedup": x,
                "clear": True}

    best = pd.DataFrame([row("cpu", "float32", 224, "linear_relu", 1.1), row("cpu", "float32", 1024, "focused", 2.0),
                         row("gpu", "float32", 224, "efficient", 1.3), row("gpu", "bfloat16", 224, "taylor1", 1.2)])
    good = best.iloc[:0]
    text = C.other_hardware_text(best, good, "cpu")
    assert text.startswith("In bfloat16 on gpu, at 224 px the fastest variant is taylor1, 1.20x")
    assert "In float32 on gpu, at 224 px the fastest variant is efficient, 1.30x" in text and "linear_relu" not in text
    assert "the only hardware in data/" in C.other_hardware_text(best[best.hardware == "cpu"], good, "cpu")


def test_scope_text_says_what_the_conclusions_cover():
    assert C.scope_text(["cpu-a", "cpu-a"], "cpu-a") == "These conclusions hold for cpu-a, the only hardware in data/ so far."
    both = C.scope_text(["cpu-a", "cuda-b"], "cuda-b")
    assert both.startswith("The bullets above describe cuda-b, this execution's device") and "all 2 hardware" in both


def test_conditions_text_of_quiet_runs_without_copy_readings_claims_nothing_about_copies():
    gpu = pd.DataFrame([{"hardware": "cuda-h200", "timing_group": "a", "steal_pct": 0.1, "cpu_pressure_pct": 1.0}])
    text = C.conditions_text(C.conditions({"scaling": gpu}))
    assert "the warning rule flags no group." in text and "left its run's median" not in text


def test_agreement_elsewhere_text_names_every_other_hardware_and_precision():
    agree = pd.DataFrame([
        dict(model="DeiT-S", hardware="cpu-a", dtype="float32", chapters=5, lowest_ms=56.5, highest_ms=67.8,
             spread_pct=20.0, median_iqr_pct=4.4),
        dict(model="DeiT-S", hardware="cuda-b", dtype="float32", chapters=6, lowest_ms=3.2, highest_ms=7.72,
             spread_pct=141.25, median_iqr_pct=9.8),
        dict(model="DeiT-S", hardware="cuda-b", dtype="bfloat16", chapters=1, lowest_ms=3.5, highest_ms=3.5,
             spread_pct=0.0, median_iqr_pct=4.0),
        dict(model="DeiT-T", hardware="cuda-b", dtype="float32", chapters=3, lowest_ms=3.3, highest_ms=6.0,
             spread_pct=82.0, median_iqr_pct=3.5),
    ])
    assert C.agreement_elsewhere_text(agree, "cpu-a", "float32") == (
        "Elsewhere the same DeiT-S's medians run on cuda-b in float32 from 3.20 to 7.72 ms over 6 chapters "
        "(141.2% apart; one run's IQR typically 9.8%). On a GPU at batch 1 a pass of these models is bound by "
        "launching its kernels (the kernel breakdowns of the scaling and hybrids chapters), and that cost moved "
        "between the chapters' runs: there too, compare ratios within one run, not absolute times across chapters.")
    assert C.agreement_elsewhere_text(agree, "cuda-b", "float32") == (
        "Elsewhere the same DeiT-S's medians run on cpu-a in float32 from 56.50 to 67.80 ms over 5 chapters "
        "(20.0% apart; one run's IQR typically 4.4%).")
    assert C.agreement_elsewhere_text(agree.iloc[:1], "cpu-a", "float32") == ""
