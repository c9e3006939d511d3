"""Roofline: measured ceilings and the placement of measured cores under them."""
import math

import pandas as pd
import pytest

from vitspeed.roofline import default_sizes, measure_ceilings, roof_curve, roof_summary, roofline


def test_measure_ceilings_counts_the_work_it_times(one_thread):
    rows = {r["attention"]: r for r in measure_ceilings("cpu", "float32", matmul_size=128, copy_bytes=1 << 20,
                                                         warmup=1, repeats=3)}
    mm, cp = rows["matmul"], rows["copy"]
    assert mm["flops"] == 2 * 128 ** 3 and mm["size"] == 128
    assert mm["flops_per_s"] == pytest.approx(mm["flops"] / (mm["median_ms"] / 1e3))
    assert cp["bytes_moved"] == 2 * (1 << 20)  # read once and written once
    assert cp["bytes_per_s"] == pytest.approx(cp["bytes_moved"] / (cp["median_ms"] / 1e3))
    for r in rows.values():
        assert r["level"] == "ceiling" and r["status"] == "ok" and r["n"] >= 3 and r["tf32"] is None
    # plausibility on any CPU of this decade: between 1 GFLOP/s and 100 TFLOP/s, 0.1 GB/s and 10 TB/s
    assert 1e9 < mm["flops_per_s"] < 1e14 and 1e8 < cp["bytes_per_s"] < 1e13


def test_the_float32_ceiling_is_timed_with_tf32_off_and_the_flags_restored(monkeypatch):
    import torch

    import vitspeed.roofline as R

    seen = []
    real = R.measure

    def spy(fns, **kw):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return real(fns, **kw)

    monkeypatch.setattr(R, "measure", spy)
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        measure_ceilings("cpu", "float32", matmul_size=32, copy_bytes=1 << 12, warmup=0, repeats=1)
        assert seen == [(False, False)]  # the caller allowed TF32; the ceiling is IEEE float32 anyway
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_measure_ceilings_bad_input():
    with pytest.raises(ValueError, match="valid"):
        measure_ceilings("cpu", "float8")
    with pytest.raises(ValueError, match="must be positive"):
        measure_ceilings("cpu", matmul_size=-4)
    assert default_sizes("cpu") == (2048, 256 << 20)


def _frame():
    ceil = [{"level": "ceiling", "attention": "matmul", "hardware": "hw", "dtype": "float32", "flops_per_s": 100.0},
            {"level": "ceiling", "attention": "copy", "hardware": "hw", "dtype": "float32", "bytes_per_s": 10.0},
            # a group with only one ceiling cannot be placed
            {"level": "ceiling", "attention": "matmul", "hardware": "other", "dtype": "float32", "flops_per_s": 1.0}]
    cores = [  # I = 100 / 100 = 1 FLOP/B < ridge 10: memory-bound, roof 10 FLOP/s, achieved 100 / 20 s = 5
        {"level": "core", "attention": "a", "hardware": "hw", "dtype": "float32", "macs": 50, "elementwise": 0,
         "bytes_moved": 100, "median_ms": 20_000.0},
        # I = (2 * 1000 + 0) / 50 = 40 > 10: compute-bound, roof 100, achieved 2000 / 40 s = 50
        {"level": "core", "attention": "b", "hardware": "hw", "dtype": "float32", "macs": 1000, "elementwise": 0,
         "bytes_moved": 50, "median_ms": 40_000.0},
        {"level": "core", "attention": "c", "hardware": "other", "dtype": "float32", "macs": 1, "elementwise": 1,
         "bytes_moved": 1, "median_ms": 1.0},
        {"level": "core", "attention": "d", "hardware": "hw", "dtype": "float32", "macs": 1, "elementwise": 1,
         "bytes_moved": 1, "median_ms": 1.0, "status": "oom"}]
    return pd.DataFrame(ceil + cores)


def test_roofline_places_cores_under_their_own_groups_ceilings():
    roof = roofline(_frame()).set_index("attention")
    assert sorted(roof.index) == ["a", "b"]  # no ceilings for 'other'; 'd' did not run
    a, b = roof.loc["a"], roof.loc["b"]
    assert a.ridge == 10 and a.intensity == 1 and a.bound == "memory"
    assert a.attainable_flops_per_s == 10 and a.achieved_flops_per_s == 5 and a.efficiency == 0.5
    assert a.achieved_bytes_per_s == 5 and a.pct_peak_bytes == 50 and a.pct_peak_flops == 5
    assert b.intensity == 40 and b.bound == "compute" and b.attainable_flops_per_s == 100
    assert b.efficiency == 0.5 and b.pct_peak_flops == 50


