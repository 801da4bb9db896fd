"""Generation speed and memory, encdec against transformers on the same weights, in two tables.

    python benchmarks/generate.py [--model DIR] [--docs 48] [--repeats 1] [--threads 2] [--int8-candidates torchao]
    python benchmarks/generate.py --synthetic [--repeats 3] [--modes greedy,beam4]

Real workload (the default): the quickstart's fine-tuned MiniLM bert2bert (`--model DIR`, or trained
once with `python train.py` into a cache folder), the first `--docs` articles of the sample test
split, sorted by length into batches of 16, natural stopping at EOS. Greedy search (max_length 142)
and the CNN/DailyMail beam settings (beam 4, min_length 56, max_length 142, length_penalty 2.0,
no_repeat_ngram_size 3, early_stopping). Both libraries get the same batches, in every serving
dtype: fp32 (exact), bf16 (both libraries), int8 (encdec); each (library, mode, dtype) runs in a
fresh process, and each row gives its ROUGE change against fp32 (benchmarks/real_workload.py).
The table gives docs/s and generated tokens/s (up to and with each EOS), how many outputs equal
the exact fp32 ones, the peak RSS over the timed calls, and the time split:
encoder, decoder steps (the decoder and its vocabulary projection) and everything else (search,
bookkeeping). encdec greedy runs with copy-speculative decoding (its default) and without; the
"flips" column counts documents where the two differ (near-ties decided differently by the
verification pass's floating-point order).

Synthetic workload (`--synthetic`): the packaged all-MiniLM-L6-v2 warm-started on both sides, batch 8
of 512 random tokens, exactly 64 new tokens, plus the floor table (encoder + decoder weight matmuls).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

import real_workload
import torch
from bench_common import load, markdown, peak_rss_mib, reset_peak_rss

THREADS = 2
BATCH, SRC_LEN, NEW_TOKENS = 8, 512, 64
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MODES = {
    "greedy": dict(num_beams=1),
    "beam4": dict(num_beams=4, no_repeat_ngram_size=3, length_penalty=2.0, early_stopping=True),
}


def make_inputs(vocab: int = 30522, seed: int = 0) -> dict[str, torch.Tensor]:
    """8 sources of 512 real tokens: [CLS] random word pieces [SEP]."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (BATCH, SRC_LEN), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids))


def model_folder() -> str:
    """An HF EncoderDecoderModel folder both libraries load, written once."""
    import encdec

    folder = os.path.join(tempfile.gettempdir(), "encdec-bench-generate-minilm")
    if not os.path.exists(os.path.join(folder, "config.json")):
        torch.manual_seed(0)
        model = encdec.EncoderDecoderModel.from_encoder_decoder_pretrained(
            MINILM, MINILM, decoder_start_token_id=101, pad_token_id=0, eos_token_id=102
        )
        model.save_pretrained(folder)
    return folder


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20



def floor_parts(model, inputs: dict[str, torch.Tensor], rows: int) -> dict:
    """What no decoding strategy can skip, timed alone in encdec: the encoder pass, and the
    decoder's weight matmuls (every layer's linears and the vocabulary projection) for 64 steps of
    `rows` rows, with nothing else in between (no attention, norms or search)."""
    from torch import nn

    with torch.no_grad():
        start = time.perf_counter()
        model.encode(inputs["input_ids"], inputs["attention_mask"])
        encoder = time.perf_counter() - start
        weights = [m.weight for name, m in model.decoder.named_modules()
                   if isinstance(m, nn.Linear) and not name.endswith("cross_attn.kv")]  # cross K/V: once per source
        weights.append(model.decoder.output_embeddings())
        features = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in weights}
        start = time.perf_counter()
        for _ in range(NEW_TOKENS):
            for w in weights:
                nn.functional.linear(features[w.shape[1]], w)
        matmuls = time.perf_counter() - start
    return dict(encoder_s=encoder, decoder_matmuls_s=matmuls)


def worker(library: str, mode: str, folder: str, threads: str) -> dict:
    """One timed generate call in this (fresh) process, after a small warm-up call."""
    torch.set_num_threads(int(threads))
    model = load(library, folder)
    inputs = make_inputs()
    kwargs = dict(MODES[mode], min_new_tokens=NEW_TOKENS, max_new_tokens=NEW_TOKENS)
    with torch.no_grad():
        warm_up = dict(kwargs, min_new_tokens=2, max_new_tokens=2)
        model.generate(inputs["input_ids"][:1, :16], attention_mask=inputs["attention_mask"][:1, :16], **warm_up)
        reset_peak_rss()
        before = rss_mib()
        start = time.perf_counter()
        out = model.generate(**inputs, **kwargs)
        seconds = time.perf_counter() - start
    peak = peak_rss_mib()
    run = dict(
        library=library, mode=mode, seconds=seconds, tokens_per_s=BATCH * NEW_TOKENS / seconds,
        peak_rss_mib=peak, growth_mib=peak - before, shape=list(out.shape),
        ids_sha=hashlib.sha1(out.numpy().tobytes()).hexdigest()[:12],
    )
    if library == "encdec":
        run.update(floor_parts(model, inputs, BATCH * MODES[mode]["num_beams"]))
    return run


