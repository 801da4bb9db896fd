"""Local data files checked before anything heavy runs: their format, the columns of the first record,
and the first broken JSON line named by file and line number. No torch, no datasets: preflight
checks call these before a model loads."""

from __future__ import annotations

import csv
import glob
import json
import os
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

from encdec.base.errors import UsageError, not_text

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
# A column the data module adds to local records: the record's index over the split's files, so a
# record that is skipped or refused can be named by file and line (record_place).
ROW_COLUMN = "_encdec_row"


def is_local_source(source: Any) -> bool:
    target = str(source.get("_target_", ""))
    return target.endswith("LocalSource") and not target.endswith("SampleSource")


def expand_patterns(patterns: list[str]) -> list[str]:
    """Files in the order `datasets` reads them: each pattern in turn, a glob's matches sorted."""
    files = []
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        files.extend(sorted(glob.glob(expanded)) if any(c in expanded for c in "*?[") else [expanded])
    return files


def split_files(source: Any, split: str) -> list[str]:
    """The files of one split of a `data=local` source, globs expanded; every path must exist."""
    key = f"data.source.files.{split}"
    entry = (source.get("files") or {}).get(split)
    if not entry:
        raise UsageError(f"{key} is not set: point it at a json, jsonl, csv or parquet file ({key}=PATH).")
    patterns = [str(entry)] if isinstance(entry, (str, os.PathLike)) else [str(p) for p in entry]
    paths = []
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        found = (sorted(glob.glob(expanded)) if any(c in expanded for c in "*?[")
                 else [expanded] * os.path.isfile(expanded))
        if not found:
            raise UsageError(f"{key}: {pattern} does not exist (relative paths start at {os.getcwd()}).")
        paths.extend(found)
    file_format(paths, key)
    return paths


def file_format(paths: list[str], key: str = "data.source.files") -> str:
    suffixes = {Path(p).suffix.lower() for p in paths}
    formats = {LOCAL_FORMATS.get(s) for s in suffixes}
    if None in formats or len(formats) != 1:
        raise UsageError(f"{key}: data files must all be one of {', '.join(sorted(LOCAL_FORMATS))}; "
                         f"got {sorted(suffixes)}.")
    return formats.pop()


def check_local_split(source: Any, split: str, columns: tuple[str, str, str | None]) -> None:
    """For `data=local`: the split's files exist and the first record has the named columns, with
    text in the text and summary columns. Other sources are checked when they are opened."""
    if not is_local_source(source):
        return
    paths = split_files(source, split)
    found = first_record(paths[0])
    if found is None and len(paths) == 1:
        raise UsageError(f"data.source.files.{split}: {paths[0]} has no examples: the file is empty.")
    if found is None:
        return  # an empty first file of several: the data module counts them all
    record, line = found
    check_record(record, columns, f"{paths[0]} line {line}")


def check_record(record: Any, columns: tuple[str, str, str | None], where: str) -> None:
    names = ("data.text_column", "data.summary_column", "data.id_column")
    if not isinstance(record, dict):
        raise UsageError(f"{where}: a record must be a JSON object with named columns, not a {type(record).__name__}.")
    missing = [f"{key}={col}" for key, col in zip(names, columns) if col is not None and col not in record]
    if missing:
        raise UsageError(
            f"{where}: no column for {', '.join(missing)}; its columns are {sorted(record)}. Set "
            "data.text_column / data.summary_column / data.id_column (id may be null)."
        )
    for key, col in zip(names[:2], columns[:2]):
        if not_text(col, record[col]):
            raise UsageError(f"{where}: {not_text(col, record[col])} ({key}); name the column that holds the text.")


def first_record(path: str) -> tuple[Any, int] | None:
    """The first record of a data file and where it is (its line; a csv's header is line 1, a
    parquet file's first row counts as 1), cheaply: nothing after it is read."""
    kind = file_format([path])
    if kind == "parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        table = parquet.read_row_group(0) if parquet.num_row_groups else None
        return (table.slice(0, 1).to_pylist()[0], 1) if table is not None and table.num_rows else None
    with open(path, encoding="utf-8", errors="replace", newline="" if kind == "csv" else None) as f:
        if kind == "csv":
            row = next(csv.DictReader(f), None)
            return None if row is None else (row, 2)
        for number, line in enumerate(f, 1):
            if line.strip():
                if line.lstrip().startswith("["):  # one JSON array, not JSON lines
                    return first_in_array(path)
                return parse_json_line(path, number, line), number
    return None


def first_in_array(path: str) -> tuple[Any, int] | None:
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg}); repair the file.") from None
    return (rows[0], 1) if rows else None


def parse_json_line(path: str, number: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path} line {number}: not valid JSON ({exc.msg}, column {exc.colno}); each line must be one "
            "complete JSON object: repair or delete that line (a cut-off last line is usually an interrupted write)."
        ) from None


def find_bad_json_line(paths: list[str]) -> None:
    """Raise the UsageError for the first line of JSON-lines files that is not a JSON object."""
    for path in paths:
        if Path(path).suffix.lower() not in LOCAL_FORMATS or LOCAL_FORMATS[Path(path).suffix.lower()] != "json":
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            if f.read(1) == "[":
                first_in_array(path)
                continue
            f.seek(0)
            for number, line in enumerate(f, 1):
                if line.strip() and not isinstance(parse_json_line(path, number, line), dict):
                    raise UsageError(f"{path} line {number}: not a JSON object; each line must be one record {{...}}.")


def record_place(paths: list[str], row: int) -> str | None:
    """Where record `row` (0-based, counted over the files in order, as `datasets` reads them) is:
    "FILE line N" for JSON lines and csv, "FILE record N" in a JSON array, "FILE row N" in parquet.
    Reads the files up to that record, so call it only for the few records a message names."""
    for path in paths:
        place = next(islice(_record_places(path), row, None), None)
        if place is not None:
            return f"{path} {place}"
        row -= sum(1 for _ in _record_places(path))
    return None


def _record_places(path: str) -> Iterator[str]:
    """The place of each record of one file, in order (blank lines hold no record)."""
    kind = file_format([path])
    if kind == "parquet":
        import pyarrow.parquet as pq

        yield from (f"row {i}" for i in range(1, pq.ParquetFile(path).metadata.num_rows + 1))
        return
    with open(path, encoding="utf-8", errors="replace", newline="" if kind == "csv" else None) as f:
        if kind == "csv":
            reader = csv.reader(f)
            next(reader, None)  # the header
            start = reader.line_num + 1
            for values in reader:
                if values:
                    yield f"line {start}"
                start = reader.line_num + 1
            return
        if f.read(4096).lstrip().startswith("["):  # one JSON array, not JSON lines
            f.seek(0)
            yield from (f"record {i}" for i in range(1, len(json.load(f)) + 1))
            return
        f.seek(0)
        yield from (f"line {number}" for number, line in enumerate(f, 1) if line.strip())
