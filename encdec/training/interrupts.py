"""Interrupts keep the work. The first SIGINT (Ctrl-C), SIGTERM or SLURM requeue signal (SIGUSR1
with `sbatch --signal`, as Lightning's SLURMEnvironment names it) only takes note; training stops
at the end of the step under way, with last.ckpt written there (callbacks.ResumableCheckpoint),
which resumes exactly as a validation's last.ckpt does. Python signal handlers run between
bytecodes, so saving from inside one (as Lightning's own SLURM handler does) could catch a step
half done; a step boundary cannot. After the first signal the default actions are back: a second
one ends the process at once, and the atomic checkpoint writer leaves the previous file intact.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from typing import Any

logger = logging.getLogger("encdec")


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing `checkpoint` at `step` (train.py prints how to resume)."""

    def __init__(self, signum: int, step: int, checkpoint: str, rank: int = 0, requeued: str | None = None) -> None:
        self.signum, self.step, self.checkpoint, self.rank, self.requeued = signum, step, checkpoint, rank, requeued
        super().__init__(f"{signal.Signals(signum).name} at step {step}: wrote {checkpoint}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by the signal


def requeue_signal(trainer: Any) -> int | None:
    """The signal Lightning's SLURM support asks to be requeued with, when it requeues (None off SLURM)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    environment = getattr(getattr(trainer, "_accelerator_connector", None), "cluster_environment", None)
    if isinstance(environment, SLURMEnvironment) and environment.auto_requeue and environment.requeue_signal:
        return int(environment.requeue_signal)
    return None


class InterruptSignals:
    """Handlers for SIGINT, SIGTERM (and the requeue signal) that note the first one received."""

    def __init__(self, extra: int | None = None, announce: bool = True) -> None:
        self.signums = [signal.SIGINT, signal.SIGTERM, *([extra] if extra else [])]
        self.announce = announce
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> InterruptSignals:
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            return self
        for signum in self.signums:
            self._previous[signum] = signal.signal(signum, self._note)
        return self

    def restore(self) -> None:
        """The handlers from before install (none of ours is left behind after a normal end)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _note(self, signum: int, frame: Any) -> None:
        self.received = signum
        for other in self.signums:  # the next signal is not caught: it ends the process at once
            signal.signal(other, signal.SIG_DFL)
        self._previous = {}
        if self.announce:  # os.write: print or logging could re-enter a write the signal interrupted
            os.write(2, f"\n{signal.Signals(signum).name} received: stopping after this step, with "
                        "checkpoints/last.ckpt written there (press Ctrl-C again to stop at once).\n".encode())


def requeue_slurm_job() -> str | None:
    """`scontrol requeue` this SLURM job, as Lightning's SLURM handler does; its id, or None on failure."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("Could not requeue SLURM job %s: %s", job, exc)
        return None
    if done.returncode != 0:
        logger.warning("scontrol requeue %s failed (%s): %s", job, done.returncode, done.stderr.strip())
        return None
    return job
