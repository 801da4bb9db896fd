"""What the benchmark scripts share: loading a model folder in either library, the peak RSS of this
process, markdown tables and the machine line printed beside every table."""

from __future__ import annotations

import os
import platform

import torch


def reset_peak_rss() -> None:
    """Linux: restart the high-water mark (VmHWM) at the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def load(library: str, folder: str):
    if library == "encdec":
        import encdec

        return encdec.EncoderDecoderModel.from_pretrained(folder).eval()
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers.EncoderDecoderModel.from_pretrained(folder).eval()


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def cpu_model() -> str:
    """The CPU's model name (lscpu's "Model name", from /proc/cpuinfo), else the platform's."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":")[0].strip() == "model name":
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int) -> str:
    """The line printed beside every table: CPU model, its bf16 matrix units (what bf16 speed
    depends on), library versions, threads and the load before the run."""
    from encdec.serving.devices import cpu_flags

    flags = cpu_flags() or set()
    units = ", ".join(f"{name}: {'yes' if flag in flags else 'no'}"
                      for name, flag in (("AMX", "amx_bf16"), ("AVX512-BF16", "avx512_bf16"), ("AVX-512", "avx512f")))
    versions = f"torch {torch.__version__}"
    try:
        from importlib.metadata import version

        versions += f", transformers {version('transformers')}"
    except Exception:  # transformers is only needed for its rows
        pass
    return (f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; {units}; {versions}; {threads} threads; "
            f"load average before: {os.getloadavg()[0]:.1f}")
