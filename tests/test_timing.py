"""Tests for vitspeed.timing: the latency harness, output checks, model benchmark and OOM-tolerant sweep."""
import math
import time
import types
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import vitspeed.timing
from vitspeed.results import config_key
from vitspeed.timing import (NonFiniteOutput, SweepIncomplete, Timing, benchmark_model, check_output, check_result,
                             deadline_from_env, is_oom_error, measure, sweep)


def test_timing_summary_in_seconds_and_row_in_ms():
    t = Timing([0.004, 0.001, 0.003, 0.002, 0.005])
    assert t.n == 5
    assert t.median_s == pytest.approx(0.003)
    assert t.iqr_s == pytest.approx(0.002)  # q75 0.004 - q25 0.002
    assert t.mean_s == pytest.approx(0.003)
    assert t.p10_s == pytest.approx(0.0014)
    assert t.p90_s == pytest.approx(0.0046)
    skewed = Timing([0.001, 0.001, 0.001, 0.001, 0.010])  # one slow sample: the median ignores it
    assert skewed.median_s == pytest.approx(0.001) and skewed.mean_s == pytest.approx(0.0028)
    row = t.row()
    assert row["median_ms"] == pytest.approx(3.0)
    assert row["iqr_ms"] == pytest.approx(2.0)
    assert row["p10_ms"] == pytest.approx(1.4)
    assert row["p90_ms"] == pytest.approx(4.6)
    assert row["n"] == 5
    with pytest.raises(ValueError, match="at least one sample"):
        Timing([])


def test_harness_measures_real_work(one_thread):
    gen = torch.Generator().manual_seed(0)
    a_big, b_big = torch.randn(512, 512, generator=gen), torch.randn(512, 512, generator=gen)
    a_small, b_small = torch.randn(64, 64, generator=gen), torch.randn(64, 64, generator=gen)
    res = measure({"big": lambda: a_big @ b_big, "small": lambda: a_small @ b_small}, "cpu",
                  warmup=2, repeats=7)
    assert set(res) == {"big", "small"}
    for t in res.values():
        assert t.n == 7 and len(t.samples) == 7
        assert t.median_s > 0 and all(s > 0 for s in t.samples)
        assert t.iqr_s >= 0
        assert t.p10_s <= t.median_s <= t.p90_s
    # 512^3 vs 64^3 multiply-adds: 512x more work; demand a clear margin, not the full ratio.
    assert res["big"].median_s > 10 * res["small"].median_s
    # a fast callable is batched into samples of >= ~1 ms; a slow one is not
    assert res["small"].calls_per_sample > 1
    # calibrated to >= 1 ms per sample; a calibration made while the machine was busier can leave the
    # timed samples a few times shorter, so demand a fifth of that, still far above one call
    assert res["small"].median_s * res["small"].calls_per_sample >= 0.2e-3


def test_page_faults_per_call_count_fresh_pages_not_reused_ones():
    import mmap
    import sys

    if sys.platform == "win32":
        pytest.skip("no getrusage")
    size = 8 * 2**20
    kept = bytearray(size)

    def fresh():  # new anonymous pages each call: the kernel faults every page in on first touch
        m = mmap.mmap(-1, size)
        for i in range(0, size, mmap.PAGESIZE):
            m[i] = 1
        m.close()

    def reuse():  # the same pages every call: no faults once warm
        for i in range(0, size, mmap.PAGESIZE):
            kept[i] = 1

    res = measure({"fresh": fresh, "reuse": reuse}, "cpu", warmup=1, repeats=3)
    # every page of the mapping (huge pages, where the kernel uses them, would give fewer: 4 per 8 MiB)
    assert res["fresh"].page_faults_per_call >= 4
    assert res["reuse"].page_faults_per_call < 1
    assert res["fresh"].row()["page_faults_per_call"] == res["fresh"].page_faults_per_call
    assert Timing([0.001]).page_faults_per_call is None  # not measured: unknown, not zero


def _switches(log):
    return sum(1 for a, b in zip(log, log[1:]) if a != b)


