"""The real generation workload of benchmarks/generate.py: a fine-tuned model, sample test
articles in length-sorted batches, natural stopping; one (library, mode, dtype) per fresh process.

Every serving dtype side by side in one run: fp32 (exact, the default), bf16 in both libraries,
encdec's int8. Each row gives docs/s, the ratio to transformers in the same dtype, how many
summaries equal the exact fp32 ones and the ROUGE change against fp32; the CPU model and its bf16
matrix units are printed beside the table, since bf16 speed depends on them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_common import cpu_model, machine  # noqa: F401 (cpu_model re-exported for its tests)

ROOT = Path(__file__).resolve().parent.parent
BATCH = 16
MODES = {
    "greedy": dict(num_beams=1, max_length=142),
    "beam4": dict(num_beams=4, min_length=56, max_length=142, length_penalty=2.0, no_repeat_ngram_size=3,
                  early_stopping=True),
}
FP32 = "{}"  # the `extra` of the exact runs
# (library, mode, extra generate kwargs): encdec greedy with and without copy-speculation; "dtype"
# serves in bfloat16 (both libraries) or as encdec's opt-in int8 model (not exact: ROUGE is reported).
RUNS = [("encdec", "greedy", {}), ("encdec", "greedy", {"speculative": False}), ("transformers", "greedy", {}),
        ("encdec", "beam4", {}), ("transformers", "beam4", {})]
RUNS += [(library, mode, {"dtype": "bfloat16"}) for mode in MODES for library in ("encdec", "transformers")]
RUNS += [("encdec", mode, {"dtype": "int8"}) for mode in MODES]


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


def serving_model(library: str, folder: str, dtype: str, backend: str | None = None):
    """The model as served in `dtype`: float32 as loaded, bfloat16 cast (both libraries), int8
    through encdec's serving path, or through another int8 `backend` (int8_candidates.py)."""
    from bench_common import load

    model = load(library, folder)
    if dtype == "bfloat16":
        return model.to(torch.bfloat16)
    if dtype == "int8" and backend:
        from int8_candidates import CANDIDATES

        return CANDIDATES[backend](model)
    if dtype == "int8":
        from encdec.serving.int8 import quantize_int8

        return quantize_int8(model)
    return model


def worker(library: str, mode: str, extra: str, folder: str, docs: int, threads: int) -> dict:
    from bench_common import peak_rss_mib, reset_peak_rss

    torch.set_num_threads(threads)
    kwargs = dict(MODES[mode], **json.loads(extra))
    model = serving_model(library, folder, kwargs.pop("dtype", "float32"), kwargs.pop("int8_backend", None))
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


def run_all(folder: str, docs: int, threads: int, repeats: int, runs: list | None = None) -> dict[tuple, dict]:
    """Every run of RUNS, `repeats` times, alternating; the fastest repeat of each is kept."""
    results: dict[tuple, dict] = {}
    for _ in range(repeats):
        for library, mode, extra in runs or RUNS:
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


def dtype_of(extra: str) -> str:
    return json.loads(extra).get("dtype", "float32")


def same_dtype_reference(results: dict[tuple, dict], mode: str, dtype: str) -> tuple[dict, str]:
    """transformers' run of the mode in the same dtype, or its fp32 run where it has none (int8),
    with a note saying which."""
    same = results.get(("transformers", mode, FP32 if dtype == "float32" else json.dumps({"dtype": dtype})))
    return (same, "") if same else (results["transformers", mode, FP32], " (fp32)")


def split_text(run: dict) -> str:
    s, total = run["split"], run["seconds"]
    other = total - s["encoder"] - s["decoder"]
    return f"{s['encoder'] / total:.0%} / {s['decoder'] / total:.0%} / {other / total:.0%}"


def rouge_text(scores: dict[str, float]) -> str:
    return "/".join(f"{scores[k]:.2f}" for k in ("rouge1", "rouge2", "rougeL"))


def table(results: dict[tuple, dict], rouge: dict[tuple, dict[str, float]] | None = None) -> str:
    """One row per (mode, dtype, library): speed against transformers in the same dtype, summaries
    equal to the exact fp32 ones (transformers' fp32 run of the mode), and, with `rouge` (ROUGE
    F1 x100 per run), the scores and their change against that fp32 run."""
    from bench_common import markdown

    header = ["mode", "dtype", "library", "s", "docs/s", "gen tokens/s", "vs transformers, same dtype",
              "CPU s (vs transformers)", "same as fp32", "ROUGE-1/2/L", "change vs fp32", "peak RSS MiB",
              "time: encoder / decoder steps / other"]
    rows = []
    for (library, mode, extra), run in results.items():
        dtype = dtype_of(extra)
        exact = results["transformers", mode, FP32]
        ref, note = same_dtype_reference(results, mode, dtype)
        same = sum(a == b for a, b in zip(run["outputs"], exact["outputs"]))
        backend = json.loads(extra).get("int8_backend")
        name = library + (" (no speculation)" if "speculative" in extra else "") + (f" [{backend}]" if backend else "")
        scores, change = "", ""
        if rouge:
            mine, base = rouge[library, mode, extra], rouge["transformers", mode, FP32]
            scores = rouge_text(mine)
            change = "/".join(f"{mine[k] - base[k]:+.2f}" for k in ("rouge1", "rouge2", "rougeL"))
        rows.append([mode, dtype + ("" if dtype == "float32" else ", not exact"), name, f"{run['seconds']:.2f}",
                     f"{run['docs'] / run['seconds']:.2f}", f"{run['tokens'] / run['seconds']:.0f}",
                     f"{ref['seconds'] / run['seconds']:.2f}x{note}",
                     f"{run['cpu_s']:.2f} ({ref['cpu_s'] / run['cpu_s']:.2f}x)", f"{same}/{run['docs']}",
                     scores, change, f"{run['peak_rss_mib']:.0f}", split_text(run)])
    spec, plain = results.get(("encdec", "greedy", FP32)), results.get(("encdec", "greedy", '{"speculative": false}'))
    text = markdown(header, rows)
    if spec and plain:
        flips = sum(a != b for a, b in zip(spec["outputs"], plain["outputs"]))
        text += f"\n\nspeculative vs plain greedy (encdec): {flips} of {spec['docs']} documents differ (near-tie flips)"
    return text


def rouge_scores(results: dict[tuple, dict], folder: str, docs: int) -> dict[tuple, dict[str, float]]:
    """ROUGE-1/2/L F1 (x100) of every run's summaries against the reference highlights."""
    return {key: rouge_of(folder, docs, run["outputs"]) for key, run in results.items()}



def main(model: str | None, docs: int, threads: int, repeats: int, int8_candidates: list[str] = (),
         modes: list[str] = tuple(MODES), dtypes: list[str] = ("float32", "bfloat16", "int8")) -> None:
    """`int8_candidates` (int8_candidates.py) add int8 rows for other backends, next to encdec's;
    `modes` and `dtypes` keep only those runs (transformers' fp32 run, the reference, always stays)."""
    folder = trained_model(model)
    print(machine(threads))
    runs = RUNS + [("encdec", mode, {"dtype": "int8", "int8_backend": name})
                   for name in int8_candidates for mode in MODES]
    runs = [(library, mode, extra) for library, mode, extra in runs if mode in modes
            and (extra.get("dtype", "float32") in dtypes or (library == "transformers" and not extra))]
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        print(f"ONEDNN_MAX_CPU_ISA={os.environ['ONEDNN_MAX_CPU_ISA']}: oneDNN kept to these instructions")
    results = run_all(folder, docs, threads, repeats, runs)
    print(table(results, rouge_scores(results, folder, docs)))
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