def test_roofline_without_ceilings_is_empty():
    df = _frame()
    assert roofline(df[df.level != "ceiling"]).empty


def test_roof_curve():
    xs, ys = roof_curve(100.0, 10.0, 0.1, 1000.0, points=5)
    assert xs[0] == pytest.approx(0.1) and xs[-1] == pytest.approx(1000.0)
    assert ys == [pytest.approx(min(100.0, x * 10.0)) for x in xs]
    assert math.isclose(ys[-1], 100.0)
    with pytest.raises(ValueError, match="need 0 < lo < hi"):
        roof_curve(1.0, 1.0, 5.0, 1.0)


def test_roof_summary_at_the_largest_token_count():
    df = _frame()
    df["tokens"] = 100
    df["family"] = ["ceiling"] * 3 + ["linear", "quadratic", "linear", "linear"]
    small = df.iloc[[3]].assign(tokens=10, median_ms=1.0)  # a smaller N is ignored
    roof = roofline(pd.concat([df, small], ignore_index=True))
    s = roof_summary(roof[roof.hardware == "hw"], reference="b")
    assert s["tokens"] == 100 and s["ridge"] == 10 and s["n_cores"] == 2 and s["n_memory_bound"] == 1
    assert s["reference_efficiency"] == 0.5 and s["reference_intensity"] == 40
    assert s["best"] == s["worst"] == "a" and s["linear_intensity"] == (1.0, 1.0)
    assert (s["n_linear"], s["n_linear_memory_bound"], s["n_linear_near_ridge"]) == (1, 1, 0)
    assert s["linear_efficiency"][0] == s["linear_efficiency"][1] == s["best_efficiency"]
    with pytest.raises(ValueError, match="no roofline rows"):
        roof_summary(roof.iloc[0:0])


def test_roof_mechanism_says_whether_bandwidth_explains_the_linear_cores():
    from vitspeed.roofline import roof_mechanism

    base = {"n_linear": 4, "linear_efficiency": (0.2, 0.38)}
    assert "the bandwidth roof is what holds them back (they run at 20% to 38% of it)" in roof_mechanism(
        {**base, "n_linear_memory_bound": 4})
    text = roof_mechanism({**base, "n_linear_memory_bound": 0})
    assert "all 4 are compute-bound, so the bandwidth roof does not explain" in text and "20% to 38%" in text
    assert "1 of the 4 linear cores lie left of the ridge point and 3 right of it" in roof_mechanism(
        {**base, "n_linear_memory_bound": 1})
    assert roof_mechanism({"n_linear": 0}) == ""
    text = roof_mechanism({**base, "n_linear_memory_bound": 1, "n_linear_near_ridge": 2, "dtype": "float32"})
    assert text.startswith("Here in float32 1 of the 4") and "(2 of them lie within 10% of the ridge point" in text


def test_roofline_puts_an_upcasting_core_under_the_roof_of_the_dtype_it_computes_in():
    ceil = [{"level": "ceiling", "attention": "matmul", "hardware": "hw", "dtype": "bfloat16", "flops_per_s": 1000.0},
            {"level": "ceiling", "attention": "copy", "hardware": "hw", "dtype": "bfloat16", "bytes_per_s": 10.0},
            {"level": "ceiling", "attention": "matmul", "hardware": "hw", "dtype": "float32", "flops_per_s": 50.0},
            {"level": "ceiling", "attention": "copy", "hardware": "hw", "dtype": "float32", "bytes_per_s": 12.0}]
    base = {"level": "core", "hardware": "hw", "dtype": "bfloat16", "tokens": 100, "elementwise": 0, "family": "linear"}
    cores = [{**base, "attention": "native", "compute_dtype": "bfloat16", "macs": 1000, "bytes_moved": 20,
              "median_ms": 10_000.0},
             # products in float32: compute roof 50 FLOP/s (float32's matmul), bandwidth the bf16 copy's 10 B/s
             {**base, "attention": "upcast", "compute_dtype": "float32", "macs": 1000, "bytes_moved": 20,
              "median_ms": 100_000.0},
             # a compute dtype with no ceiling measured falls back to its own dtype's roof
             {**base, "attention": "odd", "compute_dtype": "float64", "macs": 1000, "bytes_moved": 20,
              "median_ms": 10_000.0},
             # rows from before compute_dtype was recorded: their own dtype
             {**base, "attention": "old", "compute_dtype": float("nan"), "macs": 1000, "bytes_moved": 20,
              "median_ms": 10_000.0}]
    roof = roofline(pd.DataFrame(ceil + cores)).set_index("attention")
    assert roof.roof_dtype.to_dict() == {"native": "bfloat16", "upcast": "float32", "odd": "bfloat16",
                                         "old": "bfloat16"}
    up, native = roof.loc["upcast"], roof.loc["native"]
    assert up.peak_flops_per_s == 50 and up.peak_bytes_per_s == 10 and up.ridge == 5
    # I = 2000 / 20 = 100 FLOP/B, far right of float32's ridge (5): on float32's compute roof of 50 FLOP/s
    assert up.bound == "compute" and up.attainable_flops_per_s == 50 and up.efficiency == pytest.approx(2000 / 100 / 50)
    assert native.peak_flops_per_s == 1000 and native.ridge == 100 and native.attainable_flops_per_s == 1000
    s = roof_summary(roof.reset_index())
    assert s["ridge"] == 100 and s["upcast"] == ["upcast"]


