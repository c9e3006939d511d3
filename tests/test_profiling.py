"""vitspeed.profiling: perf report parsing, grouping by library routine, bad input, and (where perf can
sample) an end-to-end profile written to the results store."""
import json

import sys

import pandas as pd
import pytest

from vitspeed import profiling
from vitspeed.cli import main

REPORT = """# To display the perf.data header info, please use --header/--header-only options.
#
# Samples: 6K of event 'cpu-clock:ppp'
#
# Overhead|     Samples|Shared Object       |Symbol
 74.27% | 4527       |libtorch_cpu.so     |[.] mkl_blas_def_sgemm_kernel_0_zen
 12.37% | 754        |libtorch_cpu.so     |[.] at::native::(anonymous namespace)::cpu_flash_attention<c10::BFloat16>
 4.82%  | 294        |libtorch_cpu.so     |[.] mkl_blas_def_xgemm_bf16bf16f32
 2.53%  | 154        |libtorch_cpu.so     |[.] mkl_blas_def_sgemm_scopy_right4_bdz
 2.00%  | 122        |[JIT] tid 30168     |[.] 0x00007f62c985524b
 1.44%  | 88         |libgomp.so.1        |[.] 0x000000000001e02a
 1.00%  | 61         |libtorch_cpu.so     |[.] at::native::(anonymous namespace)::_vec_softmax_lastdim<float>
 0.10%  | 6          |[kernel.kallsyms]   |[k] do_syscall_64
 0.80%  | 49         |libpython3.11.so.1.0|[.] _PyEval_EvalFrameDefault
 0.50%  | 30         |cabcdefghijklmnopqrstuvwxyz012345.so|[.] cpp_fused_div_0
 0.19%  | 12         |libc.so.6           |[.] _int_malloc
"""


def test_parse_report_reads_every_sample_line_and_strips_the_marker():
    rep = profiling.parse_report(REPORT)
    assert len(rep) == 11
    assert rep.samples.sum() == 4527 + 754 + 294 + 154 + 122 + 88 + 61 + 6 + 49 + 30 + 12
    first = rep.iloc[0]
    assert (first.share_pct, first.samples, first.dso, first.symbol) == (
        74.27, 4527, "libtorch_cpu.so", "mkl_blas_def_sgemm_kernel_0_zen")
    assert rep.iloc[7].symbol == "do_syscall_64"  # the [k] marker is removed too


def test_parse_report_without_samples_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        profiling.parse_report("# only comments\n#\n")


def test_group_samples_puts_each_routine_in_its_first_matching_group():
    groups = profiling.group_samples(profiling.parse_report(REPORT)).set_index("group")
    assert groups.loc["MKL float32 GEMM", "samples"] == 4527 + 154  # the kernel and its packing copies
    assert groups.loc["MKL float32 GEMM", "top_symbol"] == "mkl_blas_def_sgemm_kernel_0_zen"
    assert groups.loc["MKL bfloat16 GEMM", "samples"] == 294
    assert groups.loc["fused-attention kernel loops", "samples"] == 754
    assert groups.loc["oneDNN JIT kernels", "samples"] == 122
    assert groups.loc["Inductor-generated code", "samples"] == 30
    assert groups.loc["PyTorch, other", "samples"] == 61
    assert groups.loc["OpenMP runtime", "samples"] == 88
    assert groups.loc["operating system", "samples"] == 6
    assert groups.loc["Python", "samples"] == 49
    assert groups.loc["other", "samples"] == 12
    assert groups.share_pct.sum() == pytest.approx(100.0)
    # listed in the order of GROUPS, empty groups left out
    names = [g.name for g in profiling.GROUPS]
    assert list(groups.index) == [n for n in names if n in groups.index]
    assert "MKL, other" not in groups.index


def test_group_samples_shares_are_of_all_samples():
    rep = pd.DataFrame({"share_pct": [0, 0], "samples": [3, 1], "dso": ["libgomp.so.1", "x.so"],
                        "symbol": ["a", "b"]})
    g = profiling.group_samples(rep).set_index("group")
    assert g.loc["OpenMP runtime", "share_pct"] == pytest.approx(75.0)
    assert g.loc["other", "share_pct"] == pytest.approx(25.0)


