"""Tests for vitspeed.envinfo: environment record, hardware slug, device and dtype checks."""
import json
import re
import socket

import pytest
import torch

from vitspeed import envinfo
from vitspeed.envinfo import (available_devices, dtype_name, environment_record, hardware_slug, resolve_device,
                              resolve_dtype)

REQUIRED = {
    "date", "device", "device_type", "dtype", "threads", "torch_num_threads", "torch_num_interop_threads",
    "platform", "python", "cpu_model", "cpu_count_logical", "torch_version", "timm_version",
    "fvcore_version", "numpy_version", "vitspeed_version", "cuda_available", "cuda_version",
    "cudnn_version", "gpu_name", "gpu_memory_gb", "gpu_capability", "tf32_matmul", "tf32_cudnn",
    "float32_matmul_precision", "sdpa_flash", "sdpa_mem_efficient", "sdpa_math", "sdpa_cudnn", "cpu_allocator",
}


def test_record_has_required_keys_and_is_json():
    record = environment_record("cpu", "bf16", threads=3)
    assert REQUIRED <= set(record)
    assert json.loads(json.dumps(record)) == record
    assert record["device"] == "cpu" and record["device_type"] == "cpu"
    assert record["dtype"] == "bfloat16"
    assert record["threads"] == 3
    assert record["torch_num_threads"] == torch.get_num_threads()
    assert record["torch_version"] == torch.__version__
    assert record["gpu_name"] is None
    assert record["date"].endswith("+00:00")  # UTC


def test_record_defaults_threads_to_torch_setting():
    assert environment_record()["threads"] == torch.get_num_threads()


def test_record_has_no_hostname():
    host = socket.gethostname()
    if len(host) < 6:
        pytest.skip("hostname too short to search for")
    assert host not in json.dumps(environment_record())


def test_slug_of_this_machine_is_filesystem_safe():
    slug = hardware_slug(environment_record(threads=2))
    assert re.fullmatch(r"[a-z0-9-]+", slug)
    assert slug.startswith("cpu-") and slug.endswith("-2t")


@pytest.mark.parametrize("record, expected", [
    ({"device_type": "cpu", "cpu_model": "AMD EPYC 7B13 64-Core Processor", "threads": 2},
     "cpu-amd-epyc-7b13-2t"),
    ({"device_type": "cpu", "cpu_model": "Intel(R) Xeon(R) CPU E5-2690 v4 @ 2.60GHz", "threads": 16},
     "cpu-intel-xeon-e5-2690-v4-16t"),
    ({"device_type": "cuda", "gpu_name": "NVIDIA H200"}, "cuda-nvidia-h200"),
    ({"device": "cuda:1", "gpu_name": "NVIDIA A100-SXM4-80GB"}, "cuda-nvidia-a100-sxm4-80gb"),
    ({"device_type": "cpu", "cpu_model": "", "threads": 1}, "cpu-unknown-1t"),
])
def test_slug_examples(record, expected):
    assert hardware_slug(record) == expected


def test_slug_differs_with_threads():
    base = {"device_type": "cpu", "cpu_model": "AMD EPYC"}
    assert hardware_slug({**base, "threads": 1}) != hardware_slug({**base, "threads": 2})


def test_resolve_device_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_resolve_device_cuda_absent(name):
    with pytest.raises(ValueError, match="no CUDA device is available; valid choices here: cpu"):
        resolve_device(name)