def test_interleave_runs_all_alternately():
    log = []
    fns = {name: (lambda name=name: log.append(name)) for name in "ABC"}
    res = measure(fns, "cpu", warmup=1, repeats=6, min_sample_s=0.0)
    assert all(res[n].n == 6 for n in "ABC")
    assert {"A", "B", "C"} <= set(log)
    timed = log[-18:]  # the six rounds of one call each
    assert sorted(timed) == sorted("ABC" * 6)
    assert _switches(timed) == 17  # never the same callable twice in a row
    assert timed[0::3] == list("ABCABC")  # each round starts one later: every callable leads as often

    log.clear()
    measure(fns, "cpu", warmup=1, repeats=6, min_sample_s=0.0, interleave=False)
    assert log[-18:] == list("A" * 6 + "B" * 6 + "C" * 6)


def test_min_time_extends_sampling():
    res = measure({"sleep": lambda: time.sleep(0.002)}, "cpu", warmup=0, repeats=2, min_time_s=0.04)
    assert res["sleep"].n > 2
    assert sum(res["sleep"].samples) >= 0.04
    assert res["sleep"].median_s >= 0.002


def test_measure_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least one callable"):
        measure({}, "cpu")
    with pytest.raises(ValueError, match="repeats"):
        measure({"a": lambda: None}, "cpu", repeats=0)
    with pytest.raises(ValueError, match="valid choices"):
        measure({"a": lambda: None}, "tpu")
    with pytest.raises(ValueError, match="flush_cache=True needs a CUDA device"):
        measure({"a": lambda: None}, "cpu", flush_cache=True)


def test_measure_runs_under_inference_mode():
    seen = []
    measure({"a": lambda: seen.append(torch.is_inference_mode_enabled())}, "cpu", warmup=0, repeats=2,
            min_sample_s=0.0)
    assert seen and all(seen)


def test_check_output():
    check_output(lambda: torch.ones(3))
    check_output(lambda: (torch.ones(2), {"x": torch.zeros(1)}), shape=(2,))
    check_output(lambda: torch.arange(3))  # integer outputs cannot be non-finite
    with pytest.raises(NonFiniteOutput, match="non-finite") as err:
        check_output(lambda: torch.tensor([1.0, float("nan")]), name="core")
    assert err.value.name == "core" and isinstance(err.value, ValueError)
    with pytest.raises(ValueError, match="non-finite"):
        check_output(lambda: (torch.ones(2), [torch.tensor([float("inf")])]))
    with pytest.raises(ValueError, match="shape"):
        check_output(lambda: torch.ones(2, 3), shape=(2, 4))


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.conv(x).relu().mean((2, 3)))


class _Broken(_Tiny):
    def forward(self, x):
        return super().forward(x) * float("nan")


def test_benchmark_model_row():
    old = torch.get_num_threads()
    row = benchmark_model(_Tiny(), (3, 16, 16), batch_size=2, threads=1, warmup=1, repeats=3)
    assert torch.get_num_threads() == old  # thread setting restored
    assert row["threads"] == 1 and row["device"] == "cpu" and row["dtype"] == "float32"
    assert row["batch_size"] == 2 and row["input_shape"] == "3x16x16" and row["status"] == "ok"
    assert row["n"] == 3 and row["median_ms"] > 0 and row["iqr_ms"] >= 0
    assert row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
    assert row["throughput"] == pytest.approx(2 / (row["median_ms"] / 1e3))
    assert row["peak_mem_mb"] is not None and row["peak_mem_mb"] >= 0
    assert row["mem_method"] == "cpu_tensor_peak"
    assert row["tf32"] is None


def test_benchmark_model_bf16_and_channels_last():
    model = _Tiny()
    row = benchmark_model(model, (3, 8, 8), dtype="bf16", threads=1, warmup=0, repeats=2, channels_last=True)
    assert row["dtype"] == "bfloat16" and row["channels_last"] is True
    assert next(model.parameters()).dtype is torch.bfloat16  # cast with model.to, not autocast


def test_benchmark_model_bad_input():
    with pytest.raises(ValueError, match="float16"):
        benchmark_model(_Tiny(), (3, 8, 8), dtype="fp16")
    with pytest.raises(ValueError, match="cuda_graph"):
        benchmark_model(_Tiny(), (3, 8, 8), cuda_graph=True)
    with pytest.raises(ValueError, match="batch_size"):
        benchmark_model(_Tiny(), (3, 8, 8), batch_size=0)
    with pytest.raises(ValueError, match="non-finite"):
        benchmark_model(_Broken(), (3, 8, 8), threads=1, repeats=2)


