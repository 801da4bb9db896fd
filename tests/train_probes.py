"""Test-only Lightning callbacks, added to real train.py runs with Hydra overrides such as
`+callbacks.probe._target_=tests.train_probes.RecordBatches`."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


def _append(trainer, name: str, record: dict) -> None:
    path = Path(trainer.default_root_dir) / f"{name}_rank{trainer.global_rank}.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


class RecordBatches(Callback):
    """One line per training step: the step, the example ids of its batch and its loss."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        _append(trainer, "batches", {"step": trainer.global_step, "ids": batch["ids"], "loss": float(loss)})

    def on_train_end(self, trainer, pl_module) -> None:
        digest = hashlib.sha256()
        for name, param in sorted(pl_module.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(param.detach().cpu().contiguous().numpy().tobytes())
        _append(trainer, "params", {"step": trainer.global_step, "sha256": digest.hexdigest()})


class RecordShapes(Callback):
    """One line per training and validation batch: its stage and (rows, tokens) of its sources and labels."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._record(trainer, "train", batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._record(trainer, "validation", batch)

    @staticmethod
    def _record(trainer, stage: str, batch) -> None:
        _append(trainer, "shapes", {"stage": stage, "step": trainer.global_step,
                                    "input_ids": list(batch["input_ids"].shape), "labels": list(batch["labels"].shape)})


class KillAtStep(Callback):
    """SIGKILL this process when training reaches `step` (no cleanup, like a crashed node)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SlowSteps(Callback):
    """Sleep after each training step, so a test can signal a real run at a step of its choosing."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)


class SignalAtStep(Callback):
    """Send this process `signum` while it trains step `step` (a signal that arrives mid-step)."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step - 1:
            os.kill(os.getpid(), self.signum)
