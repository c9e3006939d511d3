"""Chapter 4 study module: kernel sweeps write complete rows, approximation diagnostics are right."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from vitspeed.studies import linear_kernels as L
from vitspeed.studies.compare import approximation, candidate
from vitspeed.studies.wording import beyond_spread

SMALL = dict(tokens=36, head_dim=8, heads=2, batch_size=1, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_candidates_cover_table_2_and_reject_unknown_names():
    labels = [c["label"] for c in L.kernel_candidates()]
    assert labels == list(L.VARIANTS)
    assert set(L.PUBLISHED_TOP1) - {"softmax"} <= set(L.KERNELS)
    assert all(c["model"] == "deit_tiny_patch16_224" for c in L.kernel_candidates(["softmax"], model="deit_tiny_patch16_224"))
    with pytest.raises(ValueError, match="valid choices"):
        L.kernel_candidates(["linear_relu", "nope"])


def test_sweep_writes_core_and_model_rows_and_resumes(results_dir):
    kw = dict(names=["softmax", "linear_relu", "linear_mean"], model_names=["softmax", "linear_relu"], img_sizes=[144],
              head_dim=8, heads=2, warmup=0, repeats=1, run_id="t")
    rows = L.run_linear_kernels([64], ["deit_tiny_patch16_224"], **kw)
    assert len(rows) == 3 + 2
    assert set(rows.kind) == {"core", "model"} and (rows.status == "ok").all()
    cores = rows[rows.kind == "core"].set_index("label")
    assert list(cores.index) == ["softmax", "linear_relu", "linear_mean"]
    assert (cores.median_ms > 0).all() and (cores.macs > 0).all()
    # 64 tokens > head_dim + 1: the kernels do fewer MACs than softmax (2 N^2 d h)
    assert cores.loc["softmax", "macs"] == 2 * 64 * 64 * 8 * 2
    assert cores.loc["linear_relu", "macs"] < cores.loc["softmax", "macs"]
    models = rows[rows.kind == "model"].set_index("label")  # 82 tokens > 65: fewer MACs
    assert set(models.model) == {"deit_tiny_patch16_224"} and (models.img_size == 144).all()
    assert models.loc["linear_relu", "gmacs"] < models.loc["softmax", "gmacs"]
    assert {"params_m", "throughput", "peak_mem_mb", "iqr_ms"} <= set(models.columns)
    again = L.run_linear_kernels([64], ["deit_tiny_patch16_224"], **kw)  # resumed: nothing re-measured
    assert len(again) == len(rows)


def test_sweep_records_out_of_memory(results_dir, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 TiB")

    monkeypatch.setattr(L, "compare_cores_finite", oom)
    rows = L.run_linear_kernels([64], [], names=["softmax"], head_dim=8, heads=2, warmup=0, repeats=1, run_id="o")
    assert list(rows.status) == ["oom"] and rows.tokens.iloc[0] == 64 and "out of memory" in rows.error.iloc[0]


def test_scaled_error_never_exceeds_relative_error_and_matches_approximation():
    for name, options in [("linear_relu", {}), ("linear_mean", {"normalize": False}), ("taylor1", {})]:
        diag = L.kernel_diagnostics(name, options, **SMALL)
        (row,) = approximation([candidate(name, attention=name, options=options)], **SMALL)
        assert diag["scaled_error"] <= row["rel_error"] + 1e-12
    # an output that is the reference times 3 has relative error 2 and scaled error 0
    ref = torch.randn(2, 3, 4, dtype=torch.float64)
    assert L._scaled_error(3 * ref, ref) < 1e-12


def test_approximation_table_explains_the_signed_normaliser():
    table = L.approximation_table(**SMALL).set_index("label")
    assert table.loc["softmax_explicit", "rel_error"] < 1e-10
    assert "uniform (mean of V)" in table.index and table.loc["uniform (mean of V)", "row_entropy"] == pytest.approx(math.log(36))
    # signed kernels divided by their row sums: a large share of rows has a non-positive normaliser
    for label in ("linear_cosine (normalize=True)", "linear_mean (normalize=True)"):
        assert table.loc[label, "nonpositive_den"] > 0.2
        assert table.loc[label, "max_weight"] > 1.0
        assert table.loc[label, "row_sum"] == pytest.approx(1.0, abs=1e-3)
    # without the denominator (the default) the implied rows sum to about zero: an error of scale
    for label in ("linear_cosine", "linear_mean"):
        assert abs(table.loc[label, "row_sum"]) < 0.5
        assert math.isnan(table.loc[label, "nonpositive_den"])
        assert table.loc[label, "scaled_error"] < 1.0 < table.loc[label, "rel_error"]
    # positive kernels: convex combinations
    for label in ("linear_relu", "linear_elu", "linear_angular", "linear_sigmoid_softmax", "taylor2_compact", "focused"):
        assert table.loc[label, "nonpositive_den"] == 0
        assert table.loc[label, "negative_share"] == 0
        assert table.loc[label, "row_sum"] == pytest.approx(1.0, abs=1e-4)  # eps in the normaliser
    assert table.loc["taylor1", "published_top1"] == 78.5 and table.loc["softmax_explicit", "published_top1"] == 79.8
    assert math.isnan(table.loc["linear_cosine (normalize=True)", "published_top1"])
    assert math.isnan(table.loc["linear_elu", "published_top1"])
    assert table.loc["focused", "options"].endswith("kernel_size=0")
    # the forms that differ from the defaults get a row; a default form is the variant's own row
    assert "linear_cosine (normalize=False)" not in table.index and "linear_mean (normalize=False)" not in table.index
    assert table.loc["linear_cosine", "options"].startswith("normalize=False")
    assert isinstance(table.reset_index(), pd.DataFrame) and len(table) == len(L.VARIANTS) - 1 + 2 + 1


def _core_rows(times: dict[int, dict[str, float]], dtype: str = "float32", oom: dict[int, list[str]] | None = None):
    import pandas as pd

    rows = []
    for n, by_label in times.items():
        for label, ms in by_label.items():
            rows.append({"kind": "core", "dtype": dtype, "tokens": n, "label": label, "median_ms": ms,
                         "macs": (2 * n * n * 64 if "softmax" in label else 2 * n * 64 * 65), "status": "ok",
                         "iqr_ms": 0.02 * ms})
        for label in (oom or {}).get(n, []):
            rows.append({"kind": "core", "dtype": dtype, "tokens": n, "label": label, "median_ms": float("nan"),
                         "macs": float("nan"), "status": "oom"})
    return pd.DataFrame(rows)


def test_core_findings_state_what_the_rows_say():
    times = {196: {"softmax": 1.0, "softmax_explicit": 0.8, "linear_relu": 1.5, "focused": 3.0},
             3136: {"softmax": 10.0, "softmax_explicit": 20.0, "linear_relu": 4.0, "focused": 12.5}}
    f = L.core_findings(_core_rows(times), "float32")
    assert (f["n_lo"], f["n_hi"], f["n_kernels"]) == (196, 3136, 2)
    assert (f["n_faster_lo"], f["n_faster_hi"]) == (0, 1) and (f["n_tied_lo"], f["n_tied_hi"]) == (0, 0)
    assert f["fastest_hi"] == "linear_relu" and f["fastest_hi_ratio"] == 2.5 and f["fastest_hi_word"] == "faster"
    assert f["relu_crossing"] == "from N = 3136"
    assert f["relu_macs_hi"] == round(3136 / 65, 1) and f["relu_gain_word"] == "smaller"
    assert f["explicit_hi_ratio"] == 2.0 and "looks faster than it is" in f["explicit_sentence"]
    # at 196 the explicit form is the faster softmax, so it is the reference there
    assert (f["ref_lo"], f["ref_hi"]) == ("the explicit form", "fused SDPA")
    assert ("At N = 196, though, the explicit form was the faster one in this measurement (1.25 times)"
            in f["explicit_sentence"])
    wide = _core_rows(times).assign(iqr_ms=lambda d: 0.5 * d.median_ms)  # 50% spreads: 1.25x is inside them
    assert "(1.25 times, within the spread of the two medians)" in L.core_findings(wide, "float32")["explicit_sentence"]
    assert f["focused_hi_ratio"] == 1.25 and f["focused_hi_word"] == "slower"
    assert f["missing_sentence"] == "Every kernel ran at N = 3136."
    times[196]["linear_relu"] = 0.9  # faster than fused softmax at 196 but not than the explicit form
    f = L.core_findings(_core_rows(times), "float32")
    assert f["relu_crossing"] == "from N = 3136" and f["n_faster_lo"] == 0
    times[196]["linear_relu"] = 0.7  # faster than both forms at the smallest measured N too
    f = L.core_findings(_core_rows(times), "float32")
    assert f["relu_crossing"] == "at every measured N (from N = 196 on)" and f["n_faster_lo"] == 1
    assert f["fastest_hi_ratio"] == 2.5 and f["focused_hi_ratio"] == 1.25
    times[196]["linear_relu"] = 0.79  # 1% faster than the explicit form, inside the 2% spread: tied
    f = L.core_findings(_core_rows(times), "float32")
    assert (f["n_faster_lo"], f["n_tied_lo"]) == (0, 1)
    times[196]["softmax_explicit"] = 1.2  # fused is the faster form again: no clause about 196
    f = L.core_findings(_core_rows(times), "float32")
    assert f["ref_lo"] == "fused SDPA" and "though" not in f["explicit_sentence"] and f["n_faster_lo"] == 1


def test_core_findings_survive_out_of_memory_rows_at_the_largest_size():
    times = {196: {"softmax": 1.0, "softmax_explicit": 0.8, "linear_relu": 1.5, "focused": 3.0},
             50176: {"softmax": 900.0, "linear_relu": 30.0}}
    rows = _core_rows(times, oom={50176: ["softmax_explicit", "focused"]})
    f = L.core_findings(rows, "float32")
    assert f["n_hi"] == 50176 and f["n_faster_hi"] == 1 and f["fastest_hi"] == "linear_relu"
    assert math.isnan(f["explicit_hi_ratio"]) and "could not run at N = 50176" in f["explicit_sentence"]
    assert math.isnan(f["focused_hi_ratio"]) and f["focused_hi_word"] == "-"
    assert f["missing_sentence"] == "Not measured at N = 50176 for lack of memory: focused."
    # another precision's rows are not mixed in; an absent one is named
    both = pd.concat([rows, _core_rows({196: {"softmax": 9.0, "linear_relu": 0.1}}, dtype="bfloat16")])
    assert L.core_findings(both, "float32")["n_faster_lo"] == 0
    with pytest.raises(ValueError, match="no fused softmax core measured in float16"):
        L.core_findings(both, "float16")


def test_the_two_elu_forms_are_timed_at_the_largest_core_size_and_compared(results_dir):
    rows = L.run_linear_kernels([16, 64], [], names=["softmax", "linear_elu"], head_dim=8, heads=2, warmup=0,
                                repeats=3, run_id="f")
    forms = rows[rows.kind == "form"]
    assert sorted(forms.label) == sorted(L.ELU_FORM_LABELS)
    assert (forms.tokens == 64).all() and (forms.status == "ok").all()
    # the same core, so the same MACs; the exp form runs two more elementwise ops per element of q and k
    assert forms.macs.nunique() == 1
    by = forms.set_index("label")
    exp_label, elu_label = "elu+1 as exp(min(x,0)) + relu(x)", "elu+1 as F.elu(x) + 1"
    assert by.loc[exp_label, "elementwise"] - by.loc[elu_label, "elementwise"] == 2 * 2 * (2 * 64 * 8)
    found = L.elu_form_finding(rows, "float32")
    assert found["tokens"] == 64 and found["ratio"] == pytest.approx(found["elu_ms"] / found["exp_ms"])
    assert "the exp form is" in found["sentence"]
    # the verdict follows the spread rule on the measured rows (the rule itself: the next test)
    beyond = beyond_spread(found["ratio"], found["noise"])
    assert found["faster"] == (("exp" if found["ratio"] > 1 else "elu") if beyond else "")
    # without linear_elu among the cores, no form rows; and no finding to state
    plain = L.run_linear_kernels([16], [], names=["softmax", "linear_relu"], head_dim=8, heads=2, warmup=0,
                                 repeats=1, run_id="g")
    assert "form" not in set(plain.kind) and L.elu_form_finding(plain, "float32") == {}


def test_elu_form_finding_says_which_form_is_faster_beyond_the_spread():
    def row(label, ms, iqr):
        return {"kind": "form", "dtype": "float32", "label": label, "tokens": 4096, "median_ms": ms, "iqr_ms": iqr}

    labels = {form: label for label, form in L.ELU_FORM_LABELS.items()}
    clear = pd.DataFrame([row(labels["elu"], 26.0, 0.5), row(labels["exp"], 7.0, 0.2)])
    f = L.elu_form_finding(clear, "float32")
    assert f["faster"] == "exp" and f["ratio"] == pytest.approx(26 / 7) and "3.71 times faster" in f["sentence"]
    tie = pd.DataFrame([row(labels["elu"], 7.1, 1.0), row(labels["exp"], 7.0, 1.0)])
    assert L.elu_form_finding(tie, "float32")["faster"] == ""
    assert L.elu_form_finding(clear, "bfloat16") == {}


def test_model_verdicts_name_only_differences_beyond_the_spread():
    rows = pd.DataFrame([
        {"kind": "model", "model": "m", "dtype": "float32", "img_size": 224, "status": "ok", "label": label,
         "median_ms": ms, "iqr_ms": iqr}
        for label, ms, iqr in [("softmax", 100.0, 2.0), ("linear_relu", 80.0, 2.0), ("focused", 120.0, 2.0),
                               ("taylor1", 99.0, 2.0), ("efficient", 95.0, 30.0)]]
        + [{"kind": "core", "model": None, "dtype": "float32", "img_size": float("nan"), "status": "ok",
            "label": "softmax", "median_ms": 1.0, "iqr_ms": 0.1}])  # core rows have no image size
    text = L.model_verdicts(rows, "m", 224, "float32")
    assert "faster: linear_relu (1.25 times)" in text and "slower: focused (1.2 times)" in text
    assert text.endswith("2 of 4 within the spread")  # taylor1: 1% apart; efficient: 5% inside a 16% spread
    assert "against the faster softmax (fused SDPA)" in text
    # a faster explicit softmax becomes the reference, and is not counted among the variants
    explicit = pd.DataFrame([{**rows.iloc[0].to_dict(), "label": "softmax_explicit", "median_ms": 90.0}])
    text = L.model_verdicts(pd.concat([rows, explicit]), "m", 224, "float32")
    assert "(the explicit form)" in text and "faster: none" not in text
    assert "slower: focused (1.33 times)" in text and "linear_relu (1.12 times)" in text
    assert text.endswith("of 4 within the spread")
    assert "not measured" in L.model_verdicts(rows[rows.label != "softmax"], "m", 224, "float32")


def test_sweep_times_compiled_twins_last_and_always_against_fused_softmax(results_dir):
    rows = L.run_linear_kernels([16], [], names=["softmax", "linear_relu"], model_names=[], head_dim=8, heads=2,
                                warmup=0, repeats=1, compile_tokens=[16], compile_names=["linear_relu"], run_id="c")
    assert list(rows.kind) == ["core", "core"] + ["compiled"] * 4  # compiled groups run after the rest
    comp = rows[rows.kind == "compiled"]
    assert list(comp.label) == ["softmax", "softmax (compiled)", "linear_relu", "linear_relu (compiled)"]
    assert list(comp.compiled.astype(bool)) == [False, True, False, True] and (comp.status == "ok").all()
    with pytest.raises(ValueError, match="compile_dtypes bfloat16 not among the chapter's dtypes; "
                                         "valid choices: float32"):
        L.run_linear_kernels([16], [], names=["softmax"], compile_tokens=[16], compile_dtypes=["bfloat16"])


def _compiled_rows(**times):
    """kind 'compiled' rows: label -> (median_ms, iqr_ms) or a status string."""
    out = []
    for label, value in times.items():
        label = label.replace("__c", L.COMPILED_SUFFIX)
        row = {"kind": "compiled", "label": label, "tokens": 196, "dtype": "float32", "device": "cpu",
               "hardware": "cpu-x", "threads": 2, "compiled": label.endswith(L.COMPILED_SUFFIX)}
        if isinstance(value, str):
            row.update(status=value, error="boom")
        else:
            row.update(status="ok", median_ms=value[0], iqr_ms=value[1])
            if row["compiled"]:
                row.update(compile_s=1.5, compile_rel_err=1e-7)
        out.append(row)
    return pd.DataFrame(out)


def test_compiled_table_and_findings_judge_gains_by_the_spread():
    rows = _compiled_rows(softmax=(1.0, 0.02), softmax__c=(1.1, 0.02),
                          linear_relu=(0.5, 0.01), linear_relu__c=(0.49, 0.05),
                          focused=(2.0, 0.04), focused__c=(0.8, 0.02),
                          taylor1=(0.6, 0.01), taylor1__c="compile_error")
    t = L.compiled_table(rows).set_index("variant")
    assert list(t.index) == ["softmax", "linear_relu", "focused", "taylor1"]
    assert t.loc["focused", "speedup"] == pytest.approx(2.5)
    assert t.loc["focused", "compiled_vs_softmax"] == pytest.approx(1.25)  # eager softmax 1.0 / 0.8
    assert (t.reference == "eager").all()
    assert t.loc["focused", "vs_softmax"] == pytest.approx(0.5)
    assert t.loc["linear_relu", "speedup_said"].endswith("within their spread")
    assert t.loc["taylor1", "status"] == "compile_error" and math.isnan(t.loc["taylor1", "compiled_ms"])
    f = L.compile_findings(rows, "float32")
    assert f["settings"] == ["N = 196"]
    assert f["gain_sentence"] == ("At N = 196, faster when compiled: focused (2.5 times); slower: softmax "
                                  "(1.1 times); 1 of 3 within the spread.")
    assert f["softmax_sentence"] == "Compiling softmax made it 1.1 times slower at N = 196."
    # against the faster softmax (eager, 1.0 ms): relu beats it (2x), focused only compiled (1.25x)
    assert f["count_sentence"] == "At N = 196, 1 of 2 kernels beat fused softmax in its faster form (here eager) when run eagerly and 2 when compiled."
    assert f["failed_sentence"] == "Not timed both ways: taylor1 (compile_error)."
    assert f["compile_s_median"] == 1.5 and f["max_rel_err"] == pytest.approx(1e-7)
    assert f["softmax_overhead_us"] == pytest.approx(100.0) and f["overhead_where"] == "at N = 196"
    assert L.compile_findings(rows, "bfloat16") == {}
    assert L.compiled_table(rows[rows.kind == "core"]).empty


def test_eager_drift_compares_the_compile_groups_eager_medians_with_the_core_table():
    rows = _compiled_rows(softmax=(1.2, 0.02), softmax__c=(1.1, 0.02), focused=(2.0, 0.04), focused__c=(0.8, 0.02))
    core = rows.iloc[[0, 2]].assign(kind="core")
    core["median_ms"] = [1.0, 2.5]
    drift = L.eager_drift(pd.concat([rows, core, core.assign(tokens=784)], ignore_index=True))
    assert sorted(drift.round(6)) == [-20.0, 20.0]  # softmax 1.2 against 1.0; focused 2.0 against 2.5
    assert L.eager_drift(rows).empty and L.eager_drift(core).empty


def test_compiled_findings_compare_forms_of_one_measurement_round_by_round():
    # a drifting host: relu's eager and compiled forms are 4% faster than eager softmax in every round,
    # inside each median's 16% spread
    drift = [1.0, 1.1, 1.2, 1.3, 1.4, 1.3, 1.2, 1.1]
    rows = _compiled_rows(softmax=(1.2, 0.2), softmax__c=(1.5, 0.2), linear_relu=(1.2 / 1.04, 0.2 / 1.04),
                          linear_relu__c=(1.2 / 1.04, 0.2 / 1.04))
    unpaired = L.compile_findings(rows, "float32")["count_sentence"]
    assert "0 of 1 kernels beat" in unpaired and "and 0 when compiled" in unpaired
    scale = {"softmax": 1.0, "softmax" + L.COMPILED_SUFFIX: 1.25, "linear_relu": 1 / 1.04,
             "linear_relu" + L.COMPILED_SUFFIX: 1 / 1.04}
    rows["samples_ms"] = [" ".join(f"{scale[lab] * x:.6g}" for x in drift) for lab in rows.label]
    rows["timing_group"] = "g"
    t = L.compiled_table(rows).set_index("variant")
    assert t.loc["linear_relu", "eager_group"] == t.loc["linear_relu", "compiled_group"] == "g"
    paired = L.compile_findings(rows, "float32")["count_sentence"]
    assert "1 of 1 kernels beat" in paired and "and 1 when compiled" in paired


def test_whole_models_are_compiled_after_everything_else(results_dir):
    # one compiled model (softmax, always added as the reference) keeps the test to one model compile
    rows = L.run_linear_kernels([], ["deit_tiny_patch16_224"], names=["softmax", "linear_relu"],
                                model_names=["linear_relu"], img_sizes=[32], warmup=0, repeats=1,
                                compile_models=["deit_tiny_patch16_224"], compile_model_names=["softmax"],
                                run_id="m")
    assert list(rows.kind) == ["model"] + ["model_compiled"] * 2
    comp = rows[rows.kind == "model_compiled"].set_index("label")
    assert list(comp.index) == ["softmax", "softmax (compiled)"]
    assert (comp.status == "ok").all() and (comp.img_size == 32).all()
    assert comp.loc["softmax (compiled)", "compile_rel_err"] < 1e-4
    assert comp.loc["softmax (compiled)", "gmacs"] == comp.loc["softmax", "gmacs"] > 0
    t = L.compiled_table(rows, "model_compiled")
    assert list(t.variant) == ["softmax"] and list(t.model) == ["deit_tiny_patch16_224"]


def test_model_findings_compare_with_the_faster_softmax_form():
    rows = _compiled_rows(softmax=(10.0, 0.1), softmax__c=(8.0, 0.1), focused=(9.0, 0.1), focused__c=(7.0, 0.1))
    rows = rows.assign(kind="model_compiled", model="deit_small_patch16_224", img_size=224, batch_size=1)
    t = L.compiled_table(rows, "model_compiled").set_index("variant")
    assert (t.reference == "compiled").all() and t.loc["focused", "vs_softmax"] == pytest.approx(8 / 9)
    f = L.compile_findings(rows, "float32", "model_compiled")
    assert f["settings"] == ["deit_small_patch16_224 at 224 px"]
    # eager focused (9 ms) loses to compiled softmax (8 ms); compiled focused (7 ms) beats it
    assert f["count_sentence"] == ("In deit_small_patch16_224 at 224 px, 0 of 1 variants beat fused softmax in "
                                   "its faster form (here compiled) when run eagerly and 1 when compiled.")
    assert f["softmax_overhead_us"] == pytest.approx(-2000.0)
    with pytest.raises(ValueError, match="valid choices: compiled, model_compiled"):
        L.compiled_table(rows, "model")


def test_findings_cope_with_failed_forms():
    # compiled softmax failed: the eager one is the reference; an eager failure is not a "within the spread"
    rows = _compiled_rows(softmax=(1.0, 0.02), softmax__c="compile_error", linear_relu=(0.5, 0.01),
                          linear_relu__c=(0.4, 0.01), focused="nonfinite", focused__c=(0.8, 0.02))
    t = L.compiled_table(rows).set_index("variant")
    assert list(t.status) == ["compile_error", "ok", "eager nonfinite"]
    assert t.loc["linear_relu", "reference"] == "eager"
    f = L.compile_findings(rows, "float32")
    assert f["gain_sentence"] == ("At N = 196, faster when compiled: linear_relu (1.25 times); none slower; "
                                  "0 of 1 within the spread.")
    assert f["count_sentence"] == "At N = 196, 1 of 1 kernels beat fused softmax in its faster form (here eager) when run eagerly and 1 when compiled."
    assert f["softmax_sentence"] == "" and math.isnan(f["softmax_overhead_us"]) and f["n_timed"] == 1
    assert f["failed_sentence"] == "Not timed both ways: softmax (compile_error), focused (eager nonfinite)."
    # nothing compiled at all (no C++ compiler): said so, without counts of nothing
    none = _compiled_rows(softmax=(1.0, 0.02), softmax__c="compile_error", linear_relu=(0.5, 0.01),
                          linear_relu__c="compile_error")
    f = L.compile_findings(none, "float32")
    assert f["gain_sentence"] == "At N = 196, no variant was timed both ways."
    assert f["n_timed"] == 0 and f["softmax_sentence"] == "" and f["count_sentence"] == ""


def test_compile_prose_says_costs_and_slowdowns_only_beyond_the_spread():
    rows = pd.concat([
        _compiled_rows(softmax=(1.0, 0.01), softmax__c=(1.1, 0.01), linear_mean=(0.5, 0.01),
                       linear_mean__c=(0.49, 0.01), focused=(2.0, 0.02), focused__c=(0.8, 0.02)),
        _compiled_rows(softmax=(90.0, 1.0), softmax__c=(90.0, 1.0), linear_mean=(2.0, 0.02),
                       linear_mean__c=(2.4, 0.02), focused=(7.0, 0.1), focused__c=(5.0, 0.1)).assign(tokens=3136)])
    p = L.compile_prose(rows, "float32", "cpu")
    assert p["overhead_clause"] == ("fused softmax, which compiling leaves as one SDPA call, took 100 µs more per "
                                    "call compiled at N = 196")
    assert p["slow_big"].startswith("At N = 3136, though, compiled code was slower beyond the spread by more than "
                                    "that cost: linear_mean (400 µs).")
    assert "Profiling the mean kernel" in p["slow_big"]
    assert "Profiling" not in L.compile_prose(rows, "float32", "cuda")["slow_big"]
    assert p["bullet"].startswith("faster beyond the spread at every compiled N: focused; fused softmax did not gain")
    assert p["bullet"].endswith("unfair to the kernels that gain (and kind to the few that compiling slows).")
    # a softmax difference inside the spread is not called a cost
    quiet = rows.assign(iqr_ms=rows.iqr_ms * 40)
    clause = L.compile_prose(quiet, "float32", "cpu")["overhead_clause"]
    assert L.compile_prose(quiet, "float32", "cpu")["bullet"].endswith("unfair to the kernels that gain.")
    assert "showed no such cost beyond the spread at N = 196" in clause
    assert L.compile_prose(rows.iloc[:0], "float32", "cpu")["bullet"] == "nothing was compiled in this run."


def test_faster_softmax_picks_the_lower_median_and_falls_back_to_fused():
    assert L.faster_softmax(pd.Series({"softmax": 2.0, "softmax_explicit": 1.5})) == "softmax_explicit"
    assert L.faster_softmax(pd.Series({"softmax": 1.0, "softmax_explicit": 1.5})) == "softmax"
    assert L.faster_softmax(pd.Series({"softmax": 1.0, "softmax_explicit": 1.0})) == "softmax"  # a tie: fused
    assert L.faster_softmax(pd.Series({"softmax": 1.0})) == "softmax"  # explicit out of memory


def test_compile_candidates_pair_each_variant_eager_and_compiled():
    pairs = L.compile_candidates(["softmax", "linear_relu"], model="deit_small_patch16_224")
    assert [c["label"] for c in pairs] == ["softmax", "softmax" + L.COMPILED_SUFFIX,
                                           "linear_relu", "linear_relu" + L.COMPILED_SUFFIX]
    assert [c.get("compile", False) for c in pairs] == [False, True, False, True]
    assert [c["attention"] for c in pairs] == ["softmax", "softmax", "linear_relu", "linear_relu"]
    assert all(c["model"] == "deit_small_patch16_224" for c in pairs)
    assert "model" not in L.compile_candidates(["softmax"])[0]
    with pytest.raises(ValueError, match="valid choices"):
        L.compile_candidates(["no_such_kernel"])
