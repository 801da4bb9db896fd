"""JSON files of model and tokenizer folders, read with errors that name the file."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from encdec.base.errors import UsageError, one_line


def read_json(path: Path, *, missing_ok: bool = False) -> dict[str, Any]:
    """The JSON object in `path`; a broken file is one UsageError naming it and where it breaks.
    A missing file is {} with `missing_ok`, else FileNotFoundError."""
    if not path.is_file():
        if missing_ok:
            return {}
        raise FileNotFoundError(f"{path} not found.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); restore it from the source it was copied from "
                         "or save the model again.") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} holds a JSON {type(data).__name__}, not an object; "
                         "restore it or save the model again.")
    return data


def read_config_json(folder: Path) -> dict[str, Any]:
    """config.json of a model folder; its absence says the folder is not a model folder."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"No config.json in {folder}; is this a model folder?")
    return read_json(path)


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """Errors raised while interpreting a file's contents (a field of the wrong type, an unknown
    model_type) become one UsageError that starts with the file's path."""
    try:
        yield
    except ValueError as exc:
        message = one_line(exc)
        if isinstance(exc, UsageError) and str(path) in message:
            raise
        raise UsageError(f"{path}: {message}") from None
