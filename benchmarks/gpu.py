"""The GPU benchmark: encdec against transformers, side by side in one run, on one CUDA device.

    python benchmarks/gpu.py                      # bert-base bert2bert, bf16, batch 16 x 512/128
    python benchmarks/gpu.py --device cpu --tiny  # a seconds-long smoke run of the same code (CI)

Training: `--steps` timed optimizer steps (after `--warmup`) of a random bert-base-sized bert2bert
(weights do not change the speed of a training step), batch 16 of 512-token sources and 128-token
targets with the padding rules of benchmarks/train_step.py, bf16 autocast with fp32 master
weights and fused AdamW for both libraries: encdec through its training fast path, transformers
as Trainer runs it (`model(**batch).loss` under autocast). Tokens/s counts real tokens; MFU is the
model FLOPs of the real tokens over the measured bf16 matmul peak of this device.
Generation: the same model in bf16, 16 sources of 512 tokens, greedy and the CNN/DailyMail beam
settings, with the number of new tokens fixed (min = max = 64: random weights have no natural
stopping), docs/s for both and how many outputs are identical.
Prints one markdown table; paste it into docs/benchmarks.md with the device name.
"""

from __future__ import annotations

import argparse
import time

import torch
from train_step import make_batch, train_flops

BEAM = dict(num_beams=4, length_penalty=2.0, no_repeat_ngram_size=3, early_stopping=True)


def build_models(tiny: bool, device: str):
    """The same random weights in both libraries (moved through a saved folder)."""
    import tempfile

    import transformers

    import encdec

    sizes = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128) if tiny else {}
    config = encdec.EncoderDecoderConfig.from_encoder_decoder_configs(
        encdec.BertConfig(**sizes), encdec.BertConfig(**sizes), decoder_start_token_id=101, pad_token_id=0,
        eos_token_id=102,
    )
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="encdec-gpu-bench-") as folder:
        encdec.EncoderDecoderModel(config).save_pretrained(folder)
        ours = encdec.EncoderDecoderModel.from_pretrained(folder).to(device)
        theirs = transformers.EncoderDecoderModel.from_pretrained(folder).to(device)
    return {"encdec": ours, "transformers": theirs}


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory_mb(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def time_training(library: str, model, batch: dict, args: argparse.Namespace) -> dict:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    kwargs = {"return_logits": False} if library == "encdec" else {}
    reset_peak(args.device)
    times = []
    for i in range(args.warmup + args.steps):
        synchronize(args.device)
        start = time.perf_counter()
        with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16):
            loss = model(**batch, **kwargs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(args.device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    real = int(batch["attention_mask"].sum() + (batch["labels"] != -100).sum())
    return dict(s=seconds, tokens_per_s=real / seconds, flops=train_flops(model.config, batch),
                memory=peak_memory_mb(args.device), loss=loss.item())


@torch.no_grad()
def time_generation(model, batch: dict, settings: dict, args: argparse.Namespace) -> tuple[float, torch.Tensor]:
    model.eval()
    kwargs = dict(settings, min_new_tokens=args.new_tokens, max_new_tokens=args.new_tokens)
    model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)  # warm-up
    synchronize(args.device)
    start = time.perf_counter()
    ids = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
    synchronize(args.device)
    return time.perf_counter() - start, ids


def bf16_matmul_peak(device: str, size: int) -> float:
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(10):
        synchronize(device)
        start = time.perf_counter()
        a @ a
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny model and batch: a smoke run of this script")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    if args.tiny:
        args.steps, args.warmup, args.batch, args.new_tokens = 2, 1, 2, 4
    models = build_models(args.tiny, args.device)
    vocab = models["encdec"].config.decoder.vocab_size
    batch = {k: v.to(args.device) for k, v in make_batch(args.batch, vocab, low=min(1000, vocab // 2)).items()}
    peak = bf16_matmul_peak(args.device, 512 if args.tiny else 8192)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(f"{name}; torch {torch.__version__}; bf16 matmul peak {peak / 1e12:.1f} TFLOP/s")
    print("| workload | library | s | tokens/s or docs/s | peak MB | MFU | identical |")
    print("|---|---|---|---|---|---|---|")
    train = {lib: time_training(lib, m, batch, args) for lib, m in models.items()}
    for lib, r in train.items():
        print(f"| train step bf16 | {lib} | {r['s']:.4f} | {r['tokens_per_s']:.0f} tok/s | {r['memory']:.0f} | "
              f"{r['flops'] / r['s'] / peak:.1%} | |")
    print(f"| train step bf16 | **ratio** | | "
          f"**{train['encdec']['tokens_per_s'] / train['transformers']['tokens_per_s']:.2f}x** | "
          f"{train['encdec']['memory'] / train['transformers']['memory']:.2f}x | | |")
    for workload, settings in (("greedy", {}), ("beam 4 (CNN)", BEAM)):
        for m in models.values():
            m.to(torch.bfloat16)
        results = {lib: time_generation(m, batch, settings, args) for lib, m in models.items()}
        same = sum(torch.equal(a, b) for a, b in zip(results["encdec"][1], results["transformers"][1]))
        for lib, (seconds, _) in results.items():
            print(f"| {workload} | {lib} | {seconds:.3f} | {args.batch / seconds:.1f} docs/s | | | "
                  f"{same}/{args.batch} |")
        print(f"| {workload} | **ratio** | | **{results['transformers'][0] / results['encdec'][0]:.2f}x** | | | |")


if __name__ == "__main__":
    main()
