"""CUDA paths of the harness, run only where a GPU is visible (the H200 sessions): CUDA-event timing,
graph replay, half precisions, the SDPA kernel chosen, the environment record and the roofline
ceilings. On a CPU-only machine every test here is skipped."""
import pytest
import torch

from vitspeed.envinfo import environment_record, hardware_slug
from vitspeed.models import create_model
from vitspeed.roofline import measure_ceilings
from vitspeed.studies.compare import candidate, compare_cores, compare_models
from vitspeed.timing import benchmark_model, cuda_graph_callable, measure
from vitspeed.traffic import sdpa_backend

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_cuda_event_timing_sees_work_grow():
    a = torch.randn(4096, 4096, device="cuda")
    b = torch.randn(1024, 1024, device="cuda")
    t = measure({"big": lambda: a @ a, "small": lambda: b @ b}, "cuda", warmup=3, repeats=10)
    assert t["big"].median_s > 4 * t["small"].median_s > 0  # 64x the FLOPs


def test_l2_flush_makes_a_cache_resident_read_slower():
    # 16 MiB fits in the H200's L2 (60 MB in two halves, which may each hold a copy of the same lines):
    # re-reading it is a cache hit unless the cache is flushed first
    x = torch.randn(4 * 2**20, device="cuda")
    warm = measure({"sum": lambda: x.sum()}, "cuda", warmup=3, repeats=30, flush_cache=False)["sum"]
    cold = measure({"sum": lambda: x.sum()}, "cuda", warmup=3, repeats=30, flush_cache=True)["sum"]
    assert cold.median_s > warm.median_s > 0


def test_graph_replay_reproduces_the_eager_output():
    core_in = torch.randn(1, 6, 256, 64, device="cuda", dtype=torch.bfloat16)
    fn = lambda: torch.nn.functional.scaled_dot_product_attention(core_in, core_in, core_in)  # noqa: E731
    replay, static_out = cuda_graph_callable(fn, "cuda")
    replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(static_out, fn())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_models_run_and_graph_replay_in_every_precision(dtype):
    model = create_model("deit_tiny_patch16_224", attention="linear_relu")
    row = benchmark_model(model, (3, 224, 224), device="cuda", dtype=dtype, warmup=2, repeats=5, cuda_graph=True)
    assert row["status"] == "ok" and row["median_ms"] > 0 and row["cuda_graph"] is True
    assert row["tf32"] == (False if dtype == "float32" else None)  # strict fp32: no TF32 in matmuls or convolutions


def test_batch1_comparisons_carry_graph_timings_and_the_sdpa_kernel(monkeypatch):
    import vitspeed.studies.compare as compare

    monkeypatch.setattr(compare, "GRAPH_MAX_MS", float("inf"))  # capture whatever the eager time
    rows = compare_models([candidate("fused", model="deit_tiny_patch16_224", attention="softmax"),
                           candidate("relu", model="deit_tiny_patch16_224", attention="linear_relu")],
                          device="cuda", dtype="bfloat16", warmup=2, repeats=5)
    for r in rows:
        assert r["status"] == "ok" and r["graph_median_ms"] > 0, r.get("graph_error")
    assert rows[0]["sdpa_backend"] in {"flash", "cudnn", "mem_efficient"} and rows[1]["sdpa_backend"] == ""
    cores = compare_cores([candidate("fused", attention="softmax")], tokens=1024, device="cuda", dtype="float16",
                          warmup=2, repeats=5, batch_size=2)
    assert "graph_median_ms" not in cores[0]  # batch 2: throughput, no graph replay by default
    assert cores[0]["bytes_moved"] == 4 * 2 * 6 * 1024 * 64 * 2
    assert cores[0]["compute_dtype"] == "float16"  # placed under the float16 roof; an upcasting core under float32's


