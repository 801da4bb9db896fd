"""What the command-line entry points (train.py, evaluate.py, `encdec`) share: one-line errors
with exit status 2 for bad input, no run folder left holding only Hydra's bookkeeping, and the
known-harmless warnings of the libraries underneath filtered once, here."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Callable, TypeVar

from encdec.base.errors import UsageError, one_line

T = TypeVar("T")
PACKAGE_DIR = Path(__file__).resolve().parents[1]
ENTRY_SCRIPTS = {PACKAGE_DIR.parent / "train.py", PACKAGE_DIR.parent / "evaluate.py"}
# Errors that encdec raises on purpose with a message for the user; the same types raised inside a
# library (torch, Lightning, datasets) are not ours to shorten and keep their traceback.
OWN_ERROR_TYPES = (ValueError, TypeError, OSError)
USAGE_EXIT_STATUS = 2


def unwrap(exc: BaseException) -> BaseException:
    """Hydra's instantiate wraps an error as a repr of it (literal \\n); the original is the cause."""
    while type(exc).__name__ == "InstantiationException" and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def raised_by_encdec(exc: BaseException) -> bool:
    """Whether the innermost frame of the traceback is encdec's own code."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    path = Path(tb.tb_frame.f_code.co_filename).resolve()
    return path in ENTRY_SCRIPTS or PACKAGE_DIR in path.parents


def user_message(exc: BaseException) -> str | None:
    """The one-line message of an error meant for the user, None for anything else (a bug)."""
    exc = unwrap(exc)
    if isinstance(exc, UsageError) or (isinstance(exc, OWN_ERROR_TYPES) and raised_by_encdec(exc)):
        return one_line(exc)
    return None


def show_full_errors(debug: bool = False) -> bool:
    return debug or os.environ.get("HYDRA_FULL_ERROR") == "1"


_job_started = False


def run_hydra_main(main: Callable[[], object]) -> None:
    """Call a `@hydra.main` function. Hydra exits with status 1 when it cannot compose the config
    (a typo in an override, an unknown option), before any job starts: a usage error, so 2."""
    try:
        main()
    except SystemExit as exc:
        if exc.code == 1 and not _job_started:
            sys.exit(USAGE_EXIT_STATUS)
        raise


def run_entry(prog: str, job: Callable[[], T], run_dir: str | Path | None = None, debug: bool = False) -> T:
    """job(), or for bad input one `prog: error: ...` line on stderr and exit status 2. The full
    traceback with `debug=true` or HYDRA_FULL_ERROR=1; a failed run's folder is removed when it
    holds nothing but Hydra's bookkeeping."""
    global _job_started
    _job_started = True
    try:
        return job()
    except Exception as exc:
        if run_dir is not None:
            remove_if_bookkeeping_only(Path(run_dir))
        message = user_message(exc)
        if message is None or show_full_errors(debug):
            if debug:
                os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra reads it when it reports: the whole traceback
            raise
        finish_wandb(USAGE_EXIT_STATUS)  # its closing notes before the error line, not after it
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        sys.exit(USAGE_EXIT_STATUS)


def finish_wandb(exit_code: int) -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def remove_if_bookkeeping_only(folder: Path) -> bool:
    """Delete a run folder that holds only `.hydra/` and Hydra's job log (a failed start)."""
    if not folder.is_dir():
        return False
    entries = list(folder.iterdir())
    if any(e.name != ".hydra" and not (e.is_file() and e.suffix == ".log") for e in entries):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()  # the DATE folder, when this was its only run
    except OSError:
        pass
    return True


# ---------------------------------------------------------------------- known-harmless noise


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f in message for f in self.fragments)


def quiet_known_noise() -> None:
    """Filter messages that say nothing about this run: library deprecations users cannot act on,
    advertising, per-call notices. Idempotent."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
    # validation batches are a list with an exact __len__ (progress bars show the total)
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined", category=Warning)
    for name, fragments in {
        "lightning.pytorch.utilities.rank_zero": ("litlogger", "litmodels"),  # adverts on every run
        "absl": ("Using default tokenizer",),  # rouge-score, once per scorer
        "datasets.packaged_modules.json.json": ("Failed to load JSON",),  # our error names file and line
    }.items():
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in target.filters):
            target.addFilter(_DropMessages(*fragments))


def log_lightning_once() -> None:
    """Lightning gives the `lightning` logger its own console handler and lets it propagate to
    Hydra's too: every line twice. Keep Hydra's (it also writes the run's log file). Call after
    importing lightning."""
    if not logging.getLogger().hasHandlers():
        return
    lightning_logger = logging.getLogger("lightning")
    for handler in list(lightning_logger.handlers):
        if type(handler) is logging.StreamHandler:
            lightning_logger.removeHandler(handler)
