"""The `encdec` command line.

    encdec summarize --model PATH_OR_ID [--num-beams 4 ...] [FILE ...] < documents.txt

One document per input line (files in order, or stdin), one summary per output line; an empty
input line gives an empty output line, so lines stay aligned. Options left out keep the model's
stored generation config.
"""

from __future__ import annotations

import argparse
import sys
from typing import Iterator, TextIO

# CLI flag -> GenerationConfig field; only flags given on the command line override the model's.
GENERATION_FLAGS = {
    "num_beams": int, "max_length": int, "min_length": int, "max_new_tokens": int, "min_new_tokens": int,
    "length_penalty": float, "no_repeat_ngram_size": int, "repetition_penalty": float,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="encdec", description="Encoder-decoder models in plain PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True)
    summarize = commands.add_parser("summarize", help="summarise one document per line")
    summarize.add_argument("--model", required=True, help="model folder or Hugging Face Hub id")
    summarize.add_argument("files", nargs="*", help="input files (default: stdin)")
    for name, kind in GENERATION_FLAGS.items():
        summarize.add_argument("--" + name.replace("_", "-"), type=kind, default=None, dest=name)
    summarize.add_argument("--batch-size", type=int, default=8)
    summarize.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1 (default: cpu)")
    summarize.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: the model's)")
    return parser


def read_documents(files: list[str], stdin: TextIO) -> Iterator[str]:
    for name in files or ["-"]:
        stream = stdin if name == "-" else open(name, encoding="utf-8")
        try:
            yield from (line.rstrip("\r\n") for line in stream)
        finally:
            if stream is not stdin:
                stream.close()


def run_summarize(args: argparse.Namespace) -> int:
    from encdec.summarize import Summarizer

    overrides = {k: getattr(args, k) for k in GENERATION_FLAGS if getattr(args, k) is not None}
    try:
        summarizer = Summarizer.from_pretrained(
            args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size
        )
        documents = list(read_documents(args.files, sys.stdin))
    except (OSError, ValueError, RuntimeError) as exc:  # bad path, files, device or dtype
        return fail(exc)
    try:
        summaries = summarizer(documents, **overrides)
    except ValueError as exc:  # bad generation settings
        return fail(exc)
    sys.stdout.write("".join(s + "\n" for s in summaries))
    return 0


def fail(exc: Exception) -> int:
    message = " ".join(str(exc).split())
    print(f"encdec: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "summarize":
        return run_summarize(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
