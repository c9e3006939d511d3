"""Where a measurement was taken: environment record, hardware id, and checked device/dtype choices.

Every results file has a sidecar JSON made by :func:`environment_record`; :func:`hardware_slug` turns
such a record into the short id used in results file names, so results of different machines never
share a file. :func:`resolve_device` and :func:`resolve_dtype` turn user strings into torch objects
and reject what this machine cannot run with one sentence naming the valid choices.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import os
import platform
import re
from typing import Any, Iterator

import torch

from vitspeed.allocator import ALLOCATOR_VARS, allocator_state

__all__ = [
    "DTYPE_NAMES",
    "strict_fp32",
    "tf32_state",
    "available_devices",
    "cpu_identity",
    "cpu_model",
    "dtype_name",
    "environment_record",
    "hardware_slug",
    "resolve_device",
    "resolve_dtype",
]

#: Accepted dtype spellings -> torch dtype.  Canonical names are the long ones.
DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}
_CANONICAL = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}

# Environment variables that change what a measurement means (thread pools, timm's fused attention).
_RECORDED_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TIMM_FUSED_ATTN",
                      "CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG", "PYTORCH_CUDA_ALLOC_CONF",
                      *ALLOCATOR_VARS)  # the CPU allocator: glibc's knobs, or a preloaded malloc


def available_devices() -> list[str]:
    """The device strings valid on this machine: ``cpu``, and ``cuda``, ``cuda:0`` ... when CUDA is present."""
    choices = ["cpu"]
    if torch.cuda.is_available():
        choices.append("cuda")
        choices.extend(f"cuda:{i}" for i in range(torch.cuda.device_count()))
    return choices


def resolve_device(device: str | torch.device) -> torch.device:
    """Check a device string (``cpu``, ``cuda`` or ``cuda:N``) against this machine and return it.

    ``cuda`` resolves to the current CUDA device with its index (``cuda:0``), so that the recorded
    device is explicit.  Raises ValueError naming the valid choices when the device is unknown or absent.
    """
    text = str(device).strip().lower()
    valid = ", ".join(available_devices())
    match = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", text)
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise ValueError(f"unknown device {str(device)!r}; valid choices here: {valid}")
    if match.group(1) == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"{text} was requested but no CUDA device is available; valid choices here: {valid}")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if match.group(2) is None else int(match.group(2))
    if index >= count:
        raise ValueError(f"{text} was requested but only {count} CUDA device(s) are available; "
                         f"valid choices here: {valid}")
    return torch.device("cuda", index)


def resolve_dtype(name: str | torch.dtype, device: str | torch.device = "cpu") -> torch.dtype:
    """Turn a dtype name (float32/fp32, bfloat16/bf16, float16/fp16) into a torch dtype the device can run.

    float16 is refused on CPU (slow emulated kernels would be timed, not the model), bfloat16 on a
    GPU without bf16 support.  Raises ValueError naming the valid choices.
    """
    if isinstance(name, torch.dtype):
        dtype = name
        if dtype not in _CANONICAL:
            raise ValueError(f"unsupported dtype {dtype}; valid names: {_valid_names()}")
    else:
        key = str(name).strip().lower().removeprefix("torch.")
        if key not in DTYPE_NAMES:
            raise ValueError(f"unknown dtype {name!r}; valid names: {_valid_names()}")
        dtype = DTYPE_NAMES[key]
    device_type = torch.device(device).type if not isinstance(device, torch.device) else device.type
    if device_type == "cpu" and dtype == torch.float16:
        raise ValueError("float16 is not supported for timing on cpu; valid choices for cpu: "
                         "float32 (fp32), bfloat16 (bf16)")
    if (device_type == "cuda" and dtype == torch.bfloat16 and torch.cuda.is_available()
            and not torch.cuda.is_bf16_supported()):
        raise ValueError("bfloat16 is not supported by this GPU; valid choices for it: "
                         "float32 (fp32), float16 (fp16)")
    return dtype


def dtype_name(dtype: str | torch.dtype) -> str:
    """Canonical name (float32, bfloat16, float16) of a dtype or of any accepted spelling of it."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _CANONICAL:
            raise ValueError(f"unsupported dtype {dtype}; valid names: {_valid_names()}")
        return _CANONICAL[dtype]
    key = str(dtype).strip().lower().removeprefix("torch.")
    if key not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {dtype!r}; valid names: {_valid_names()}")
    return _CANONICAL[DTYPE_NAMES[key]]