def test_available_devices_follow_what_cuda_reports(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert available_devices() == ["cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert available_devices() == ["cpu", "cuda", "cuda:0", "cuda:1"]


@pytest.mark.parametrize("name", ["tpu", "cpu:0", "cuda:x", "", "gpu"])
def test_resolve_device_unknown(name):
    with pytest.raises(ValueError, match="valid choices here: cpu"):
        resolve_device(name)


def test_resolve_dtype_names():
    assert resolve_dtype("fp32", "cpu") is torch.float32
    assert resolve_dtype("float32", "cpu") is torch.float32
    assert resolve_dtype("BF16", "cpu") is torch.bfloat16
    assert resolve_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16
    assert resolve_dtype(torch.float32) is torch.float32
    assert dtype_name("fp16") == "float16"
    assert dtype_name(torch.bfloat16) == "bfloat16"


@pytest.mark.parametrize("name", ["float16", "fp16"])
def test_resolve_dtype_float16_on_cpu_raises(name):
    with pytest.raises(ValueError, match=r"float16 is not supported .*cpu.*float32.*bfloat16"):
        resolve_dtype(name, "cpu")


@pytest.mark.parametrize("name", ["int8", "float64", "half-ish", ""])
def test_resolve_dtype_bad_name_lists_valid(name):
    with pytest.raises(ValueError) as info:
        resolve_dtype(name, "cpu")
    message = str(info.value)
    for valid in ("float32", "bfloat16", "float16", "fp32", "bf16", "fp16"):
        assert valid in message


def test_record_rejects_bad_input():
    with pytest.raises(ValueError, match="float16 is not supported for timing on cpu; valid choices"):
        environment_record("cpu", "float16")
    with pytest.raises(ValueError, match="unknown device 'tpu'; valid choices"):
        environment_record("tpu")


def test_tf32_state_applies_to_cuda_float32_only():
    import torch

    from vitspeed.envinfo import tf32_state

    assert tf32_state("cpu", "float32") is None
    assert tf32_state("cuda", "bf16") is None  # reads flags only: no GPU needed
    flags = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
    assert tf32_state(torch.device("cuda"), torch.float32) is bool(flags)


def test_strict_fp32_turns_tf32_off_for_matmuls_and_convolutions_then_restores():
    import torch

    from vitspeed.envinfo import strict_fp32, tf32_state

    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True  # PyTorch's default
        assert tf32_state("cuda", "float32") is True  # convolutions may use TF32: not strict fp32
        with strict_fp32():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert tf32_state("cuda", "float32") is False
            record = environment_record("cpu")
            assert record["tf32_matmul"] is False and record["tf32_cudnn"] is False
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, True)
        with pytest.raises(RuntimeError), strict_fp32():
            raise RuntimeError("boom")
        assert torch.backends.cudnn.allow_tf32 is True  # restored after an error too
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_nvidia_smi_fields_are_read_when_the_tool_exists(tmp_path, monkeypatch):
    import shutil

    from vitspeed import envinfo

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '580.159.03, 1980, 1980, GPU-8a1c'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda name: str(fake) if name == "nvidia-smi" else None)
    assert envinfo._nvidia_smi(0) == {"gpu_driver": "580.159.03", "gpu_sm_clock_mhz": "1980",
                                      "gpu_sm_clock_max_mhz": "1980", "gpu_uuid": "GPU-8a1c"}
    fake.write_text("#!/bin/sh\nexit 9\n")
    assert envinfo._nvidia_smi(0) == {}  # a failing tool leaves the record without them
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert envinfo._nvidia_smi(0) == {}


def test_cpu_identity_reads_the_first_processor_block(tmp_path, monkeypatch):
    import builtins

    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"
                    "model name\t: AMD EPYC\nstepping\t: 1\nmicrocode\t: 0x1000065\n\n"
                    "processor\t: 1\ncpu family\t: 25\nmodel\t\t: 17\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(fake if path == "/proc/cpuinfo" else path,
                                                                          *a, **k))
    assert envinfo.cpu_identity() == {"cpu_family": 26, "cpu_model_number": 2, "cpu_stepping": 1,
                                      "cpu_microcode": "0x1000065"}
    record = envinfo.environment_record("cpu")
    assert (record["cpu_family"], record["cpu_model_number"]) == (26, 2)


def test_cpu_identity_is_none_without_cpuinfo(monkeypatch):
    import builtins

    def no_file(path, *a, **k):
        raise OSError("absent")
    monkeypatch.setattr(builtins, "open", no_file)
    assert envinfo.cpu_identity() == dict.fromkeys(["cpu_family", "cpu_model_number", "cpu_stepping",
                                                    "cpu_microcode"])
