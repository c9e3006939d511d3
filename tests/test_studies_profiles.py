"""vitspeed.studies.profiles: the share table and the sentence the scaling chapter states."""
import pandas as pd
import pytest

from vitspeed.studies import profiles


def _rows(target, dtype, shares, tokens=4096, compiled=False):
    return [{"hardware": "hw", "kind": "core", "img_size": None, "batch_size": 1, "target": target, "dtype": dtype, "tokens": tokens,
             "compiled": compiled, "group": g, "share_pct": s} for g, s in shares.items()]


PROF = pd.DataFrame(
    _rows("softmax", "float32", {"MKL float32 GEMM": 85.0, "fused-attention kernel loops": 12.0, "other": 3.0})
    + _rows("softmax", "bfloat16", {"MKL float32 GEMM": 80.6, "MKL bfloat16 GEMM": 4.8,
                                     "fused-attention kernel loops": 11.5, "other": 3.1})
    + _rows("softmax_explicit", "bfloat16", {"oneDNN JIT kernels": 57.0, "PyTorch, other": 40.5, "other": 2.5})
    + _rows("softmax", "bfloat16", {"Inductor-generated code": 100.0}, compiled=True)
    + _rows("softmax", "bfloat16", {"other": 100.0}, tokens=256))


def test_share_table_has_one_row_per_profiled_call_and_groups_in_order():
    t = profiles.share_table(PROF)
    assert len(t) == 5  # the two token counts of eager bf16 fused SDPA are two rows, never summed
    assert list(t.columns)[:3] == ["MKL float32 GEMM", "MKL bfloat16 GEMM", "oneDNN JIT kernels"]
    assert t.loc[("hw", "core", "softmax", "4096 tokens", 1, "float32", "eager"), "MKL float32 GEMM"] == 85.0
    assert t.loc[("hw", "core", "softmax", "4096 tokens", 1, "bfloat16", "compiled"), "Inductor-generated code"] == 100.0
    assert profiles.share_table(PROF.iloc[:0]).empty


def test_fused_precision_text_states_the_float32_kernel_in_bfloat16():
    text = profiles.fused_precision_text(PROF)
    assert "at 4096 tokens" in text  # the largest token count, not 256
    assert "81% of fused SDPA's samples fall in MKL's float32 GEMM kernel (85% in float32)" in text
    assert "5% in MKL's bfloat16 GEMM routine and 12% in the fused kernel's own loops" in text
    assert "57% of the explicit form's bfloat16 samples are in oneDNN JIT kernels" in text


def test_fused_precision_text_without_the_float32_kernel_on_top_says_only_what_was_seen():
    prof = PROF.copy()
    prof.loc[(prof.target == "softmax") & (prof.dtype == "bfloat16") & (prof.group == "MKL float32 GEMM"),
             "share_pct"] = 1.0
    text = profiles.fused_precision_text(prof)
    assert "puts 12% of fused SDPA's bfloat16 samples in fused-attention kernel loops (12% in float32)" in text
    assert "hands its block products" not in text


def test_fused_precision_text_needs_both_precisions():
    assert profiles.fused_precision_text(PROF[PROF.dtype == "bfloat16"]) is None
    assert profiles.fused_precision_text(PROF.iloc[:0]) is None
    assert profiles.fused_precision_text(pd.DataFrame(columns=["hardware", "run_id"])) is None  # no profile stored


def _model(target, batch, shares):
    return [{"hardware": "hw", "kind": "model", "target": target, "tokens": None, "img_size": 224,
             "batch_size": batch, "dtype": "float32", "compiled": False, "group": g, "share_pct": v}
            for g, v in shares.items()]


MODELS = pd.DataFrame(
    _model("deit", 1, {"MKL float32 GEMM": 88.0, "OpenMP runtime": 8.0, "Python": 2.0, "other": 2.0})
    + _model("deit", 8, {"MKL float32 GEMM": 90.0, "OpenMP runtime": 7.0, "Python": 1.0, "other": 2.0})
    + _model("effvit", 1, {"oneDNN JIT kernels": 40.0, "OpenMP runtime": 34.0, "Python": 8.0, "other": 18.0})
    + _model("effvit", 8, {"oneDNN JIT kernels": 66.0, "OpenMP runtime": 21.0, "Python": 4.0, "other": 9.0})
    + _model("levit", 1, {"MKL float32 GEMM": 60.0, "OpenMP runtime": 25.0, "Python": 7.0, "other": 8.0}))


def test_waiting_shares_add_the_openmp_and_python_groups_of_eager_model_profiles():
    w = profiles.waiting_shares(pd.concat([MODELS, PROF])).set_index(["target", "batch_size"]).waiting_pct
    assert w[("deit", 1)] == pytest.approx(10.0) and w[("effvit", 1)] == pytest.approx(42.0)
    assert w[("effvit", 8)] == pytest.approx(25.0)
    assert "softmax" not in w.index.get_level_values(0)  # cores are not models
    assert profiles.waiting_shares(PROF.iloc[:0]).empty


def test_waiting_text_compares_every_model_profiled_at_both_batches_with_the_reference():
    text = profiles.waiting_text(MODELS, {"effvit": "EfficientViT-B1", "deit": "DeiT-S"}, "deit", 1, 8)
    assert text.startswith("A CPU profile of these models (the profile section above) bears this out")
    assert "is EfficientViT-B1 42%, against DeiT-S 10%; at batch 8 it is EfficientViT-B1 25%, against 8%." in text
    assert "levit" not in text  # profiled at one batch only


def test_waiting_text_says_when_the_profile_does_not_bear_it_out():
    flat = MODELS.copy()
    flat.loc[(flat.target == "effvit") & (flat.batch_size == 8) & (flat.group == "OpenMP runtime"), "share_pct"] = 38.0
    text = profiles.waiting_text(flat, {}, "deit", 1, 8)
    assert "does not clearly bear this out" in text and "effvit 42%" in text
    assert profiles.waiting_text(MODELS, {}, "not_profiled", 1, 8) is None
    assert profiles.waiting_text(MODELS[MODELS.target == "deit"], {}, "deit", 1, 8) is None
    assert profiles.waiting_text(MODELS, {}, "deit", 1, 1) is None  # one batch size: nothing to compare


def test_load_profiles_takes_each_call_from_its_newest_run(tmp_path):
    folder = tmp_path / "profiles"
    folder.mkdir()
    cols = "kind,target,attention,tokens,img_size,batch_size,dtype,compiled,threads,group,share_pct\n"
    (folder / "hw__20260101-000000.csv").write_text(
        cols + "core,softmax,,4096,,1,float32,False,2,MKL float32 GEMM,50\n"
        "core,softmax_explicit,,4096,,1,float32,False,2,MKL float32 GEMM,70\n")
    (folder / "hw__20260202-000000.csv").write_text(cols + "core,softmax,,4096,,1,float32,False,2,MKL float32 GEMM,85\n")
    prof = profiles.load_profiles(roots=[tmp_path]).set_index("target")
    assert prof.loc["softmax", "share_pct"] == 85 and prof.loc["softmax", "run_id"] == "20260202-000000"
    assert prof.loc["softmax_explicit", "share_pct"] == 70  # kept from the older run: not profiled again
    assert profiles.load_profiles("other-hw", roots=[tmp_path]).empty