def test_is_oom_error():
    assert is_oom_error(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_oom_error(RuntimeError("CUDA error: out of memory"))
    assert is_oom_error(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                     "can't allocate memory: you tried to allocate 1 bytes. Error code 12 "
                                     "(Cannot allocate memory)"))
    assert is_oom_error(MemoryError())
    assert not is_oom_error(RuntimeError("shape mismatch"))
    assert not is_oom_error(ValueError("out of memory"))


def test_sweep_turns_oom_into_row_and_goes_on():
    calls = []

    def run_one(cfg):
        calls.append(cfg["size"])
        if cfg["size"] == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        if cfg["size"] == 3:
            raise RuntimeError("CUDA out of memory (simulated)")
        if cfg["size"] == 4:
            raise MemoryError("simulated")
        return {"median_ms": float(cfg["size"])}

    configs = [{"size": s, "model": "m"} for s in (1, 2, 3, 4, 5)]
    rows = list(sweep(configs, run_one, progress=False))
    assert calls == [1, 2, 3, 4, 5]
    assert [r["status"] for r in rows] == ["ok", "oom", "oom", "oom", "ok"]
    assert rows[0] == {"size": 1, "model": "m", "median_ms": 1.0, "status": "ok"}
    assert "out of memory" in rows[1]["error"].lower() and rows[1]["size"] == 2
    assert "median_ms" not in rows[1]


def test_sweep_propagates_other_errors():
    def run_one(cfg):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        list(sweep([{"size": 1}], run_one, progress=False))


def test_sweep_skips_done_keys():
    calls = []
    configs = [{"size": s, "flag": s % 2 == 0, "opt": None} for s in (1, 2, 3)]
    fields = ["size", "flag", "opt"]
    # keys as they come back from a CSV: all text
    done = {config_key({"size": "2", "flag": "True", "opt": ""}, fields)}
    rows = list(sweep(configs, lambda c: calls.append(c["size"]) or {}, done=done, progress=False,
                      key_fields=fields))
    assert calls == [1, 3]
    assert [r["size"] for r in rows] == [1, 3]
    # default key: all fields of the config, sorted by name
    done = {config_key(configs[0], sorted(configs[0]))}
    calls.clear()
    list(sweep(configs, lambda c: calls.append(c["size"]) or {}, done=done, progress=False))
    assert calls == [2, 3]


def test_sweep_starts_nothing_after_its_deadline(monkeypatch):
    calls = []
    configs = [{"size": s} for s in (1, 2, 3)]
    now = [100.0]  # a fake wall clock: only the first configuration advances it, past the deadline
    monkeypatch.setattr(vitspeed.timing, "time", types.SimpleNamespace(time=lambda: now[0]))

    def run_one(cfg):
        calls.append(cfg["size"])
        now[0] += 0.3 if cfg["size"] == 1 else 0
        return {}

    rows = []
    with pytest.raises(SweepIncomplete, match="2 of 3 configurations left"):
        for row in sweep(configs, run_one, progress=False, deadline=100.15):
            rows.append(row)
    # the configuration running when the deadline passed finished and was yielded; no other started
    assert calls == [1] and [r["size"] for r in rows] == [1]
    # done configurations do not count as left, and a sweep with nothing left never raises
    done = {config_key(c, ["size"]) for c in configs}
    assert list(sweep(configs, run_one, done=done, progress=False, deadline=0.0)) == []


def test_deadline_from_env(monkeypatch):
    monkeypatch.delenv("VITSPEED_DEADLINE", raising=False)
    assert deadline_from_env() is None
    monkeypatch.setenv("VITSPEED_DEADLINE", "1700000000.5")
    assert deadline_from_env() == 1700000000.5
    monkeypatch.setenv("VITSPEED_DEADLINE", "soon")
    with pytest.raises(ValueError, match="seconds since the epoch"):
        deadline_from_env()


def test_timing_row_is_in_milliseconds_and_finite():
    t = measure({"a": lambda: torch.ones(8).sum()}, "cpu", warmup=0, repeats=3)["a"]
    row = t.row()
    assert set(row) == {"median_ms", "iqr_ms", "p10_ms", "p90_ms", "mean_ms", "n", "calls_per_sample",
                        "page_faults_per_call"}
    assert all(math.isfinite(v) for v in row.values())
    assert row["n"] == 3
    assert row["median_ms"] == pytest.approx(1e3 * float(np.median(t.samples)))
    assert row["mean_ms"] == pytest.approx(1e3 * float(np.mean(t.samples)))
    assert row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]


