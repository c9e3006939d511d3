"""Shared comparison machinery: interleaved model/core timing, implied maps, approximation error."""
import math

import numpy as np
import pytest
import torch

from vitspeed.studies.compare import approximation, candidate, compare_cores, compare_models, implied_attention
from vitspeed.timing import parse_samples


def test_implied_attention_of_softmax_is_the_softmax_map():
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 2, 10, 8, generator=g, dtype=torch.float64) for _ in range(2))
    expected = (q @ k.transpose(-1, -2) / math.sqrt(8)).softmax(-1)
    torch.testing.assert_close(implied_attention("softmax", q, k), expected)


def test_approximation_of_the_reference_itself_is_exact_and_entropies_are_bounded():
    rows = approximation([candidate("explicit", attention="softmax_explicit"),
                          candidate("relu", attention="linear_relu")], tokens=16, head_dim=8, heads=2)
    assert rows[0]["rel_error"] < 1e-12
    assert rows[1]["rel_error"] > 1e-3
    for r in rows:
        assert 0 < r["row_entropy"] <= r["uniform_entropy"] + 1e-9


def test_compare_cores_times_every_candidate_and_counts_flops():
    rows = compare_cores([candidate("fused", attention="softmax"), candidate("relu", attention="linear_relu")],
                         tokens=32, head_dim=8, heads=2, warmup=1, repeats=2)
    assert [r["label"] for r in rows] == ["fused", "relu"]
    for r in rows:
        assert r["status"] == "ok" and r["median_ms"] > 0 and r["macs"] > 0
    assert rows[0]["macs"] == 2 * 2 * 32 * 32 * 8  # B h N N (d + dv)
    # bytes of one call in the timed dtype: fused SDPA reads q, k, v and writes the output, no more
    assert rows[0]["bytes_moved"] == 4 * 2 * 32 * 8 * 4
    assert rows[1]["bytes_moved"] > rows[0]["bytes_moved"]
    assert rows[0]["sdpa_backend"] == "flash_cpu" and rows[1]["sdpa_backend"] == ""
    assert rows[0]["compute_dtype"] == rows[1]["compute_dtype"] == "float32"
    # no CUDA-graph timing on the CPU, and no tf32 flag outside CUDA float32
    assert "graph_median_ms" not in rows[0] and rows[0]["tf32"] is None
    # the raw samples (ms per call, one per round) travel with the row, for round-by-round comparisons
    for r in rows:
        samples = parse_samples(r["samples_ms"])
        assert len(samples) == r["n"] and min(samples) > 0
        # samples are kept to four significant digits; their median is the row's median
        assert float(np.median(samples)) == pytest.approx(r["median_ms"], rel=1e-3)
    # one interleaved measurement, one timing group; another measurement gets another
    assert rows[0]["timing_group"] == rows[1]["timing_group"] and len(rows[0]["timing_group"]) == 8
    again = compare_cores([candidate("fused", attention="softmax")], tokens=32, head_dim=8, heads=2, warmup=1,
                          repeats=2)
    assert again[0]["timing_group"] != rows[0]["timing_group"]


