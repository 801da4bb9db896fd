"""Device and dtype names the serving paths take: transformers pipelines' device numbers, and a
CUDA device refused in one line where this PyTorch has none. torch is imported only to check CUDA,
so preflight checks stay light."""

from __future__ import annotations

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
