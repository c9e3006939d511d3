"""vitspeed.studies.cuda_kernels: the kernel-breakdown analysis (measurement itself needs CUDA)."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from vitspeed.studies import cuda_kernels as ck

GEMM = "sm80_xmma_gemm_f32f32_nt_n_tilesize32x32x8_cublas"
SOFTMAX_K = ("void at::native::(anonymous namespace)::cunn_SpatialSoftMaxForward<float, float, float, int, "
             "at::native::(anonymous namespace)::SoftMaxForwardEpilogue>(float*, float const*)")


def _frame() -> pd.DataFrame:
    rows = []
    def kern(att, dt, n, med, kernels):
        for name, launches, us in kernels:
            rows.append(dict(probe="kernel", hardware="gpu-x", attention=att, dtype=dt, tokens=n, median_ms=med,
                             iqr_ms=0.01, kernel=name, launches=launches, device_us=us))
    for dt in ["float32", "bfloat16"]:
        kern("softmax", dt, 1000, 5.0, [("fmha_kernel", 1, 4900.0)])
        kern("linear_relu", dt, 1000, 1.6, [(GEMM, 1, 1200.0), ("void at::native::vectorized_elementwise_kernel<4>(int)", 3, 300.0)])
        kern("linear_mean", dt, 1000, 1.4, [(GEMM, 1, 1250.0)])
        kern("efficient", dt, 1000, 4.7, [(SOFTMAX_K, 1, 3300.0), (GEMM, 1, 1250.0)])
        kern("linear_relu", dt, 100, 0.3, [(GEMM, 1, 60.0), ("copy", 2, 40.0)])
    for n, times in [(1000, {1: 1.4, 4: 0.5, 16: 0.2}), (100, {1: 0.1, 4: 0.12, 16: 0.13})]:
        for chunks, ms in times.items():
            rows.append(dict(probe="kv_split", hardware="gpu-x", attention="", dtype="float32", tokens=n,
                             chunks=chunks, median_ms=ms, iqr_ms=0.01, rel_err=3e-6 if chunks > 1 else 0.0))
    return pd.DataFrame(rows)


def test_short_kernel_drops_templates_arguments_and_namespaces():
    assert ck.short_kernel(SOFTMAX_K) == "cunn_SpatialSoftMaxForward"
    assert ck.short_kernel("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float>>(int)") == "reduce_kernel"
    assert ck.short_kernel(GEMM) == GEMM
    # a name cut off inside its template arguments still gives the kernel's name
    assert ck.short_kernel("void at::native::elementwise_kernel<128, 2, at::nat") == "elementwise_kernel"


def test_dominant_kernels_names_the_largest_kernel_and_its_share():
    dom = ck.dominant_kernels(_frame()).set_index(["attention", "dtype", "tokens"])
    row = dom.loc[("linear_relu", "float32", 1000)]
    assert row.top_kernel == GEMM
    assert row.top_ms == pytest.approx(1.2)
    assert row.top_pct == pytest.approx(80.0)
    assert row.kernels_ms == pytest.approx(1.5)
    assert row.launches == 4
    assert dom.loc[("efficient", "bfloat16", 1000)].top_kernel == "cunn_SpatialSoftMaxForward"
    assert len(dom) == 10


def test_kv_split_table_pivots_chunks():
    kv = ck.kv_split_table(_frame())
    assert list(kv.columns) == [1, 4, 16]
    assert kv.loc[("gpu-x", 1000), 16] == pytest.approx(0.2)
    assert ck.kv_split_table(_frame()[lambda d: d.probe == "kernel"]).empty


def test_finding_text_names_the_common_kernel_and_the_split_saving():
    text = ck.finding_text(_frame(), "gpu-x")
    assert "At 1,000 tokens on gpu-x, 4 of the 6 linear core calls profiled (3 cores in 2 precisions)" in text
    assert f"`{GEMM}`" in text and "efficient in `cunn_SpatialSoftMaxForward`" in text
    assert "1.40 ms" in text and "16 chunks" in text and "0.20 ms" in text and "7.0 times faster" in text
    assert "3e-06 relative" in text
    assert ck.finding_text(_frame(), "other-hw") == ""


def test_finding_text_says_when_splitting_does_not_help():
    df = _frame()
    df.loc[(df.probe == "kv_split") & (df.tokens == 1000) & (df.chunks > 1), "median_ms"] = 2.0
    assert "does not make it faster" in ck.finding_text(df, "gpu-x")


def test_agreement_compares_with_the_scaling_medians_per_token_count():
    scaling = pd.DataFrame([
        dict(hardware="gpu-x", level="core", batch_size=1, attention="linear_relu", dtype="float32", tokens=1000.0,
             median_ms=2.0),
        dict(hardware="gpu-x", level="core", batch_size=1, attention="softmax", dtype="float32", tokens=1000.0,
             median_ms=5.0),
        dict(hardware="gpu-x", level="core", batch_size=64, attention="softmax", dtype="bfloat16", tokens=1000.0,
             median_ms=99.0),
        dict(hardware="gpu-x", level="core", batch_size=1, attention="linear_relu", dtype="float32", tokens=100.0,
             median_ms=0.6),
    ])
    t = ck.agreement(_frame(), scaling, "gpu-x").set_index("tokens")
    assert t.loc[1000, "n"] == 2  # linear_relu and softmax in float32; the batch-64 row is not a match
    assert t.loc[1000, "ratio_min"] == pytest.approx(0.8) and t.loc[1000, "ratio_max"] == pytest.approx(1.0)
    assert t.loc[100, "ratio_min"] == pytest.approx(0.5)
    assert t.loc[100, "kernel_pct_max"] == pytest.approx(100 * 0.1 / 0.3)
    text = ck.agreement_text(t.reset_index())
    assert "at 100 tokens 0.50 to 0.50 times" in text and "host launching them" in text
    assert ck.agreement(_frame(), scaling.iloc[:0], "gpu-x").empty
    assert ck.agreement_text(pd.DataFrame()) == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_measure_refuses_without_cuda_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="CUDA"):
        ck.measure(root=tmp_path)
    assert not any(tmp_path.iterdir())
    script = Path(__file__).resolve().parents[1] / "tools" / "cuda_kernel_breakdown.py"
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2 and "CUDA" in r.stderr
    assert not (tmp_path / "out").exists()


def test_committed_breakdown_loads_when_present():
    df = ck.load()
    if not len(df):
        pytest.skip("no kernel breakdown in data/")
    assert {"probe", "attention", "dtype", "tokens", "kernel", "device_us", "median_ms"} <= set(df.columns)
    assert set(df.probe) == {"kernel", "kv_split"}


def _model_frame() -> pd.DataFrame:
    rows = []
    for dt, kernels in [("float32", [("conv_kernel", 40, 500.0), ("elementwise", 200, 400.0)]),
                        ("bfloat16", [("conv_kernel", 40, 300.0), ("void cudnn::nchwToNhwcKernel<__nv_bfloat16>(int)", 264, 340.0),
                                      ("void cudnn::nhwcToNchwKernel<__nv_bfloat16>(int)", 264, 340.0),
                                      ("elementwise", 200, 300.0)])]:
        for name, launches, us in kernels:
            rows.append(dict(hardware="gpu-x", model="efficientvit_b1", batch_size=1, dtype=dt,
                             median_ms=5.0 if dt == "float32" else 11.0, kernel=name, launches=launches, device_us=us))
    return pd.DataFrame(rows)


def test_model_launch_table_counts_layout_conversions():
    t = ck.model_launch_table(_model_frame()).set_index("dtype")
    assert t.loc["float32", "launches"] == 240 and t.loc["float32", "layout_launches"] == 0
    assert t.loc["bfloat16", "launches"] == 768 and t.loc["bfloat16", "layout_launches"] == 528
    assert t.loc["bfloat16", "kernels_ms"] == pytest.approx(1.28)
    text = ck.model_layout_text(ck.model_launch_table(_model_frame()), "gpu-x")
    assert text.startswith("On gpu-x, efficientvit_b1 at batch 1 launches 240 kernels per pass in float32 (5.00 ms) "
                           "and 768 in bfloat16 (11.00 ms), 528 of them layout conversions.")
    assert ck.model_layout_text(ck.model_launch_table(_model_frame()), "other") == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_measure_models_refuses_without_cuda(tmp_path):
    with pytest.raises(ValueError, match="CUDA"):
        ck.measure_models(root=tmp_path)
    assert not any(tmp_path.iterdir())
