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


def test_generation_benchmark_counts_tokens_identical_outputs_and_flips():
    """The real-workload table: tokens up to and with EOS, outputs equal to transformers', and
    documents where speculative and plain greedy differ."""
    import json

    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import real_workload

    assert real_workload.generated(torch.tensor([[2, 5, 3, 0], [2, 6, 7, 8]]), eos=3) == [[5, 3], [6, 7, 8]]
    run = dict(seconds=2.0, cpu_s=4.0, docs=2, tokens=10, peak_rss_mib=100.0, split=dict(encoder=0.5, decoder=1.0))
    results = {
        ("encdec", "greedy", "{}"): dict(run, outputs=[[5, 3], [6, 9]]),
        ("encdec", "greedy", json.dumps({"speculative": False})): dict(run, outputs=[[5, 3], [6, 7]]),
        ("transformers", "greedy", "{}"): dict(run, seconds=4.0, cpu_s=8.0, outputs=[[5, 3], [6, 7]]),
    }
    text = real_workload.table(results)
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| greedy")]
    assert [r[5] for r in rows] == ["2.00x", "2.00x", "1.00x"] and [r[7] for r in rows] == ["1/2", "2/2", "2/2"]
    assert rows[0][9].startswith("25% / 50% / 25%")
    assert "1 of 2 documents differ" in text
