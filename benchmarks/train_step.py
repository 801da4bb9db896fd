"""Training-step speed and memory, encdec against transformers on the same weights and batches.

    python benchmarks/train_step.py [--steps 5] [--cases minilm,bert-base] [--threads 2]
                                    [--repeats 1] [--optimizer fused|foreach]

Each (library, case) runs in a fresh subprocess so peak RSS is its own. Cases:
- minilm: the packaged all-MiniLM-L6-v2 warm-started on both sides; batch 4 of 512-token sources and
  128-token targets, sources 60-100% and targets 30-100% real tokens (seeded).
- bert-base: a random bert-base-sized bert2bert; batch 2, same length rules.
Train mode (dropout on), AdamW step, fp32, 2 threads. The optimizer is the same for both libraries:
fused AdamW by default (transformers' Trainer default with torch >= 2.8), `--optimizer foreach` for
torch's plain default. encdec runs its training path (`return_logits=False`), transformers its
standard `model(**batch).loss`. Tokens/s counts real (non-pad) source and target tokens. MFU is the
model FLOPs of the real tokens per second over this machine's measured fp32 matmul peak. CPU s/step
(process CPU time, all threads) is printed beside wall time: with one thread it is the compute time,
unaffected by waiting for a core on a busy machine. `--repeats N` alternates the libraries N times
and keeps each one's fastest run, which is the figure least disturbed by other work on a shared
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

THREADS = 2
CASES = {"minilm": dict(batch=4), "bert-base": dict(batch=2)}
SRC_LEN, TGT_LEN = 512, 128


def make_batch(batch: int, vocab: int, seed: int = 0, low: int = 1000) -> dict[str, torch.Tensor]:
    """Right-padded sources (60-100% full) and -100-padded labels (30-100% full); token ids from
    `low` up (above the special tokens)."""
    g = torch.Generator().manual_seed(seed)
    src_real = torch.randint(int(0.6 * SRC_LEN), SRC_LEN + 1, (batch,), generator=g)
    tgt_real = torch.randint(int(0.3 * TGT_LEN), TGT_LEN + 1, (batch,), generator=g)
    input_ids = torch.randint(low, vocab, (batch, SRC_LEN), generator=g)
    attention_mask = (torch.arange(SRC_LEN)[None] < src_real[:, None]).long()
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    labels = torch.randint(low, vocab, (batch, TGT_LEN), generator=g)
    labels = labels.masked_fill(torch.arange(TGT_LEN)[None] >= tgt_real[:, None], -100)
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def model_folder(case: str) -> str:
    """An HF EncoderDecoderModel folder both libraries load, written once per benchmark run."""
    import encdec

    folder = os.path.join(tempfile.gettempdir(), f"encdec-bench-{case}")
    if not os.path.exists(os.path.join(folder, "config.json")):
        if case == "minilm":
            name = "sentence-transformers/all-MiniLM-L6-v2"
            model = encdec.EncoderDecoderModel.from_encoder_decoder_pretrained(name, name)
        else:
            config = encdec.EncoderDecoderConfig.from_encoder_decoder_configs(encdec.BertConfig(), encdec.BertConfig())
            model = encdec.EncoderDecoderModel(config)
        model.config.decoder_start_token_id, model.config.pad_token_id = 101, 0
        model.save_pretrained(folder)
    return folder


def load(library: str, folder: str) -> torch.nn.Module:
    if library == "encdec":
        from encdec import EncoderDecoderModel
    else:
        from transformers import EncoderDecoderModel
    return EncoderDecoderModel.from_pretrained(folder)


def make_optimizer(model: torch.nn.Module, kind: str) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-5, **{kind: True})


def step_fn(library: str, model: torch.nn.Module, batch: dict):
    kwargs = {"return_logits": False} if library == "encdec" else {}
    return lambda: model(**batch, **kwargs).loss


def worker(library: str, case: str, steps: int, threads: int, optimizer_kind: str) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = load(library, model_folder(case)).train()
    batch = make_batch(CASES[case]["batch"], model.config.decoder.vocab_size)
    optimizer = make_optimizer(model, optimizer_kind)
    loss_of = step_fn(library, model, batch)
    times, cpu_times = [], []
    for i in range(steps + 1):  # the first step warms up allocators and caches
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = loss_of()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    seconds = sorted(times[1:])[len(times[1:]) // 2]  # median
    cpu_seconds = sorted(cpu_times[1:])[len(cpu_times[1:]) // 2]
    real = int(batch["attention_mask"].sum() + (batch["labels"] != -100).sum())
    return dict(
        library=library, case=case, s_per_step=seconds, cpu_s_per_step=cpu_seconds, tokens_per_s=real / seconds,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        flops_per_step=train_flops(model.config, batch), loss=loss.item(),
    )


def train_flops(config, batch: dict) -> float:
    """3x the forward matmul FLOPs on real tokens (backward costs twice the forward)."""
    e, d = config.encoder, config.decoder
    src = batch["attention_mask"].sum(1).double()
    tgt = (batch["labels"] != -100).sum(1).double()
    enc = e.num_hidden_layers * (src * (8 * e.hidden_size**2 + 4 * e.hidden_size * e.intermediate_size)
                                 + 4 * src**2 * e.hidden_size)
    c = d.hidden_size
    dec = d.num_hidden_layers * (tgt * (12 * c**2 + 4 * c * d.intermediate_size) + src * 4 * c**2
                                 + 4 * tgt**2 * c / 2 + 4 * tgt * src * c)
    head = tgt * (2 * c**2 + 2 * c * d.vocab_size)
    return float(3 * (enc + dec + head).sum())


def matmul_peak_flops(threads: int) -> float:
    """fp32 matmul FLOP/s of this machine at `threads` threads (best of several 2048^3 products)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best