def test_fp32_sdpa_on_tensor_cores_is_held_to_a_third_of_the_tf32_roof():
    from vitspeed.roofline import TF32, TF32X3, roof_compute_dtype

    # the memory-efficient kernel runs float32 on the tensor cores whatever the TF32 flags say, three TF32
    # products per float32 product
    assert roof_compute_dtype("cuda", "float32", "float32", "mem_efficient") == TF32X3
    assert roof_compute_dtype("cuda", "float32", "float32", "math") == "float32"
    assert roof_compute_dtype("cuda", "bfloat16", "bfloat16", "mem_efficient") == "bfloat16"
    assert roof_compute_dtype("cpu", "float32", "float32", "mem_efficient") == "float32"
    assert roof_compute_dtype("cuda", "float32", None, None) is None
    # PyTorch's CPU flash kernel runs its reduced-precision block products in MKL's float32 GEMM without AMX
    assert roof_compute_dtype("cpu", "bfloat16", "bfloat16", "flash_cpu", amx=False) == "float32"
    assert roof_compute_dtype("cpu", "float16", "float16", "flash_cpu", amx=False) == "float32"
    assert roof_compute_dtype("cpu", "bfloat16", "bfloat16", "flash_cpu", amx=True) == "bfloat16"
    assert roof_compute_dtype("cpu", "bfloat16", "bfloat16", None, amx=False) == "bfloat16"  # explicit matmuls
    ceil = [{"level": "ceiling", "attention": "matmul", "hardware": "gpu", "dtype": "float32", "flops_per_s": 50.0},
            {"level": "ceiling", "attention": "matmul", "hardware": "gpu", "dtype": TF32, "flops_per_s": 400.0},
            {"level": "ceiling", "attention": "copy", "hardware": "gpu", "dtype": "float32", "bytes_per_s": 10.0}]
    base = {"level": "core", "hardware": "gpu", "dtype": "float32", "tokens": 100, "elementwise": 0, "macs": 1000,
            "bytes_moved": 20, "median_ms": 10_000.0}
    cores = [{**base, "attention": "softmax", "compute_dtype": TF32X3},
             {**base, "attention": "relu", "compute_dtype": "float32"}]
    roof = roofline(pd.DataFrame(ceil + cores)).set_index("attention")
    assert roof.loc["softmax", "peak_flops_per_s"] == pytest.approx(400 / 3)
    assert roof.loc["softmax", "roof_dtype"] == TF32X3
    assert roof.loc["relu", "peak_flops_per_s"] == 50 and roof.loc["relu", "roof_dtype"] == "float32"


def test_other_roofs_text_gives_the_verdict_of_every_other_hardware():
    from vitspeed.roofline import other_roofs_text

    df = _frame()
    df["tokens"] = 100
    df["batch_size"] = 1
    df["family"] = ["ceiling"] * 3 + ["linear", "quadratic", "linear", "linear"]
    df.loc[df.attention == "b", "attention"] = "softmax"  # the reference the sentence names
    # hw: a is memory-bound at 50% of its roof (5 of 10 FLOP/s), softmax compute-bound at 50% (50 of 100)
    assert other_roofs_text(df, "here") == (
        " By the roofline, on hw in float32 at 100 tokens 1 of the 2 cores are memory-bound (ridge 10.0 FLOPs per "
        "byte), fused softmax runs at 50% of its roof and the linear cores at 50 to 50% of theirs.")
    assert other_roofs_text(df, "hw") == ""
    assert other_roofs_text(df, "here", batch_size=64) == ""
