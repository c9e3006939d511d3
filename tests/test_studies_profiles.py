"""vitspeed.studies.profiles: the share table and the sentence the scaling chapter states."""
import pandas as pd
import pytest

from vitspeed.studies import profiles


def _rows(target, dtype, shares, tokens=4096, compiled=False):
    return [{"hardware": "hw", "kind": "core", "img_size": None, "target": target, "dtype": dtype, "tokens": tokens,
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
    assert t.loc[("hw", "core", "softmax", "4096 tokens", "float32", "eager"), "MKL float32 GEMM"] == 85.0
    assert t.loc[("hw", "core", "softmax", "4096 tokens", "bfloat16", "compiled"), "Inductor-generated code"] == 100.0
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
