"""The `encdec` command line.

    encdec summarize --model PATH_OR_ID [--num-beams 4 ...] [FILE ...] < documents.txt
    encdec run --task summarization --model PATH_OR_ID [--device 0] < documents.txt

`run` is transformers' old `transformers-cli run` (encdec.apps.run_command); `summarize` below.

One document per input line (files in order, or stdin), one summary per output line; an empty
input line gives an empty output line, so lines stay aligned. Options left out keep the model's
stored generation config. --model takes a model folder, a Hub id or a train.py .ckpt. Input that
is not UTF-8 is decoded with U+FFFD for the bad bytes and named in one warning; a progress line
goes to stderr when there is more than one batch.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import BinaryIO

from encdec.apps.run_command import add_run_parser


def _switch(text: str) -> bool | str:
    """--early-stopping: true, false or never (see encdec/generation/beam.py)."""
    value = {"true": True, "false": False, "never": "never"}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true, false or never, got {text!r}")
    return value


# CLI flag -> GenerationConfig field; only flags given on the command line override the model's.
# Every field a user sets, except those in NOT_FLAGS (tests/test_cli.py holds both against
# GenerationConfig and conf/generation/stored.yaml, so the lists cannot drift).
GENERATION_FLAGS = {
    "num_beams": int, "max_length": int, "min_length": int, "max_new_tokens": int, "min_new_tokens": int,
    "length_penalty": float, "no_repeat_ngram_size": int, "repetition_penalty": float, "early_stopping": _switch,
}
# One summary per input line, the same on every run (sampling is for the Python API); the special
# ids are the model's.
NOT_FLAGS = ("num_return_sequences", "do_sample", "temperature", "top_k", "top_p",
             "decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id", "extra",
             "speculative")  # exact: it changes the speed, never the summaries (Python: speculative=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="encdec", description="Encoder-decoder models in plain PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True)
    summarize = commands.add_parser("summarize", help="summarise one document per line")
    summarize.add_argument("--model", required=True, help="model folder, Hugging Face Hub id or train.py .ckpt")
    summarize.add_argument("files", nargs="*", help="input files (default: stdin)")
    for name, kind in GENERATION_FLAGS.items():
        summarize.add_argument("--" + name.replace("_", "-"), type=kind, default=None, dest=name)
    summarize.add_argument("--batch-size", type=int, default=8)
    summarize.add_argument("--device", default=None,
                           help="e.g. cpu, cuda, cuda:1; 0 and -1 as in transformers pipelines (default: cpu)")
    summarize.add_argument("--dtype", default=None,
                           help="float32, bfloat16 or float16 (default: the model's); "
                                "int8: dynamic int8 on the CPU, faster, not exact")
    add_run_parser(commands)
    return parser


def read_documents(files: list[str], stdin: BinaryIO) -> list[str]:
    """The lines of the files (or stdin), decoded as UTF-8; bad bytes become U+FFFD, with one
    warning naming where."""
    documents, bad = [], []
    for name in files or ["-"]:
        stream = stdin if name == "-" else open(name, "rb")
        try:
            for number, raw in enumerate(stream, 1):
                documents.append(decode_line(raw, f"{'<stdin>' if name == '-' else name}:{number}", bad))
        finally:
            if stream is not stdin:
                stream.close()
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        print(f"encdec: warning: not UTF-8 (bad bytes replaced by U+FFFD): {', '.join(bad[:3])}{more}; "
              "convert the input, e.g. iconv -f latin1 -t utf-8", file=sys.stderr)
    return documents


def decode_line(raw: bytes, where: str, bad: list[str]) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        bad.append(where)
        text = raw.decode("utf-8", errors="replace")
    return text.rstrip("\r\n")


def run_summarize(args: argparse.Namespace) -> int:
    from encdec.serving.devices import check_device
    from encdec.serving.loading import load_summarizer
    from encdec.serving.progress import Progress

    overrides = {k: getattr(args, k) for k in GENERATION_FLAGS if getattr(args, k) is not None}
    try:
        check_device(args.device, "--device")
        documents = read_documents(args.files, sys.stdin.buffer)
        with warnings.catch_warnings(record=True) as caught:  # e.g. bf16 on a CPU without bf16 units
            summarizer = load_summarizer(args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    except Exception as exc:  # bad path, files, device, dtype or checkpoint
        return fail(exc)
    for warning in caught:
        print(f"encdec: warning: {warning.message}", file=sys.stderr)
    bar = Progress(len(documents), 0) if len(documents) > args.batch_size else None
    try:
        summaries = summarizer(documents, progress=bar and (lambda done, total: bar.update(done - bar.count)),
                               **overrides)
    except ValueError as exc:  # bad generation settings
        return fail(exc)
    if bar is not None:
        sys.stderr.write("\n")
    sys.stdout.write("".join(s + "\n" for s in summaries))
    return 0


def run_task(args: argparse.Namespace) -> int:
    """`encdec run`: transformers-cli's run command (encdec.apps.run_command)."""
    from encdec.apps.run_command import run

    try:
        run(args, sys.stdin.buffer, sys.stdout)
    except Exception as exc:  # bad input: paths, files, device, model folder, settings
        return fail(exc)
    return 0


def fail(exc: Exception) -> int:
    """One `encdec: error:` line and status 2 for bad input; anything else keeps its traceback."""
    from encdec.apps.entry import USAGE_EXIT_STATUS, unwrap
    from encdec.base.errors import one_line

    exc = unwrap(exc)
    if not isinstance(exc, (OSError, ValueError, RuntimeError)):
        raise exc
    print(f"encdec: error: {one_line(exc)}", file=sys.stderr)
    return USAGE_EXIT_STATUS


class _WarningLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"encdec: {record.levelname.lower()}: {record.getMessage()}"


def log_warnings_as_lines() -> None:
    """encdec's warnings (a truncated document, ...) as `encdec: warning: ...` lines on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_WarningLine())
    handler.setLevel(logging.WARNING)
    logging.getLogger("encdec").addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_warnings_as_lines()
    if args.command == "summarize":
        return run_summarize(args)
    if args.command == "run":
        return run_task(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