def test_progress_bars_respect_tqdm_disable(monkeypatch):
    from vitspeed.timing import _progress_bar

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not _progress_bar(3, "x", enabled=True).disable
    assert _progress_bar(3, "x", enabled=False).disable
    monkeypatch.setenv("TQDM_DISABLE", "1")  # what the runner sets for executed chapters
    assert _progress_bar(3, "x", enabled=True).disable


def test_set_threads_validates_warns_on_oversubscription_and_returns_the_old_count():
    from vitspeed.timing import set_threads, usable_cpus

    before = torch.get_num_threads()
    with pytest.raises(ValueError, match="threads must be at least 1"):
        set_threads(0)
    assert torch.get_num_threads() == before
    try:
        assert set_threads(1) == before and torch.get_num_threads() == 1
        with pytest.warns(RuntimeWarning, match=f"exceeds the {usable_cpus()} CPUs"):
            assert set_threads(usable_cpus() + 1) == 1
        assert torch.get_num_threads() == usable_cpus() + 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            set_threads(usable_cpus())  # every usable CPU: no warning
    finally:
        torch.set_num_threads(before)


def test_benchmark_model_rejects_zero_threads():
    with pytest.raises(ValueError, match="threads must be at least 1"):
        benchmark_model(nn.Linear(4, 4), (4,), threads=0, warmup=1, repeats=1)


def test_cpu_peak_memory_counts_live_tensors_whatever_ran_before():
    from vitspeed.timing import forward_peak_memory

    cpu = torch.device("cpu")
    x = torch.randn(512, 1024)  # 2 MiB, allocated before the call: not counted

    def two_alive():
        a = x * 2  # 2 MiB
        b = a + 1  # 2 MiB more while a is alive
        del a
        return b.sum()

    def one_at_a_time():
        return (x * 2).sum() + (x + 1).sum()

    out, both, method = forward_peak_memory(two_alive, cpu)
    assert method == "cpu_tensor_peak" and float(out) == pytest.approx(float((x * 2 + 1).sum()), rel=1e-4)
    assert 4.0 <= both < 4.1  # two 2 MiB buffers alive at once, plus the scalars
    _, single, _ = forward_peak_memory(one_at_a_time, cpu)
    assert 2.0 <= single < 2.1
    big = torch.empty(64 * 2**20, dtype=torch.uint8)  # the heap grows and keeps this once freed
    del big
    assert forward_peak_memory(two_alive, cpu)[1] == pytest.approx(both)


def test_samples_text_round_trips_in_milliseconds():
    from vitspeed.timing import parse_samples, samples_text

    t = Timing([0.0012345, 0.002, 0.0015])
    assert samples_text(t) == "1.234 2 1.5"
    assert parse_samples(samples_text(t)) == [1.234, 2.0, 1.5]
    assert parse_samples(float("nan")) == [] and parse_samples("") == [] and parse_samples(None) == []


def test_paired_ratio_cancels_a_drift_both_callables_saw():
    from vitspeed.timing import paired_ratio

    drift = [1.0, 1.3, 0.9, 1.6, 1.1, 1.25, 0.95]  # the machine's speed, round by round
    fast = [10.0 * d for d in drift]
    slow = [11.0 * d for d in drift]
    ratio, spread = paired_ratio(slow, fast)
    assert ratio == pytest.approx(1.1) and spread == pytest.approx(0.0, abs=1e-12)
    # each median alone spreads with the drift: the unpaired rule would call 10% a tie here
    t_fast, t_slow = Timing([x / 1e3 for x in fast]), Timing([x / 1e3 for x in slow])
    assert 0.5 * (t_fast.iqr_s / t_fast.median_s + t_slow.iqr_s / t_slow.median_s) > 0.1
    # only the rounds both took part in; too few rounds give nan
    ratio, _ = paired_ratio(slow + [99.0], fast)
    assert ratio == pytest.approx(1.1)
    assert all(math.isnan(x) for x in paired_ratio([1.0, 2.0], [1.0, 2.0]))


def test_check_result_checks_an_output_already_computed():
    check_result({"logits": torch.ones(2, 3)}, name="m", shape=(2, 3))
    with pytest.raises(NonFiniteOutput, match="output of m contains 1 non-finite"):
        check_result((torch.tensor([1.0, float("nan")]),), name="m")
    with pytest.raises(ValueError, match=r"output of m has shape \(2, 3\), expected \(3, 2\)"):
        check_result(torch.ones(2, 3), name="m", shape=(3, 2))
