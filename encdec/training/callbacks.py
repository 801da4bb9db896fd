"""Lightning callbacks for step-sized runs on an endless stream: validate after the last step,
keep best-model tracking (and the validation history) across a resume into a new run folder,
write last.ckpt where an interrupt stops training, and a progress bar that counts steps instead
of "Epoch 0/-2"."""

from __future__ import annotations

import logging
import shutil
import signal
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar

from encdec.training.interrupts import InterruptSignals, TrainingInterrupted, requeue_signal, requeue_slurm_job

logger = logging.getLogger("encdec")


class StepValidation(Callback):
    """Validation for runs sized in steps. Lightning is asked to stop after the last step; it
    validates before stopping on request, so a run whose max_steps is not a multiple of
    val_check_interval still ends with a score and a validated best checkpoint (when it is a
    multiple, that validation runs once, not twice). Validation metrics are logged at the number
    of steps trained, the step the printed table shows (Lightning would log them one lower)."""

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            pl_module.log("step", float(trainer.global_step), rank_zero_only=True)


class ResumableCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that keeps its best score and file when a run resumes into a new folder
    (Lightning's forgets them when `dirpath` changed): the previous best file is copied into this
    run's folder, so later saves never delete files of the earlier run. The module's validation
    history travels in the checkpoint too, so the final table and metrics.json show all of it.

    With save_last it also writes last.ckpt when SIGINT, SIGTERM or SLURM's requeue signal stops a
    fit (encdec.training.interrupts): at the end of the step under way, or after the validation
    due right after it (a checkpoint from before a due validation would resume past it), and
    then raises TrainingInterrupted. Every rank stops at the same step."""

    _interrupts: InterruptSignals | None = None
    _stop_after_validation = False
    _steps_seen = 0  # global_step at the last batch end: under gradient accumulation not every batch steps

    @property
    def state_key(self) -> str:
        """The key plain ModelCheckpoint used, so checkpoints from before this class still resume."""
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old_dir = state_dict.get("dirpath")
        if self.dirpath is not None and old_dir not in (None, self.dirpath):
            moved = {**state_dict, "dirpath": self.dirpath, "last_model_path": ""}
            state_dict = self._carried_into(moved, Path(self.dirpath)) if self.save_top_k else moved
        super().load_state_dict(state_dict)

    def _carried_into(self, state: dict[str, Any], folder: Path) -> dict[str, Any]:
        best = state.get("best_model_path")
        if not best or not Path(best).is_file():
            logger.warning("Resuming into %s: the earlier best checkpoint %r is gone, so best-model tracking "
                           "starts afresh.", folder, best)
            return {**state, "best_model_score": None, "best_model_path": "", "best_k_models": {},
                    "kth_best_model_path": "", "kth_value": self.kth_value}
        copy = folder / Path(best).name
        folder.mkdir(parents=True, exist_ok=True)
        if not copy.exists():
            shutil.copy2(best, copy)
        score = state.get("best_model_score")
        logger.info("Resuming into %s: carried the best checkpoint so far (%s = %s) from %s.",
                    folder, self.monitor, None if score is None else float(score), best)
        return {**state, "best_model_path": str(copy), "kth_best_model_path": str(copy),
                "best_k_models": {str(copy): score} if score is not None else {}}

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """With save_top_k=0 and save_last: last.ckpt after every validation of a fit, so it holds
        that validation's scores (Lightning writes last.ckpt only beside a top-k save). Then the
        stop an interrupt during the step before asked for."""
        super().on_validation_end(trainer, pl_module)
        if self.save_last and self.save_top_k == 0 and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        if self._stop_after_validation and not trainer.sanity_checking:
            self._stop(trainer)

    # ------------------------------------------------------------------ interrupts

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_start(trainer, pl_module)
        if self.save_last:
            self._interrupts = InterruptSignals(requeue_signal(trainer), announce=trainer.is_global_zero).install()
            self._steps_seen = trainer.global_step

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        stepped, self._steps_seen = trainer.global_step != self._steps_seen, trainer.global_step
        if self._interrupts is None or self._stop_after_validation or not stepped:
            return  # mid-accumulation the gradients so far are in no checkpoint: wait for the step
        received = self._interrupts.received is not None
        if not trainer.strategy.reduce_boolean_decision(received, all=False):  # any rank: all ranks stop here
            return
        if validation_due(trainer):
            self._stop_after_validation = True
        else:
            self._stop(trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._let_go()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        self._let_go()

    def _stop(self, trainer: Any) -> None:
        """last.ckpt at this step, then out of fit; a run at its last step just finishes."""
        self._stop_after_validation = False
        if 0 < trainer.max_steps <= trainer.global_step:
            return
        if self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        signum = self._interrupts.received or signal.SIGTERM  # another rank's signal
        requeued = None
        if signum == requeue_signal(trainer) and trainer.is_global_zero:
            requeued = requeue_slurm_job()
        raise TrainingInterrupted(signum, trainer.global_step, self.last_model_path, trainer.global_rank, requeued)

    def _let_go(self) -> None:
        if self._interrupts is not None:
            self._interrupts.restore()
            self._interrupts = None

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint["encdec_history"] = list(getattr(pl_module, "history", []))

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        history = getattr(pl_module, "history", None)
        if history is not None and not history:
            history.extend(checkpoint.get("encdec_history", []))


def validation_due(trainer: Any) -> bool:
    """Whether the fit loop validates right after the batch that just ended (Lightning's own test)."""
    loop = trainer.fit_loop
    return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))


class StepProgressBar(RichProgressBar):
    """The training bar says "Training" (runs are sized in steps; one endless epoch)."""

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'Training':{len(self.validation_description)}}"


def progress_bar() -> Callback | None:
    """StepProgressBar where `rich` is installed, else None (Lightning's default tqdm bar)."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return None
    return StepProgressBar()
