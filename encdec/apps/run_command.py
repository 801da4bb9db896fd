"""`encdec run --task summarization --model M [--device D]`: transformers' old `transformers-cli run`
for encoder-decoder models.

As that command: documents come one per line from stdin (or `--input`; `--format csv|json` with
`--column` for tables), each goes through `encdec.pipeline(task, model=..., device=...)`, and the
results are written together at the end: for piped input printed as one Python list of dicts
(`[{'summary_text': ...}, ...]`), as a JSON list or a CSV table with `--output` for the other formats.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from encdec.base.errors import UsageError

FORMATS = ("infer", "pipe", "csv", "json")
TASKS = ("summarization", "text2text-generation", "translation")


def add_run_parser(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run a pipeline over documents (transformers-cli run)")
    run.add_argument("--task", required=True, choices=TASKS, help="the pipeline task")
    run.add_argument("--model", required=True, help="model folder, Hugging Face Hub id or train.py .ckpt")
    run.add_argument("--tokenizer", default=None, help="tokenizer folder or Hub id (default: the model's)")
    run.add_argument("--input", default=None, help="input file (default: stdin, one document per line)")
    run.add_argument("--output", default=None, help="output file (default: stdout for piped input)")
    run.add_argument("--format", default="infer", choices=FORMATS, help="input format (default: from --input)")
    run.add_argument("--column", default=None, help="the text column of csv or json input")
    run.add_argument("--device", default="-1", help="-1 is the CPU, 0 cuda:0 (as transformers); or a torch name")
    run.add_argument("--overwrite", action="store_true", help="allow overwriting --output")


def input_format(args: argparse.Namespace) -> str:
    """--format, or from the --input extension: .csv, .json, anything else (or stdin) one per line."""
    if args.format != "infer":
        return args.format
    suffix = Path(args.input).suffix.lower() if args.input else ""
    return {".csv": "csv", ".json": "json"}.get(suffix, "pipe")


def check_run_args(args: argparse.Namespace, fmt: str) -> None:
    """Bad paths and missing options fail before the model loads."""
    if fmt != "pipe" and (args.input is None or args.output is None):
        raise UsageError(f"--format {fmt} reads --input and writes --output; pass both (or pipe documents "
                         "through stdin, one per line).")
    if fmt != "pipe" and not args.column:
        raise UsageError(f"--format {fmt} needs --column: the name of the text column.")
    if args.input is not None and not Path(args.input).is_file():
        raise UsageError(f"--input {args.input}: no such file.")
    if args.output is not None and Path(args.output).exists() and not args.overwrite:
        raise UsageError(f"--output {args.output} already exists; pass --overwrite or choose another file.")


def read_documents(args: argparse.Namespace, fmt: str, stdin: BinaryIO) -> list[str]:
    """One document per line (bad UTF-8 bytes replaced), or the --column of each csv/json record."""
    if fmt == "pipe":
        if args.input is None:
            return [_line(raw) for raw in stdin]
        with open(args.input, "rb") as f:
            return [_line(raw) for raw in f]
    rows = _table(Path(args.input), fmt)
    missing = [i for i, row in enumerate(rows) if args.column not in row]
    if missing:
        raise UsageError(f"{args.input}: record {missing[0]} has no column {args.column!r} "
                         f"(it has {sorted(rows[missing[0]])}); pass --column with one of those.")
    return [row[args.column] for row in rows]


def _line(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r\n")


def _table(path: Path, fmt: str) -> list[dict[str, Any]]:
    """The records of a csv file (header row) or a json file (a list of objects)."""
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UsageError(f"{path} must hold a JSON list of objects, one per document.")
    return rows


def write_results(results: list[dict[str, Any]], args: argparse.Namespace, fmt: str, stdout: TextIO) -> None:
    if fmt == "pipe":
        text = f"{results}\n"  # transformers printed the list of result dicts
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
        else:
            stdout.write(text)
    elif fmt == "json":
        Path(args.output).write_text(json.dumps(results, ensure_ascii=False), encoding="utf-8")
    else:
        with open(args.output, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, list(results[0]) if results else [])
            writer.writeheader()
            writer.writerows(results)


def run(args: argparse.Namespace, stdin: BinaryIO, stdout: TextIO) -> None:
    """The `run` command: check the arguments, read, load the pipeline, run it on every document,
    write. Bad input raises (the CLI prints it as one line)."""
    from encdec.serving.pipeline import pipeline

    fmt = input_format(args)
    check_run_args(args, fmt)
    documents = read_documents(args, fmt, stdin)
    pipe = pipeline(args.task, model=args.model, tokenizer=args.tokenizer, device=args.device)
    write_results(pipe(documents), args, fmt, stdout)
