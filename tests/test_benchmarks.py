"""The benchmark scripts run: the GPU benchmark's whole code path, on the CPU with a tiny model, so
that it works the first time a GPU machine is available."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT


def test_gpu_benchmark_smoke_run_on_cpu():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "gpu.py", "--device", "cpu", "--tiny"], cwd=ROOT / "benchmarks",
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows if "ratio" in r] == ["train step bf16", "greedy", "beam 4 (CNN)"]
    identical = [r.split("|")[7].strip() for r in rows if r.split("|")[4].strip().endswith(" docs/s") and "library" not in r]
    assert len(identical) == 4 and all(i.endswith("/2") for i in identical)  # bf16 may flip near-ties
