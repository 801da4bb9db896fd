"""Device and dtype names the serving paths take: transformers pipelines' device numbers, and a
CUDA device refused in one line where this PyTorch has none. torch is imported only to check CUDA,
so preflight checks stay light. Also the one warning about bf16 on a CPU that has no bf16 matrix
units, where it runs slower than fp32."""

from __future__ import annotations

import warnings
from typing import Any

from encdec.base.errors import UsageError

# dtype names the serving paths take (torch dtypes of encdec.serving.summarizer.DTYPES); "int8" is encdec.serving.int8.
DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16"}


def device_name(device: Any) -> Any:
    """transformers pipelines' device numbers as torch names: 0, 1, ... (or "0") are CUDA devices,
    -1 the CPU; anything else is passed on."""
    if ((isinstance(device, int) and not isinstance(device, bool))
            or (isinstance(device, str) and device.lstrip("-").isdigit())):
        return "cpu" if int(device) < 0 else f"cuda:{int(device)}"
    return device


def check_device(device: Any, key: str) -> Any:
    """The torch name of `device` (see device_name); a CUDA device must exist in this PyTorch: a
    CPU-only wheel has none (imports torch)."""
    resolved = device_name(device)
    name = str(resolved or "").lower()
    if not (name.startswith("cuda") or name == "gpu"):
        return resolved
    import torch

    if not torch.cuda.is_available():
        why = "this PyTorch is a CPU-only build" if torch.version.cuda is None else "PyTorch sees no CUDA GPU"
        meant = f" (CUDA device {resolved})" if resolved != device else ""
        raise UsageError(f"{key}={device}{meant}: {why}; use cpu (or -1), or a CUDA build of torch on a machine "
                         "with a GPU.")
    return resolved


# CPU flags (/proc/cpuinfo) of the units that make bf16 matmuls faster than fp32 ones: Intel AMX,
# AVX512-BF16 (Intel Cooper Lake and later, AMD Zen 4 and later), and aarch64's BF16 instructions.
# Without them oneDNN converts bf16 to fp32 around every multiply.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
_warned_slow_bf16 = False


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str] | None:
    """The first CPU's feature flags (x86 `flags`, aarch64 `Features`); None where the file is
    missing (macOS, Windows) or has no such line."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        return None
    return None


def warn_if_slow_cpu_bf16() -> None:
    """For a model served in bf16 on the CPU: on a CPU without bf16 matrix units it runs slower
    than fp32 (and is not exact), so say so once per process, naming the flags looked for. Silent
    where the flags cannot be read."""
    global _warned_slow_bf16
    if _warned_slow_bf16:
        return
    flags = cpu_flags()
    if flags is None or flags & set(BF16_CPU_FLAGS):
        return
    _warned_slow_bf16 = True
    warnings.warn(
        "dtype=bfloat16 on this CPU will be slower than float32: it has no bf16 matrix units (none of the "
        f"CPU flags {', '.join(BF16_CPU_FLAGS)} in /proc/cpuinfo), so every bf16 matmul is converted to fp32. "
        "Use float32 (exact, the default) or int8 (faster, not exact) here.",
        UserWarning, stacklevel=3,
    )
