"""The real generation workload of benchmarks/generate.py: a fine-tuned model, sample test
articles in length-sorted batches, natural stopping; one (library, mode) per fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
BATCH = 16
MODES = {
    "greedy": dict(num_beams=1, max_length=142),
    "beam4": dict(num_beams=4, min_length=56, max_length=142, length_penalty=2.0, no_repeat_ngram_size=3,
                  early_stopping=True),
}
# (library, mode, extra generate kwargs): encdec greedy with and without copy-speculation; "dtype":
# "int8" loads encdec's opt-in int8 serving model instead (not exact: its ROUGE is reported).
RUNS = [("encdec", "greedy", {}), ("encdec", "greedy", {"speculative": False}), ("transformers", "greedy", {}),
        ("encdec", "beam4", {}), ("transformers", "beam4", {}),
        ("encdec", "greedy", {"dtype": "int8"}), ("encdec", "beam4", {"dtype": "int8"})]


def trained_model(folder: str | None) -> str:
    """`--model DIR`, or the quickstart model trained once (`python train.py`) into a cache folder."""
    if folder:
        return folder
    run = Path(tempfile.gettempdir()) / "encdec-bench-quickstart"
    model = run / "best_model"
    if not (model / "config.json").exists():
        print(f"training the quickstart model once into {run} (a few minutes)", file=sys.stderr)
        subprocess.run([sys.executable, "train.py", f"hydra.run.dir={run}", "~logger"], cwd=ROOT, check=True)
    return str(model)


def batches(folder: str, docs: int) -> list[dict[str, torch.Tensor]]:
    """The first `docs` test articles, tokenized (512 tokens at most), sorted by length, in
    batches of 16 padded to their longest."""
    from encdec import load_tokenizer
    from encdec.data.sample_data import make_sample_dataset

    tokenizer = load_tokenizer(folder)
    articles = [r["article"] for r in make_sample_dataset()["test"][:docs]]
    encoded = tokenizer(articles, truncation=True, max_length=512)["input_ids"]
    ids = [encoded[i] for i in batch_order(folder, docs)]
    out = []
    for start in range(0, len(ids), BATCH):
        group = ids[start:start + BATCH]
        width = max(map(len, group))
        input_ids = torch.zeros(len(group), width, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for i, row in enumerate(group):
            input_ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        out.append(dict(input_ids=input_ids, attention_mask=mask))
    return out


def batch_order(folder: str, docs: int) -> list[int]:
    """The test articles' indices in the order the batches hold them (shortest first)."""
    from encdec import load_tokenizer
    from encdec.data.sample_data import make_sample_dataset

    articles = [r["article"] for r in make_sample_dataset()["test"][:docs]]
    lengths = [len(ids) for ids in load_tokenizer(folder)(articles, truncation=True, max_length=512)["input_ids"]]
    return sorted(range(len(articles)), key=lengths.__getitem__)