def run_worker(library: str, mode: str, folder: str, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", library, mode, folder, str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def best(runs: list[dict]) -> dict:
    """Fastest run's speed; the smallest peak memory and floor parts seen."""
    fastest = min(runs, key=lambda r: r["seconds"])
    smallest = {k: min(r[k] for r in runs) for k in ("peak_rss_mib", "growth_mib", "encoder_s", "decoder_matmuls_s")
                if k in fastest}
    return dict(fastest, **smallest)


def memory(run: dict) -> str:
    return f"{run['peak_rss_mib']:.0f} ({run['growth_mib']:.0f})"



def pairs(results: dict[tuple[str, str], dict]) -> list[tuple[str, dict, dict]]:
    """(mode, encdec's run, transformers' run) for each mode."""
    return [(mode, results["encdec", mode], results["transformers", mode]) for mode in sorted({m for _, m in results})]


def table(results: dict[tuple[str, str], dict]) -> str:
    header = ["mode", "encdec tokens/s", "transformers tokens/s", "speed-up", "encdec peak RSS (growth) MiB",
              "transformers peak RSS (growth) MiB", "same ids"]
    rows = [[mode, f"{ours['tokens_per_s']:.1f}", f"{ref['tokens_per_s']:.1f}",
             f"{ours['tokens_per_s'] / ref['tokens_per_s']:.2f}x", memory(ours), memory(ref),
             "yes" if ours["ids_sha"] == ref["ids_sha"] else "NO"] for mode, ours, ref in pairs(results)]
    return markdown(header, rows)


def floor_table(results: dict[tuple[str, str], dict]) -> str:
    """Whether 3x transformers is within reach: the time it allows against the part of encdec's
    time that no decoding strategy removes (encoder + the decoder's weight matmuls)."""
    header = ["mode", "transformers s", "3x target s", "encdec s", "encdec encoder s", "decoder weight matmuls s",
              "floor (encoder + matmuls) s", "best possible speed-up with these kernels"]
    rows = []
    for mode, ours, ref in pairs(results):
        floor = ours["encoder_s"] + ours["decoder_matmuls_s"]
        rows.append([mode, f"{ref['seconds']:.2f}", f"{ref['seconds'] / 3:.2f}", f"{ours['seconds']:.2f}",
                     f"{ours['encoder_s']:.2f}", f"{ours['decoder_matmuls_s']:.2f}", f"{floor:.2f}",
                     f"{ref['seconds'] / floor:.2f}x"])
    return markdown(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a fine-tuned HF folder; default: the quickstart model, trained once")
    parser.add_argument("--docs", type=int, default=48, help="sample test articles (real workload)")
    parser.add_argument("--synthetic", action="store_true", help="the synthetic table (and its floor) instead")
    parser.add_argument("--repeats", type=int, default=None, help="default: 1 (real), 3 (synthetic)")
    parser.add_argument("--modes", default=",".join(MODES), help="modes to run")
    parser.add_argument("--dtypes", default="float32,bfloat16,int8", help="real workload: serving dtypes to run")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--int8-candidates", default="", help="real workload: also int8 through these backends "
                        "of benchmarks/int8_candidates.py (torchao, onednn), beside encdec's torch.ao int8")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--real-worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    if args.real_worker:
        library, mode, extra, folder, docs, threads = args.real_worker
        print(json.dumps(real_workload.worker(library, mode, extra, folder, int(docs), int(threads))))
        return
    if not args.synthetic:
        real_workload.main(args.model, args.docs, args.threads, args.repeats or 1,
                           [name for name in args.int8_candidates.split(",") if name], args.modes.split(","),
                           args.dtypes.split(","))
        return
    folder = model_folder()
    results: dict[tuple[str, str], list[dict]] = {}
    for mode in args.modes.split(","):
        for _ in range(args.repeats or 3):
            for library in ("encdec", "transformers"):
                run = run_worker(library, mode, folder, args.threads)
                print(json.dumps(run), file=sys.stderr)
                results.setdefault((library, mode), []).append(run)
    summary = {key: best(runs) for key, runs in results.items()}
    print(table(summary), "", floor_table(summary), sep="\n")

if __name__ == "__main__":
    main()
