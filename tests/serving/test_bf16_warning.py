"""bf16 on the CPU is chosen, not guessed: serving in bfloat16 on a CPU without bf16 matrix units
(no AMX, no AVX512-BF16) warns once, from the Summarizer, the CLI and evaluate.py, that it will be
slower than float32 there. The CPU flags are simulated (encdec.serving.devices.cpu_flags patched),
so each case runs the same on any machine."""

from __future__ import annotations

import warnings

import pytest
from test_generation_settings import DOCS, evaluate, folder  # noqa: F401  (fixture)

from encdec import Summarizer
from encdec.apps.cli import main as cli_main
from encdec.serving import devices

ZEN3 = {"fpu", "sse4_2", "avx", "avx2", "fma", "f16c"}  # AVX2, no bf16 units
SKYLAKE_X = ZEN3 | {"avx512f", "avx512bw", "avx512_vnni"}  # AVX-512, still no bf16 units


@pytest.fixture
def cpu(monkeypatch):
    """Set the CPU's flags for the test; the once-per-process flag starts unset."""
    monkeypatch.setattr(devices, "_warned_slow_bf16", False)

    def use(flags):
        monkeypatch.setattr(devices, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": flags)

    return use


def slow_bf16_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "slower than float32" in str(w.message)]


def test_cpu_flags_read_x86_and_aarch64_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n"
                   "processor\t: 1\nflags\t\t: fpu\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert devices.cpu_flags(str(x86)) == {"fpu", "avx2", "avx512f", "avx512_bf16"}  # the first CPU's line
    assert devices.cpu_flags(str(arm)) & set(devices.BF16_CPU_FLAGS) == {"bf16"}
    assert devices.cpu_flags(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("flags", [ZEN3, SKYLAKE_X])
def test_summarizer_bf16_warns_once_without_bf16_units(folder, cpu, flags):  # noqa: F811
    cpu(flags)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Summarizer.from_pretrained(folder, dtype="bfloat16")
        Summarizer.from_pretrained(folder, dtype="bf16")  # once per process, not per model
    (message,) = slow_bf16_warnings(caught)
    assert "amx_bf16, avx512_bf16" in message and "/proc/cpuinfo" in message


@pytest.mark.parametrize("unit", ["amx_bf16", "avx512_bf16", "bf16"])
def test_no_warning_with_bf16_units(folder, cpu, unit):  # noqa: F811
    cpu(SKYLAKE_X | {unit})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Summarizer.from_pretrained(folder, dtype="bfloat16")
    assert slow_bf16_warnings(caught) == []


@pytest.mark.parametrize("dtype", [None, "float32", "int8"])
def test_no_warning_for_other_dtypes(folder, cpu, dtype):  # noqa: F811
    cpu(ZEN3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Summarizer.from_pretrained(folder, dtype=dtype)
    assert slow_bf16_warnings(caught) == []


def test_no_warning_where_flags_are_unknown(folder, cpu):  # noqa: F811
    cpu(None)  # no /proc/cpuinfo (macOS, Windows): nothing to say
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Summarizer.from_pretrained(folder, dtype="bfloat16")
    assert slow_bf16_warnings(caught) == []


def test_cli_and_evaluate_warn(folder, cpu, tmp_path, capsys):  # noqa: F811
    (tmp_path / "docs.txt").write_text("\n".join(DOCS[:2]) + "\n")
    cpu(ZEN3)
    assert cli_main(["summarize", "--model", str(folder), "--dtype", "bfloat16", str(tmp_path / "docs.txt")]) == 0
    (line,) = capsys.readouterr().err.splitlines()  # one line, as the CLI's other warnings
    assert line.startswith("encdec: warning: dtype=bfloat16 on this CPU will be slower than float32")
    cpu(ZEN3 | {"avx512_bf16"})
    devices._warned_slow_bf16 = False
    assert cli_main(["summarize", "--model", str(folder), "--dtype", "bfloat16", str(tmp_path / "docs.txt")]) == 0
    assert capsys.readouterr().err == ""
    cpu(SKYLAKE_X)
    devices._warned_slow_bf16 = False
    with pytest.warns(UserWarning, match="bfloat16 on this CPU will be slower than float32"):
        evaluate(folder, tmp_path / "eval", "dtype=bfloat16")
    cpu(SKYLAKE_X | {"amx_bf16"})
    devices._warned_slow_bf16 = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate(folder, tmp_path / "eval_amx", "dtype=bfloat16")
    assert slow_bf16_warnings(caught) == []
