"""A run folder belongs to one run. train.py claims its folder before Hydra writes into it: an
exclusive lock (flock on `.encdec.lock`, released by the kernel when the process ends, however it
ends) that a second run into the same folder cannot take, and a check that no earlier run wrote
there unless this run continues it from one of the folder's checkpoints (`ckpt_path=`). Either
refusal is one line naming the folder and the fix, before anything heavy and without touching
what the folder holds.

Only the process that writes the run claims it: DDP ranks that Lightning, torchrun or SLURM
start share the folder of rank 0. `-m` sweeps claim the sweep folder, then each job its own.
evaluate.py locks its output_dir the same way (resuming its predictions stays allowed).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from encdec.base.errors import USAGE_EXIT_STATUS, UsageError, one_line

logger = logging.getLogger("encdec")
LOCK_NAME = ".encdec.lock"
# What a run writes once it really started (start_run and later); Hydra's .hydra/ and log do not count.
RUN_FILES = ("config.yaml", "checkpoints", "metrics.json", "best_model")
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
NEW_FOLDER = "train into a new folder (leave hydra.run.dir at its default, or set hydra.run.dir=NEW)"

_held: dict[Path, int] = {}  # folder -> descriptor of the lock this process holds on it


def launched_as_rank_zero() -> bool:
    """False in the processes that DDP launchers start for ranks other than 0."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


def claim_run_folder(folder: Path, ckpt_path: str | None = None) -> None:
    """Lock `folder` for this process, or raise UsageError when another run holds it or an earlier
    run wrote into it and this one does not continue it (a checkpoint inside it as ckpt_path).
    A refused folder is left exactly as it was: nothing is created in it."""
    folder = folder.absolute()
    if folder in _held:
        return
    continues = _inside(ckpt_path, folder)
    if holds_run(folder) and not continues:
        raise UsageError(in_use(folder, "run", _owner(folder)) if _owner(folder) else already_used(folder))
    fd = _lock(folder, "run")
    if holds_run(folder) and not continues:  # an earlier run got in between the check and the lock
        os.close(fd)
        raise UsageError(already_used(folder))
    _take(folder, fd)


def claim_sweep_folder(folder: Path) -> None:
    """Lock a `-m` sweep's folder; refuse one where an earlier sweep ran (its jobs' folders would mix)."""
    folder = folder.absolute()
    if folder in _held:
        return
    if _earlier_sweep(folder):
        owner = _owner(folder)
        raise UsageError(in_use(folder, "sweep", owner) if owner else
                         f"Sweep folder {folder} already holds an earlier sweep: sweep into a new folder (leave "
                         "hydra.sweep.dir at its default, or set hydra.sweep.dir=NEW).")
    _take(folder, _lock(folder, "sweep"))


def claim_output_folder(folder: Path) -> None:
    """Lock evaluate.py's output folder for this process: two evaluations writing predictions.jsonl at
    once would interleave it (a later one, started after this ends, resumes from it as before)."""
    folder = folder.absolute()
    if folder not in _held:
        _take(folder, _lock(folder, "evaluation"))


def _earlier_sweep(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    return (folder / "multirun.yaml").exists() or any(holds_run(job) for job in folder.iterdir() if job.is_dir())


def release(folder: Path) -> None:
    """Let go of a folder this process claimed (the lock also goes when the process ends)."""
    fd = _held.pop(folder.absolute(), None)
    if fd is not None:
        os.close(fd)


def holds_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_FILES)


def already_used(folder: Path) -> str:
    last = folder / "checkpoints" / "last.ckpt"
    state = "a finished run" if (folder / "metrics.json").exists() else "an earlier run"
    resume = f", or continue that run with ckpt_path={last}" if last.is_file() else ""
    return f"Run folder {folder} already holds {state}: {NEW_FOLDER}{resume}."


def _inside(ckpt_path: str | None, folder: Path) -> bool:
    return bool(ckpt_path) and folder in Path(str(ckpt_path)).expanduser().absolute().parents


def in_use(folder: Path, kind: str, owner: str) -> str:
    setting = {"run": "hydra.run.dir", "sweep": "hydra.sweep.dir", "evaluation": "output_dir"}[kind]
    return (f"{kind.capitalize()} folder {folder} is in use by {owner}: use another folder (leave {setting} at "
            f"its default, or set {setting}=NEW), or wait for that run to end.")


def _owner(folder: Path) -> str | None:
    """Who holds the folder's lock now (None when nobody does), without creating anything."""
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
    except OSError:
        return None
    finally:
        os.close(fd)  # also lets go of the shared lock just taken
    return None


def _lock(folder: Path, kind: str) -> int:
    """An open descriptor of the folder's lock file, locked exclusively; UsageError when taken."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UsageError(in_use(folder, kind, owner)) from None
    except OSError as exc:  # a filesystem without locks: the finished-run check still applies
        logger.warning("Cannot lock %s (%s): a second run started into it at the same time would not be stopped.",
                       folder, exc.strerror)
    return fd


def _take(folder: Path, fd: int) -> None:
    """Record who holds the folder (read by the message of a run that is refused)."""
    owner = f"the run of pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}"
    os.ftruncate(fd, 0)
    os.pwrite(fd, owner.encode() + b"\n", 0)
    _held[folder] = fd


# ---------------------------------------------------------------------- Hydra callback


def _refuse(claim: Any, *args: Any) -> None:
    """Run a claim; a refusal is one `train.py: error:` line and exit status 2."""
    try:
        claim(*args)
    except UsageError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {one_line(exc)}", file=sys.stderr, flush=True)
        sys.exit(USAGE_EXIT_STATUS)


def _run_dir(config: DictConfig, fallback: Any) -> Path:
    """The folder the run writes to: run_dir, or Hydra's output folder it normally points at."""
    try:
        value = OmegaConf.select(config, "run_dir", throw_on_missing=True)
    except Exception:  # ${hydra:runtime.output_dir} before Hydra set it
        value = None
    return Path(str(value if value is not None else fallback))


class ClaimRunFolder(Callback):
    """conf/train.yaml's hydra.callbacks entry: claims the folder of a run before Hydra writes its
    .hydra/ there, the folder of a sweep before its jobs start, and each job's folder."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if launched_as_rank_zero():
            _refuse(claim_run_folder, _run_dir(config, config.hydra.run.dir), config.get("ckpt_path"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if launched_as_rank_zero():
            _refuse(claim_sweep_folder, Path(str(config.hydra.sweep.dir)))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if launched_as_rank_zero() and HydraConfig.get().mode == RunMode.MULTIRUN:
            _refuse(claim_run_folder, _run_dir(config, HydraConfig.get().runtime.output_dir), config.get("ckpt_path"))

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            release(_run_dir(config, HydraConfig.get().runtime.output_dir))