@pytest.mark.parametrize("config,match", [
    ({"kind": "core", "target": "nope", "tokens": 64}, "valid"),
    ({"kind": "core", "target": "softmax"}, "tokens"),
    ({"kind": "model", "target": "not_a_model"}, "unknown model 'not_a_model'; valid choices"),
    ({"kind": "layer", "target": "softmax", "tokens": 64}, "core, model"),
    ({"kind": "core", "target": "softmax", "tokens": 64, "seconds": 0}, "finite number > 0"),
    ({"kind": "core", "target": "softmax", "tokens": 64, "seconds": float("nan")}, "finite number > 0"),
    ({"kind": "core", "target": "softmax", "tokens": 64, "seconds": float("inf")}, "finite number > 0"),
    ({"kind": "core", "target": "softmax", "tokens": 64, "heads": 0}, "heads >= 1"),
    ({"kind": "core", "target": "softmax", "tokens": 64, "head_dim": -1}, "head_dim >= 1"),
    ({"kind": "core", "target": "softmax", "tokens": 64, "threads": 0}, "threads must be at least 1"),
    ({"kind": "model", "target": "deit_tiny_patch16_224", "img_size": 0}, "positive img_size"),
    ({"kind": "core", "target": "softmax", "tokens": 64, "dtype": "int3"}, "valid"),
])
def test_bad_configs_are_refused_before_anything_runs(monkeypatch, tmp_path, config, match):
    monkeypatch.setenv(profiling.PERF_ENV, str(tmp_path / "no-perf"))  # input is checked before perf is looked for
    with pytest.raises(ValueError, match=match):
        profiling.profile_many([config], root=tmp_path)
    assert not (tmp_path / profiling.CHAPTER).exists()


def test_missing_perf_is_a_clear_error_and_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(profiling.PERF_ENV, str(tmp_path / "no-perf"))
    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    with pytest.raises(profiling.ProfilerUnavailable, match="perf was not found"):
        profiling.check_perf()
    assert main(["profile", "core", "softmax", "--tokens", "64", "--seconds", "0.1"]) == 2
    assert "perf was not found" in capsys.readouterr().err
    assert not (tmp_path / profiling.CHAPTER).exists()


def _perf_works() -> bool:
    try:
        profiling.check_perf()
    except profiling.ProfilerUnavailable:
        return False
    return True


@pytest.mark.skipif(not _perf_works(), reason="perf is absent or may not sample here")
def test_profile_of_a_core_is_written_with_its_environment(tmp_path):
    path = profiling.profile_many([{"kind": "core", "target": "softmax_explicit", "tokens": 256, "seconds": 0.5,
                                    "threads": 1}], run_id="t1", root=tmp_path)
    rows = pd.read_csv(path)
    assert path.parent == tmp_path / profiling.CHAPTER and path.with_suffix("").with_suffix(".env.json").exists()
    assert set(rows.group) <= {g.name for g in profiling.GROUPS}
    assert rows.share_pct.sum() == pytest.approx(100.0, abs=0.01)
    assert (rows.calls > 0).all() and (rows.total_samples >= rows.samples.sum()).all()
    assert rows.total_samples.iloc[0] == rows.samples.sum()
    env = json.loads(path.with_suffix("").with_suffix(".env.json").read_text())
    assert env["cpu_allocator"] == "kept heap" and "cpu_family" in env  # the profiled process's allocator
    # a second profile under the same run id would mix two runs: refused, before profiling
    with pytest.raises(ValueError, match="exists already"):
        profiling.profile_many([{"kind": "core", "target": "softmax", "tokens": 64}], run_id="t1", root=tmp_path)


def test_a_workers_value_error_reaches_the_caller_as_one(tmp_path):
    # bad input found only while the worker builds its model (an image size the model cannot take)
    spec = {"kind": "model", "target": "x"}
    with pytest.raises(ValueError, match="^img_size 225 is not divisible"):
        profiling.run_worker("vitspeed._no_such_module", spec, str(tmp_path),
                             prefix=[sys.executable, "-c", "raise ValueError('img_size 225 is not divisible by 16')"])
    with pytest.raises(RuntimeError, match="failed"):
        profiling.run_worker("vitspeed._no_such_module", spec, str(tmp_path))


def test_a_model_profile_takes_the_model_names_flops_and_bench_take():
    # a timm name outside the study's list, as `vitspeed flops` and `bench` accept it
    assert profiling.checked_calls([{"kind": "model", "target": "vit_small_patch16_224"}])[0]["img_size"] == 224