def tf32_state(device: str | torch.device, dtype: str | torch.dtype) -> bool | None:
    """Whether float32 work on ``device`` in ``dtype`` may run on TF32 tensor cores: on CUDA in
    float32, True if PyTorch allows TF32 for cuBLAS matrix products *or* for cuDNN convolutions (the
    latter is PyTorch's default), False when both are off (IEEE float32); else None (not applicable)."""
    dev = device if isinstance(device, torch.device) else torch.device(device)
    dt = dtype if isinstance(dtype, torch.dtype) else DTYPE_NAMES[dtype_name(dtype)]
    if dev.type != "cuda" or dt != torch.float32:
        return None
    return bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """For the duration, float32 means IEEE float32 on CUDA: TF32 off for cuBLAS matrix products
    and for cuDNN convolutions (PyTorch leaves the convolution flag on by default, so patch
    embeddings and convolutional stems would otherwise run in TF32 in "fp32" rows). The previous
    flags are restored on exit. The flags are process-wide and do nothing on the CPU."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _valid_names() -> str:
    return "float32 (fp32), bfloat16 (bf16), float16 (fp16)"


def _cpuinfo_first_block() -> dict[str, str]:
    """The fields of the first processor in /proc/cpuinfo (lower-case keys), empty where it is absent."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU model string: /proc/cpuinfo 'model name', else platform.processor(), else the machine type."""
    return _cpuinfo_first_block().get("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_identity() -> dict[str, Any]:
    """/proc/cpuinfo's ``cpu family``, ``model``, ``stepping`` and ``microcode`` of the first CPU, as
    ``cpu_family``, ``cpu_model_number``, ``cpu_stepping`` and ``cpu_microcode`` (numbers as integers,
    microcode as its string), None where absent (not Linux x86). A virtual machine's 'model name' can be
    as vague as "AMD EPYC": these say which generation the host is (AMD family 25 is Zen 3/4, 26 is Zen 5),
    so two runs of one hardware id on different hosts can be told apart."""
    fields = _cpuinfo_first_block()
    out: dict[str, Any] = {}
    for key, name in (("cpu family", "cpu_family"), ("model", "cpu_model_number"), ("stepping", "cpu_stepping")):
        value = fields.get(key)
        out[name] = int(value) if value and value.isdigit() else value
    out["cpu_microcode"] = fields.get("microcode")
    return out


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _physical_cores() -> int | None:
    try:
        import psutil
        return psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unable to tell on this platform
        return None


def _memory_total_gb() -> float | None:
    try:
        import psutil
        return round(psutil.virtual_memory().total / 2**30, 2)
    except Exception:
        return None


def _sdpa_flag(name: str) -> bool | None:
    fn = getattr(torch.backends.cuda, name, None)
    return bool(fn()) if callable(fn) else None


def environment_record(device: str = "cpu", dtype: str = "float32", threads: int | None = None) -> dict[str, Any]:
    """A JSON-able description of the machine and software a measurement runs on (no hostname).

    ``threads`` is the CPU thread count the run uses (default: torch's current setting); it is
    recorded as ``threads`` beside torch's current ``torch_num_threads``.  TF32 and SDPA backend
    flags are torch's global settings and are recorded on CPU too; ``device_type`` says whether
    they matter.  GPU fields are None on CPU.  Raises ValueError for an absent device or bad dtype.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    cuda_ok = torch.cuda.is_available()
    cudnn_version = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    record: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": str(dev),
        "device_type": dev.type,
        "dtype": _CANONICAL[dt],
        "threads": int(threads) if threads is not None else torch.get_num_threads(),
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "cpu_model": cpu_model(),
        **cpu_identity(),
        "cpu_count_logical": os.cpu_count(),
        "cpu_count_physical": _physical_cores(),
        "cpu_capability": _cpu_capability(),
        "memory_total_gb": _memory_total_gb(),
        "torch_version": torch.__version__,
        "torchvision_version": _version("torchvision"),
        "timm_version": _version("timm"),
        "fvcore_version": _version("fvcore"),
        "numpy_version": _version("numpy"),
        "vitspeed_version": _vitspeed_version(),
        "cuda_available": cuda_ok,
        "cuda_version": torch.version.cuda,
        "cudnn_version": cudnn_version,
        "gpu_count": torch.cuda.device_count() if cuda_ok else 0,
        "gpu_name": None,
        "gpu_memory_gb": None,
        "gpu_capability": None,
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "sdpa_flash": _sdpa_flag("flash_sdp_enabled"),
        "sdpa_mem_efficient": _sdpa_flag("mem_efficient_sdp_enabled"),
        "sdpa_math": _sdpa_flag("math_sdp_enabled"),
        "sdpa_cudnn": _sdpa_flag("cudnn_sdp_enabled"),
        "env_vars": {k: os.environ[k] for k in _RECORDED_ENV_VARS if k in os.environ},
        "cpu_allocator": allocator_state(),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        record["gpu_name"] = props.name
        record["gpu_memory_gb"] = round(props.total_memory / 2**30, 2)
        record["gpu_capability"] = f"{props.major}.{props.minor}"
        l2 = getattr(props, "L2_cache_size", None)  # bytes; older torch builds do not expose it
        record["gpu_l2_mb"] = round(l2 / 1e6, 1) if l2 else None
        record.update(_nvidia_smi(dev.index or 0))
    return record


def _nvidia_smi(index: int) -> dict[str, Any]:
    """Driver version, current/maximum SM clocks (MHz) and UUID (which physical card: the parts of a
    resumed run may run on different machines) of GPU ``index`` as nvidia-smi reports them; empty
    where nvidia-smi is missing or fails (the record then simply lacks them). The current clock is
    read when the record is made, before any timing, often on an idle card (an H200 idles at a few
    hundred MHz and boosts to its maximum under load): it says nothing about the clock while timing."""
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    fields = ["driver_version", "clocks.sm", "clocks.max.sm", "uuid"]
    try:
        out = subprocess.run([exe, f"--id={index}", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    values = [v.strip() for v in out.splitlines()[0].split(",")] if out else []
    if len(values) != len(fields):
        return {}
    return {"gpu_driver": values[0], "gpu_sm_clock_mhz": values[1], "gpu_sm_clock_max_mhz": values[2],
            "gpu_uuid": values[3]}


def _cpu_capability() -> str | None:
    fn = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    try:
        return fn() if callable(fn) else None
    except Exception:
        return None


def _vitspeed_version() -> str:
    from vitspeed import __version__
    return __version__


# Marketing words that make CPU names long without telling machines apart.
_CPU_NOISE = [r"\((?:r|tm|c)\)", r"\b\d+-core\b", r"\bprocessor\b", r"\bcpu\b", r"@.*$",
              r"\bwith radeon graphics\b"]


def _slugify(text: str, max_len: int = 40) -> str:
    text = text.lower()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    slug = slug[:max_len].strip("-")
    return slug or "unknown"


def hardware_slug(record: dict[str, Any]) -> str:
    """Short filesystem-safe id of the hardware in an environment record, matching ``^[a-z0-9-]+$``.

    CUDA: ``cuda-<gpu name>`` (e.g. ``cuda-nvidia-h200``).  CPU: ``cpu-<cpu model>-<threads>t``
    (e.g. ``cpu-amd-epyc-7b13-2t``): the thread count is part of the CPU id because it changes
    the latency as much as the chip does.
    """
    device_type = record.get("device_type") or str(record.get("device", "cpu")).split(":")[0]
    if device_type == "cuda":
        return f"cuda-{_slugify(str(record.get('gpu_name') or 'unknown-gpu'))}"
    if device_type != "cpu":
        raise ValueError(f"unknown device type {device_type!r} in environment record; valid choices: cpu, cuda")
    model = str(record.get("cpu_model") or "unknown").lower()
    for pattern in _CPU_NOISE:
        model = re.sub(pattern, " ", model)
    threads = record.get("threads") or record.get("torch_num_threads")
    suffix = f"-{int(threads)}t" if threads else ""
    return f"cpu-{_slugify(model)}{suffix}"
