"""What the command-line entry points (train.py, evaluate.py, `encdec`) share: one-line errors
with exit status 2 for bad input, no run folder left holding only Hydra's bookkeeping, and the
known-harmless warnings of the libraries underneath filtered once, here."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NoReturn, TypeVar

from encdec.base.errors import USAGE_EXIT_STATUS, UsageError, one_line

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

    from encdec.training.interrupts import TrainingInterrupted

T = TypeVar("T")
PACKAGE_DIR = Path(__file__).resolve().parents[1]
ENTRY_SCRIPTS = {PACKAGE_DIR.parent / "train.py", PACKAGE_DIR.parent / "evaluate.py"}
# Errors that encdec raises on purpose with a message for the user; the same types raised inside a
# library (torch, Lightning, datasets) are not ours to shorten and keep their traceback.
OWN_ERROR_TYPES = (ValueError, TypeError, OSError)


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
CONFIG_DIR = PACKAGE_DIR.parent / "conf"


def run_hydra_main(main: Callable[[], object], prog: str | None = None) -> None:
    """Call a `@hydra.main` function. Hydra exits with status 1 when it cannot compose the config
    (a typo in an override, an unknown option), before any job starts: a usage error, so 2. An
    option a config group does not have (`model=does_not_exist`) is found first and told in one
    line that names the choices (Hydra prints 15 lines, or ignores it for an optional group)."""
    if prog and not show_full_errors():
        problem = unknown_group_choice(sys.argv[1:], CONFIG_DIR)
        if problem:
            print(f"{prog}: error: {problem}", file=sys.stderr, flush=True)
            sys.exit(USAGE_EXIT_STATUS)
    try:
        main()
    except SystemExit as exc:
        if exc.code == 1 and not _job_started:
            sys.exit(USAGE_EXIT_STATUS)
        raise


def unknown_group_choice(argv: list[str], config_dir: Path) -> str | None:
    """The first command-line override that picks an option its config group lacks, as one line
    naming the key, the value and the choices; None when there is none (or Hydra would refuse the
    command line for another reason, which it then reports itself)."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        args = get_args_parser().parse_args(argv)
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except (Exception, SystemExit):
        return None
    picks = [(o.key_or_group, _picked(o)) for o in overrides if not o.is_delete() and "." not in o.key_or_group]
    picks = [(group, values) for group, values in picks if values]
    if not picks or args.config_path or args.config_dir:
        return None
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    if GlobalHydra.instance().is_initialized():  # called from inside a Hydra app: nothing to check
        return None
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        for group, values in picks:
            parent, _, name = group.rpartition("/")
            if name not in loader.list_groups(parent):
                continue  # a plain key (seed=1), not a group
            choices = loader.get_group_options(group, ObjectType.CONFIG)
            where = f" (the yaml files in conf/{group}/)" if (config_dir / group).is_dir() else ""
            for value in values:
                if value not in choices:
                    return (f"{group}={value}: config group '{group}' has no option '{value}'; choose one of "
                            f"{', '.join(choices)}{where}.")
    return None


def _picked(override: Override) -> list[str]:
    """The option names an override picks: one, or each of a `-m` sweep's `a,b`."""
    if override.is_sweep_override():
        sweep = override.value()
        return list(override.sweep_string_iterator()) if type(sweep).__name__ == "ChoiceSweep" else []
    value = override.value()
    return [value] if isinstance(value, str) else []


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


def exit_interrupted(prog: str, stop: TrainingInterrupted) -> NoReturn:
    """After a training stopped by a signal (encdec.training.interrupts.TrainingInterrupted): one
    line saying where it stopped and the command that continues it, then the signal's exit status."""
    if stop.rank == 0:
        finish_wandb(stop.exit_status)
        requeued = f"; requeued SLURM job {stop.requeued}" if stop.requeued else ""
        print(f"{prog}: interrupted: {stop}{requeued}; resume with: {resume_command(prog, stop.checkpoint)}",
              file=sys.stderr, flush=True)
    sys.exit(stop.exit_status)


def resume_command(prog: str, checkpoint: str) -> str:
    """`python PROG <this run's overrides> ckpt_path=CHECKPOINT` (a new run folder by default)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "ckpt_path"]
    return " ".join(["python", prog, *map(shlex.quote, kept), shlex.quote(f"ckpt_path={checkpoint}")])


def finish_wandb(exit_code: int) -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def remove_if_bookkeeping_only(folder: Path) -> bool:
    """Delete a run folder that holds only `.hydra/`, Hydra's job log and this run's claim on it
    (a failed start)."""
    from encdec.apps.run_folder import LOCK_NAME, release

    if not folder.is_dir():
        return False
    entries = list(folder.iterdir())
    if any(e.name not in (".hydra", LOCK_NAME) and not (e.is_file() and e.suffix == ".log") for e in entries):
        return False
    release(folder)
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