def rouge_of(folder: str, docs: int, outputs: list[list[int]]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (x100, rouge-score with stemming) of decoded outputs (batch order)
    against the articles' reference highlights."""
    from rouge_score import rouge_scorer

    from encdec import load_tokenizer
    from encdec.data.sample_data import make_sample_dataset

    tokenizer, test = load_tokenizer(folder), make_sample_dataset()["test"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    pairs = [(test[i]["highlights"], tokenizer.decode(out, skip_special_tokens=True))
             for i, out in zip(batch_order(folder, docs), outputs)]
    scores = [scorer.score(ref, pred) for ref, pred in pairs]
    return {k: 100 * sum(s[k].fmeasure for s in scores) / len(scores) for k in ("rouge1", "rouge2", "rougeL")}


class Clock:
    """Seconds spent inside a function, added up (wraps it in place)."""

    def __init__(self, owner, name: str) -> None:
        self.seconds, inner = 0.0, getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(owner, name, timed)


def clocks(library: str, model) -> dict[str, Clock]:
    """Encoder and decoder-step clocks: encdec's `encode` and `Decoding.step` / verification
    pass; transformers' encoder and decoder (its LM head included) forwards."""
    if library == "encdec":
        from encdec.generation import speculative
        from encdec.generation import state as decoding_state

        return {"encoder": Clock(model, "encode"), "decoder": Clock(decoding_state.Decoding, "step"),
                "verify": Clock(speculative.Ragged, "verify")}
    return {"encoder": Clock(model.encoder, "forward"), "decoder": Clock(model.decoder, "forward")}


def generated(out: torch.Tensor, eos: int) -> list[list[int]]:
    """Each row's tokens after the start token, up to and with its first EOS."""
    rows = []
    for row in out[:, 1:].tolist():
        rows.append(row[: row.index(eos) + 1] if eos in row else row)
    return rows


def worker(library: str, mode: str, extra: str, folder: str, docs: int, threads: int) -> dict:
    from generate import load, peak_rss_mib, reset_peak_rss

    torch.set_num_threads(threads)
    model = load(library, folder)
    kwargs = dict(MODES[mode], **json.loads(extra))
    if kwargs.pop("dtype", None) == "int8":
        from encdec.serving.int8 import quantize_int8

        model = quantize_int8(model)
    work = batches(folder, docs)
    eos = model.config.eos_token_id
    with torch.no_grad():
        model.generate(work[0]["input_ids"][:2, :32], attention_mask=work[0]["attention_mask"][:2, :32],
                       **dict(kwargs, max_length=8, min_length=0))
        parts = clocks(library, model)
        reset_peak_rss()
        outputs, seconds, cpu = [], 0.0, 0.0
        for batch in work:
            start, start_cpu = time.perf_counter(), time.process_time()
            out = model.generate(**batch, **kwargs)
            seconds += time.perf_counter() - start
            cpu += time.process_time() - start_cpu
            outputs += generated(out, eos)
    split = {name: clock.seconds for name, clock in parts.items()}
    split["decoder"] += split.pop("verify", 0.0)
    return dict(library=library, mode=mode, extra=extra, seconds=seconds, cpu_s=cpu, docs=len(outputs),
                tokens=sum(map(len, outputs)), peak_rss_mib=peak_rss_mib(), split=split, outputs=outputs)


def run_all(folder: str, docs: int, threads: int, repeats: int) -> dict[tuple, dict]:
    """Every run of RUNS, `repeats` times, alternating; the fastest repeat of each is kept."""
    results: dict[tuple, dict] = {}
    for _ in range(repeats):
        for library, mode, extra in RUNS:
            cmd = [sys.executable, str(Path(__file__).with_name("generate.py")), "--real-worker", library, mode,
                   json.dumps(extra), folder, str(docs), str(threads)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(done.stderr[-3000:])
            run = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps({k: v for k, v in run.items() if k != "outputs"}), file=sys.stderr)
            key = (library, mode, json.dumps(extra))
            if key not in results or run["seconds"] < results[key]["seconds"]:
                results[key] = run
    return results


def split_text(run: dict) -> str:
    s, total = run["split"], run["seconds"]
    other = total - s["encoder"] - s["decoder"]
    return f"{s['encoder'] / total:.0%} / {s['decoder'] / total:.0%} / {other / total:.0%}"


def table(results: dict[tuple, dict]) -> str:
    from generate import markdown

    header = ["mode", "library", "s", "docs/s", "gen tokens/s", "vs transformers", "CPU s (vs transformers)",
              "same as transformers",
              "peak RSS MiB", "time: encoder / decoder steps / other"]
    rows = []
    for (library, mode, extra), run in results.items():
        ref = results["transformers", mode, "{}"]
        same = sum(a == b for a, b in zip(run["outputs"], ref["outputs"]))
        name = (library + (" (no speculation)" if "speculative" in extra else "")
                + (" int8, not exact" if "int8" in extra else ""))
        rows.append([mode, name, f"{run['seconds']:.2f}", f"{run['docs'] / run['seconds']:.2f}",
                     f"{run['tokens'] / run['seconds']:.0f}", f"{ref['seconds'] / run['seconds']:.2f}x",
                     f"{run['cpu_s']:.2f} ({ref['cpu_s'] / run['cpu_s']:.2f}x)",
                     f"{same}/{run['docs']}", f"{run['peak_rss_mib']:.0f}", split_text(run)])
    spec, plain = results.get(("encdec", "greedy", "{}")), results.get(("encdec", "greedy", '{"speculative": false}'))
    text = markdown(header, rows)
    if spec and plain:
        flips = sum(a != b for a, b in zip(spec["outputs"], plain["outputs"]))
        text += f"\n\nspeculative vs plain greedy (encdec): {flips} of {spec['docs']} documents differ (near-tie flips)"
    return text


def int8_rouge(results: dict[tuple, dict], folder: str, docs: int) -> str:
    """ROUGE F1 against the references of encdec fp32 and int8, per mode: what int8 costs."""
    lines = []
    for mode in MODES:
        fp32, int8 = results.get(("encdec", mode, "{}")), results.get(("encdec", mode, '{"dtype": "int8"}'))
        if fp32 and int8:
            a, b = rouge_of(folder, docs, fp32["outputs"]), rouge_of(folder, docs, int8["outputs"])
            lines.append(f"{mode}: ROUGE-1/2/L fp32 {a['rouge1']:.2f}/{a['rouge2']:.2f}/{a['rougeL']:.2f}, "
                         f"int8 {b['rouge1']:.2f}/{b['rouge2']:.2f}/{b['rougeL']:.2f}; "
                         f"{sum(x != y for x, y in zip(fp32['outputs'], int8['outputs']))} of {fp32['docs']} "
                         "summaries differ")
    return "\n".join(lines)


def main(model: str | None, docs: int, threads: int, repeats: int) -> None:
    folder = trained_model(model)
    results = run_all(folder, docs, threads, repeats)
    print(table(results))
    print("\n" + int8_rouge(results, folder, docs))

