"""Long sources: ModernBERT encoder forward + backward time and peak memory per token at 512, 2,048 and
8,192 tokens, encdec beside transformers' ModernBertModel, one process per measurement.

Every step holds the same number of tokens (`--tokens`: 16 x 512, 4 x 2,048, 1 x 8,192), so a
library whose memory is linear in length shows the same memory per token at every length. encdec
runs its training path (packed tokens: global layers attend per sequence, local layers in blocks of
the window, encdec.nn.local_attention) and its padded path; transformers runs SDPA with its masks
(a T x T mask for the local layers). Peak memory is the process's resident high-water mark during the
steps minus its size before them (Linux), so each measurement runs in a fresh process.

    python benchmarks/long_inputs.py                      # a 6-layer ModernBERT-shaped encoder, CPU
    python benchmarks/long_inputs.py --base --device cuda  # ModernBERT-base's shape on a GPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_common import machine, markdown, peak_rss_mib, reset_peak_rss

LIBRARIES = ("encdec packed", "encdec padded", "transformers")
# ModernBERT-base is 22 layers x 768 (12 heads, GeGLU 1,152); the CPU default keeps its head size,
# window and global-every-3rd pattern at a width and depth two cores finish in minutes.
SMALL = dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=6, intermediate_size=576)
BASE = dict(num_hidden_layers=22, hidden_size=768, num_attention_heads=12, intermediate_size=1152)


def write_model(folder: Path, shape: dict[str, int], vocab: int) -> None:
    """A random ModernBertModel folder (transformers writes it; both libraries read it)."""
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.ModernBertConfig(vocab_size=vocab, max_position_embeddings=8192, local_attention=128,
                                           global_attn_every_n_layers=3, pad_token_id=0, **shape)
    torch.manual_seed(0)
    transformers.ModernBertModel(config).save_pretrained(folder)


def load_encoder(library: str, folder: str, device: str):
    """A callable (input_ids, attention_mask) -> last hidden states."""
    if library == "transformers":
        import transformers

        transformers.logging.set_verbosity_error()
        model = transformers.ModernBertModel.from_pretrained(folder, attn_implementation="sdpa").to(device)
        return model, lambda ids, mask: model(input_ids=ids, attention_mask=mask).last_hidden_state
    import encdec
    from encdec.nn.packing import Packing

    backbone = encdec.ModernBertModel.from_pretrained(folder).backbone.to(device)
    if library == "encdec padded":
        return backbone, lambda ids, mask: backbone(ids, mask)
    return backbone, lambda ids, mask: backbone(ids, mask, packing=Packing.from_mask(mask))


def worker(library: str, folder: str, length: int, tokens: int, repeats: int, device: str, dtype: str) -> dict:
    """Time and peak memory of `repeats` forward + backward steps of tokens // length rows."""
    model, encode = load_encoder(library, folder, device)
    model.train()
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    rows = max(1, tokens // length)
    g = torch.Generator().manual_seed(length)
    ids = torch.randint(5, model.config.vocab_size, (rows, length), generator=g).to(device)
    mask = torch.ones_like(ids)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        reset_peak_rss()
        before = peak_rss_mib()
    times = []
    for _ in range(repeats + 1):  # the first step warms up and is not timed
        start = time.perf_counter()
        with autocast:
            hidden = encode(ids, mask)
        hidden.float().square().mean().backward()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
        del hidden
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mib()
    seconds = sorted(times[1:])[len(times[1:]) // 2]
    return dict(seconds=seconds, tokens=rows * length, peak_mib=peak - before)


def run(args: list[str]) -> dict:
    """One measurement in a fresh process; a process the kernel kills for memory is reported, not fatal."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode != 0:
        return dict(error=(done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:80])
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict[tuple[str, int], dict]) -> str:
    """Per length and library: µs and KiB of peak memory per token, and each against transformers."""
    rows = []
    for (library, length), r in results.items():
        if "error" in r:
            rows.append([str(length), library, "failed: " + r["error"], "", "", ""])
            continue
        ref = results.get(("transformers", length), {})
        us, kib = r["seconds"] / r["tokens"] * 1e6, r["peak_mib"] * 1024 / r["tokens"]
        speed = f"{ref['seconds'] / r['seconds']:.2f}x" if "seconds" in ref else "-"
        memory = f"{r['peak_mib'] / ref['peak_mib']:.2f}x" if ref.get("peak_mib") else "-"
        rows.append([str(length), library, f"{us:.1f}", f"{kib:.1f}", speed, memory])
    header = ["source tokens", "library", "µs / token (fwd+bwd)", "peak KiB / token", "speed vs transformers",
              "memory vs transformers"]
    return markdown(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--tokens", type=int, default=8192, help="tokens per step at every length")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--base", action="store_true", help="ModernBERT-base's shape (22 x 768)")
    parser.add_argument("--shape", type=json.loads, default=None, help="JSON of ModernBertConfig sizes")
    parser.add_argument("--vocab", type=int, default=50368)
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--worker", nargs=2, metavar=("LIBRARY", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        result = worker(args.worker[0], args.worker[1], args.lengths[0], args.tokens, args.repeats, args.device,
                        args.dtype)
        print(json.dumps(result))
        return
    shape = args.shape or (BASE if args.base else SMALL)
    with tempfile.TemporaryDirectory() as tmp:
        write_model(Path(tmp), shape, args.vocab)
        results = {}
        for length in args.lengths:
            for library in args.libraries:
                common = ["--tokens", str(args.tokens), "--repeats", str(args.repeats), "--threads", str(args.threads),
                          "--device", args.device, "--dtype", args.dtype]
                results[library, length] = run(["--worker", library, tmp, "--lengths", str(length), *common])
                print(library, length, results[library, length], file=sys.stderr, flush=True)
    print(f"ModernBERT-shaped encoder {shape}, vocabulary {args.vocab}, {args.tokens} tokens a step, {args.dtype}, "
          f"{args.device}, median of {args.repeats} steps after one warm-up")
    print(machine(args.threads))
    print(table(results))


if __name__ == "__main__":
    main()