def test_cuda_graph_timing_needs_cuda():
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device.*valid choices"):
        compare_cores([candidate("fused", attention="softmax")], tokens=16, head_dim=8, heads=2, cuda_graph=True)
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        compare_models([candidate("a", model="deit_tiny_patch16_224")], img_size=32, cuda_graph=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch1_rows_carry_graph_replay_latency():
    rows = compare_cores([candidate("fused", attention="softmax"), candidate("relu", attention="linear_relu")],
                         tokens=256, head_dim=64, heads=6, device="cuda", dtype="bfloat16", warmup=2, repeats=5)
    for r in rows:
        assert r["status"] == "ok" and r["graph_median_ms"] > 0 and "graph_error" not in r
    assert rows[0]["sdpa_backend"] in {"flash", "cudnn", "mem_efficient"}


def test_compare_models_records_out_of_memory_per_candidate(oom_on_call):
    oom_on_call(1)
    rows = compare_models([candidate("a", model="deit_tiny_patch16_224", attention="jaccard"),
                           candidate("b", model="deit_tiny_patch16_224")], img_size=32, warmup=1, repeats=2)
    assert rows[0]["status"] == "oom" and "out of memory" in rows[0]["error"]
    assert rows[1]["status"] == "ok" and rows[1]["median_ms"] > 0
    assert rows[1]["params_m"] == pytest.approx(5.5, abs=0.3)


def test_graph_timing_logic_records_replays_and_capture_failures(monkeypatch):
    # the CUDA-graph branch of the comparison, driven on the CPU: capture is faked, timing is real
    import vitspeed.studies.compare as compare
    import vitspeed.timing as timing

    def fake_capture(fn, dev):
        if fn is fns["bad"]:
            raise RuntimeError("operation not permitted when stream is capturing\nmore detail")
        return fn, None

    monkeypatch.setattr(compare, "cuda_graph_callable", fake_capture)
    monkeypatch.setattr(timing, "GRAPHS_DISABLED", [])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    x = torch.randn(64, 64)
    fns = {"good": lambda: x @ x, "bad": lambda: x + 1, "later": lambda: x * 2}
    rows = {"good": {}, "bad": {}, "later": {}}
    with pytest.warns(RuntimeWarning, match="graph replay is off for the rest of this process"):
        compare._time_all(fns, rows, torch.device("cpu"), warmup=1, repeats=3, items_per_call=1, graphs=True)
    assert rows["good"]["graph_median_ms"] > 0 and rows["good"]["median_ms"] > 0
    assert rows["bad"]["graph_error"] == "operation not permitted when stream is capturing"
    assert "graph_median_ms" not in rows["bad"] and rows["bad"]["status"] == "ok"  # eager timing kept
    # a failed capture may leave the allocator mid-capture: nothing more is captured, no cache is emptied after it
    assert rows["later"]["graph_error"].startswith("not captured: an earlier capture failed (bad:")
    assert rows["later"]["median_ms"] > 0 and len(emptied) == 1
    rows2 = {"good": {}}
    compare._time_all({"good": fns["good"]}, rows2, torch.device("cpu"), warmup=1, repeats=3, items_per_call=1,
                      graphs=True)
    assert "graph_median_ms" not in rows2["good"] and rows2["good"]["graph_error"].startswith("not captured")
    # calls longer than GRAPH_MAX_MS are not captured at all: launch overhead is negligible there
    monkeypatch.setattr(timing, "GRAPHS_DISABLED", [])
    monkeypatch.setattr(compare, "GRAPH_MAX_MS", 0.0)
    rows3 = {"good": {}}
    compare._time_all({"good": fns["good"]}, rows3, torch.device("cpu"), warmup=1, repeats=3, items_per_call=1,
                      graphs=True)
    assert "graph_median_ms" not in rows3["good"] and "launch overhead negligible" in rows3["good"]["graph_error"]
    assert not timing.GRAPHS_DISABLED  # a skipped capture is not a failed one


def test_a_candidate_out_of_memory_while_timed_is_dropped_and_the_rest_timed():
    import vitspeed.studies.compare as compare

    x = torch.randn(32, 32)
    calls = {"big": 0}

    def big():
        calls["big"] += 1
        if calls["big"] > 1:  # the memory check's single call fits; warm-up does not
            raise RuntimeError("CUDA out of memory. Tried to allocate 50.00 GiB")
        return x

    fns = {"small": lambda: x @ x, "big": big}
    rows = {"small": {"label": "small", "peak_mem_mb": 1.0}, "big": {"label": "big", "peak_mem_mb": 2.0}}
    big()
    compare._time_all(fns, rows, torch.device("cpu"), warmup=2, repeats=3, items_per_call=1)
    assert rows["big"]["status"] == "oom" and "out of memory" in rows["big"]["error"]
    assert "peak_mem_mb" not in rows["big"] and "big" not in fns
    assert rows["small"]["status"] == "ok" and rows["small"]["median_ms"] > 0


def test_run_sweep_measures_fp32_as_ieee_fp32_and_records_it(results_dir):
    import json

    from vitspeed.studies.compare import run_sweep

    seen = []

    def group(cfg):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return [{"x": cfg["x"], "value": 1.0}]

    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default: convolutions may use TF32
    try:
        df = run_sweep("unit", [{"x": 1}, {"x": 2}], group, key_fields=("x",), run_id="t")
        assert torch.backends.cudnn.allow_tf32 is True  # restored afterwards
    finally:
        torch.backends.cudnn.allow_tf32 = old
    assert seen == [(False, False), (False, False)] and list(df.x) == [1, 2]
    env = json.loads(next((results_dir / "unit").glob("*__t.env.json")).read_text())
    assert env["tf32_matmul"] is False and env["tf32_cudnn"] is False


def test_compiled_candidates_are_timed_beside_their_eager_twins():
    cands = [candidate("softmax", attention="softmax"), candidate("softmax+c", attention="softmax", compile=True),
             candidate("relu", attention="linear_relu"), candidate("relu+c", attention="linear_relu", compile=True)]
    rows = {r["label"]: r for r in compare_cores(cands, tokens=16, head_dim=8, heads=2, warmup=0, repeats=2)}
    assert [rows[k]["compiled"] for k in ("softmax", "softmax+c", "relu", "relu+c")] == [False, True, False, True]
    for label in ("softmax+c", "relu+c"):
        r = rows[label]
        assert r["status"] == "ok" and r["median_ms"] > 0 and r["compile_s"] > 0
        assert r["compile_rel_err"] < 1e-5 and r["compile_cache_hits"] >= 0
        assert "bytes_moved" not in r  # the eager ops' traffic is not what a fused loop moves
        assert r["macs"] == rows[label[:-2]]["macs"]  # the same computation, counted on the eager core
    assert rows["softmax+c"]["sdpa_backend"] == rows["softmax"]["sdpa_backend"] != ""  # read off the eager twin
    assert rows["relu"]["bytes_moved"] > 0 and "compile_s" not in rows["relu"]


def test_a_core_the_compiler_fails_on_is_recorded_and_the_rest_timed(monkeypatch):
    import vitspeed.studies.compare as compare
    from vitspeed.compiling import CompileFailed

    def fail(module, *inputs):
        raise CompileFailed(f"torch.compile failed for {type(module).__name__}: no C++ compiler")

    monkeypatch.setattr(compare, "compile_module", fail)
    cands = [candidate("softmax", attention="softmax"), candidate("relu+c", attention="linear_relu", compile=True)]
    with pytest.warns(RuntimeWarning, match="relu\\+c not timed"):
        rows = compare_cores(cands, tokens=16, head_dim=8, heads=2, warmup=0, repeats=1)
    assert rows[0]["status"] == "ok" and rows[0]["median_ms"] > 0
    assert rows[1]["status"] == "compile_error" and "no C++ compiler" in rows[1]["error"]
    assert "median_ms" not in rows[1]


def test_cores_without_compiled_candidates_have_no_compile_columns():
    (row,) = compare_cores([candidate("relu", attention="linear_relu")], tokens=16, head_dim=8, heads=2,
                           warmup=0, repeats=1)
    assert "compiled" not in row and "compile_s" not in row


def test_a_nonfinite_candidate_is_recorded_without_preparing_the_others_again(monkeypatch, nonfinite_on):
    import vitspeed.studies.compare as compare

    built = []
    real_build = compare.build_core

    def counting_build(name, **kw):
        built.append(name)
        return real_build(name, **kw)

    monkeypatch.setattr(compare, "build_core", counting_build)
    nonfinite_on("relu")
    rows = compare.compare_cores_finite([candidate("softmax", attention="softmax"),
                                         candidate("relu", attention="linear_relu")],
                                        tokens=16, head_dim=8, heads=2, warmup=0, repeats=1)
    assert [r["status"] for r in rows] == ["ok", "nonfinite"]
    assert rows[1]["macs"] > 0 and "non-finite" in rows[1]["error"] and "median_ms" not in rows[1]
    assert built == ["softmax", "linear_relu"]  # one pass: nothing rebuilt and timed again


def test_a_compiled_core_that_differs_from_eager_is_a_mismatch_not_a_timing(monkeypatch):
    import vitspeed.studies.compare as compare

    def wrong(module, *inputs):
        return (lambda *a: module(*a) * 1.5), {"compile_s": 0.1, "cache_hits": 0}

    monkeypatch.setattr(compare, "compile_module", wrong)
    rows = compare_cores([candidate("relu", attention="linear_relu"), candidate("relu+c", attention="linear_relu",
                                                                                compile=True)],
                         tokens=16, head_dim=8, heads=2, warmup=0, repeats=1)
    assert rows[0]["status"] == "ok" and rows[1]["status"] == "mismatch" and "differs from eager" in rows[1]["error"]


def test_a_compiled_core_failing_while_timed_is_dropped_and_the_rest_timed(monkeypatch):
    import vitspeed.studies.compare as compare

    def flaky(module, *inputs):
        calls = []

        def fn(*a):
            calls.append(1)
            if len(calls) > 4:  # fine while prepared, then it "recompiles" under the timing stance
                raise RuntimeError("Detected recompile when torch.compile stance is 'fail_on_recompile'")
            return module(*a)
        return fn, {"compile_s": 0.1, "cache_hits": 0}

    monkeypatch.setattr(compare, "compile_module", flaky)
    with pytest.warns(RuntimeWarning, match="relu\\+c failed while being timed: Detected recompile"):
        rows = compare_cores([candidate("relu", attention="linear_relu"),
                              candidate("relu+c", attention="linear_relu", compile=True)],
                             tokens=16, head_dim=8, heads=2, warmup=2, repeats=2)
    assert rows[0]["status"] == "ok" and rows[0]["median_ms"] > 0
    assert rows[1]["status"] == "compile_error" and "median_ms" not in rows[1]


@pytest.mark.skipif(not hasattr(torch.compiler, "set_stance"), reason="set_stance needs torch >= 2.6")
def test_compiled_candidates_are_timed_where_compiling_again_is_refused(monkeypatch):
    import vitspeed.studies.compare as compare
    from vitspeed.compiling import compile_module

    probe, _ = compile_module(torch.nn.ReLU(), torch.randn(33))
    other = torch.randn(35)
    refused = []
    real = compare.measure

    def checking(fns, **kw):
        try:
            with torch.inference_mode():
                probe(other)  # a new shape: compiling it must be refused while timing
        except Exception as err:  # noqa: BLE001
            refused.append("recompil" in str(err).lower())
        return real(fns, **kw)

    monkeypatch.setattr(compare, "measure", checking)
    compare_cores([candidate("relu+c", attention="linear_relu", compile=True)], tokens=16, head_dim=8, heads=2,
                  warmup=0, repeats=1)
    assert refused == [True]


def test_the_warning_rule_reads_busy_cpus_and_an_odd_memory_system():
    from vitspeed.studies.compare import copy_deviates, too_busy

    assert too_busy(10.5) and not too_busy(10.0) and not too_busy(None) and not too_busy(float("nan"))
    assert copy_deviates(29.0, 40.0) and copy_deviates(54.0, 40.0)  # below 0.75x, above 1/0.75x
    assert not copy_deviates(31.0, 40.0) and not copy_deviates(52.0, 40.0)
    assert not copy_deviates(None, 40.0) and not copy_deviates(20.0, None) and not copy_deviates(float("nan"), 40.0)