def test_sdpa_kernel_follows_the_precision():
    q = torch.randn(1, 6, 1024, 64, device="cuda", dtype=torch.bfloat16)
    assert sdpa_backend(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)) in {"flash", "cudnn"}
    q32 = q.float()
    # flash has no fp32 kernel: fp32 goes to the memory-efficient (or math) backend
    assert sdpa_backend(lambda: torch.nn.functional.scaled_dot_product_attention(q32, q32, q32)) in {
        "mem_efficient", "math", "cudnn"}


def test_environment_record_names_the_gpu():
    env = environment_record("cuda", "bfloat16")
    assert env["cuda_available"] and env["gpu_name"] and env["gpu_memory_gb"] > 0
    slug = hardware_slug(env)
    assert slug.startswith("cuda-") and slug != "cuda-unknown-gpu"


def test_ceilings_are_those_of_a_modern_gpu():
    rows = {r["attention"]: r for r in measure_ceilings("cuda", "bfloat16", warmup=3, repeats=10)}
    # any data-centre GPU since Volta: > 50 TFLOP/s bf16-or-fp16 tensor cores, > 500 GB/s copy
    assert rows["matmul"]["flops_per_s"] > 50e12
    assert rows["copy"]["bytes_per_s"] > 500e9


def test_elu_kernel_runs_elu_on_cuda_and_bf16_linear_cores_multiply_in_float32():
    from vitspeed.attention import build_core
    from vitspeed.traffic import aten_kernels, trace_traffic

    q, k, v = (torch.randn(1, 6, 256, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    core = build_core("linear_elu", 64, 6).cuda()
    assert "aten::elu" in aten_kernels(lambda: core(q, k, v))  # 'auto': two kernels on CUDA, not the CPU's four
    assert trace_traffic(lambda: core(q, k, v)).product_dtype == "float32"  # under the float32 roof
    fused = build_core("softmax", 64, 6).cuda()
    assert trace_traffic(lambda: fused(q, k, v)).product_dtype == "bfloat16"


def test_fp32_fused_softmax_on_tensor_cores_is_placed_under_the_3xtf32_roof():
    from vitspeed.roofline import TF32, TF32X3

    rows = {(r["attention"], r["dtype"]): r for r in measure_ceilings("cuda", "float32", warmup=2, repeats=5)}
    assert rows[("matmul", TF32)]["tf32"] is True and rows[("matmul", "float32")]["tf32"] is False
    assert rows[("matmul", TF32)]["flops_per_s"] > rows[("matmul", "float32")]["flops_per_s"]
    core = compare_cores([candidate("fused", attention="softmax")], tokens=1024, device="cuda", dtype="float32",
                         warmup=1, repeats=3, batch_size=2)[0]
    assert core["compute_dtype"] == (TF32X3 if core["sdpa_backend"] == "mem_efficient" else "float32")


def test_graph_replay_is_skipped_for_calls_that_are_not_launch_bound(monkeypatch):
    import vitspeed.studies.compare as compare

    monkeypatch.setattr(compare, "GRAPH_MAX_MS", 0.0)
    row = compare_cores([candidate("fused", attention="softmax")], tokens=256, device="cuda", dtype="bfloat16",
                        warmup=1, repeats=3)[0]
    assert "graph_median_ms" not in row and "launch overhead negligible" in row["graph_error"]


def test_compiled_cores_run_on_cuda_in_bfloat16_and_match_eager():
    # Inductor generates Triton kernels here: the gpu preset's compiled group needs them to work
    cands = [candidate("relu", attention="linear_relu"), candidate("relu+c", attention="linear_relu", compile=True),
             candidate("softmax+c", attention="softmax", compile=True)]
    rows = {r["label"]: r for r in compare_cores(cands, tokens=256, head_dim=64, heads=2, device="cuda",
                                                 dtype="bfloat16", warmup=1, repeats=3, cuda_graph=False)}
    for label in ("relu+c", "softmax+c"):
        assert rows[label]["status"] == "ok", rows[label].get("error")
        assert rows[label]["compile_rel_err"] < 2e-2 and rows[label]["median_ms"] > 0
    assert rows["softmax+c"]["sdpa_backend"] in ("flash", "cudnn", "mem_efficient")