def run(library: str, case: str, args: argparse.Namespace) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", library, case, "--steps", str(args.steps),
         "--threads", str(args.threads), "--optimizer", args.optimizer],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def fastest_runs(case: str, args: argparse.Namespace) -> dict[str, dict]:
    """Each library's fastest of `args.repeats` runs, the libraries alternating."""
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for lib in ("transformers", "encdec"):
            r = run(lib, case, args)
            if lib not in best or r["s_per_step"] < best[lib]["s_per_step"]:
                best[lib] = r
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--cases", default="minilm,bert-base")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--optimizer", choices=("fused", "foreach"), default="fused")
    parser.add_argument("--worker", nargs=2, metavar=("LIBRARY", "CASE"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps, args.threads, args.optimizer)))
        return
    peak = matmul_peak_flops(args.threads)
    print(f"fp32 matmul peak, {args.threads} threads: {peak / 1e9:.1f} GFLOP/s; "
          f"{args.optimizer} AdamW; fastest of {args.repeats} run(s) of {args.steps} steps (median step)")
    print("| case | library | s/step | CPU s/step | tokens/s | peak RSS MB | MFU | loss |")
    print("|---|---|---|---|---|---|---|---|")
    for case in args.cases.split(","):
        model_folder(case)
        results = fastest_runs(case, args)
        for lib, r in results.items():
            mfu = r["flops_per_step"] / r["s_per_step"] / peak
            print(f"| {case} | {lib} | {r['s_per_step']:.3f} | {r['cpu_s_per_step']:.3f} | {r['tokens_per_s']:.0f} | "
                  f"{r['peak_rss_mb']:.0f} | {mfu:.1%} | {r['loss']:.4f} |")
        ours, ref = results["encdec"], results["transformers"]
        print(f"| {case} | **ratio** | | {ref['cpu_s_per_step'] / ours['cpu_s_per_step']:.2f}x | "
              f"**{ours['tokens_per_s'] / ref['tokens_per_s']:.2f}x** | "
              f"**{ours['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x** | | |")


if __name__ == "__main__":
    main()
