"""What a training run writes, logs and prints: atomic checkpoint and JSON writes, the loggers
(wandb offline without credentials), sample-prediction tables, the metrics.json summary and the
report printed last.

A run killed while writing must never leave a truncated checkpoint where resume would look, so
every file here is written to a temporary name in the same folder and moved into place.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from encdec.base.errors import UsageError

logger = logging.getLogger("encdec")


def replace_atomically(write: Any, path: Path) -> None:
    """Call write(tmp_path), flush it to disk, then rename over `path` (same folder: atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the `.NAME.PID.tmp` files that replace_atomically leaves when its process was killed
    mid-write (never those of a process still running)."""
    removed = []
    for tmp in folder.glob(".*.*.tmp") if folder.is_dir() else []:
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _process_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    if removed:
        logger.info("Removed %d unfinished checkpoint file(s) of killed runs in %s.", len(removed), folder)
    return removed


def check_resumable(path: Path) -> None:
    """A checkpoint saved with save_weights_only has no optimizer state to resume from: say so in
    one line before Lightning fails deep inside. Memory-mapped, so the weights are not read."""
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception:  # not a zip-format checkpoint, or a broken one: Lightning's load reports it
        return
    if "optimizer_states" not in checkpoint:
        raise UsageError(f"ckpt_path={path} holds weights only (save_weights_only): it cannot resume training. "
                         "Resume from the run's checkpoints/last.ckpt; the weights alone serve evaluate.py and "
                         "encdec summarize.")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's own "atomic" save stages the file in the system temp folder and moves it with
    shutil.move, which copies (non-atomically) when /tmp is another filesystem; this stages it
    beside the target and renames."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        replace_atomically(lambda tmp: torch.save(checkpoint, tmp), Path(path))


def write_json(path: Path, data: Any) -> None:
    replace_atomically(lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"), path)


# ---------------------------------------------------------------------- loggers


def _wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_mode(requested: str | None = None) -> str:
    """`online` only with credentials; otherwise `offline` (sync later with `wandb sync`)."""
    requested = requested or os.environ.get("WANDB_MODE")
    if requested:
        return requested
    return "online" if _wandb_credentials() else "offline"


@contextmanager
def wandb_run(enabled: bool, folder: Path, job_type: str, config: dict[str, Any]) -> Iterator[Any]:
    """A wandb run for a job without a Lightning logger (evaluate.py), offline without credentials;
    None when not enabled. Plots saved while it is open are logged to it (encdec.evaluation.plots.save)."""
    if not enabled:
        yield None
        return
    import wandb

    mode = wandb_mode()
    run = wandb.init(project="encdec", job_type=job_type, dir=str(folder), mode=mode, config=config)
    try:
        yield run
    finally:
        run.finish()
    if mode == "offline":
        logger.info("wandb: offline run under %s (upload later: wandb sync)", folder / "wandb")


def wandb_logger(save_dir: str, project: str = "encdec", mode: str | None = None, **kwargs: Any) -> Any:
    """Lightning's WandbLogger with the mode chosen for this machine; the resolved run config is
    logged by train.py."""
    from lightning.pytorch.loggers import WandbLogger

    mode = wandb_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    if mode == "offline":
        logger.info("wandb: no credentials found, logging offline under %s (upload later: wandb sync)", save_dir)
    run_logger = WandbLogger(save_dir=save_dir, project=project, mode=mode, **kwargs)
    run_logger._wandb_init.pop("anonymous", None)  # Lightning passes anonymous=None; wandb warns it is deprecated
    return run_logger


def log_predictions(trainer: Any, rows: list[dict[str, Any]], step: int) -> None:
    """Sample predictions: a wandb Table when wandb logs, and a jsonl file in the run folder."""
    if not rows or trainer.sanity_checking or trainer.global_rank != 0:
        return
    columns = ["id", "prediction", "reference"]
    for run_logger in trainer.loggers:
        if hasattr(run_logger, "log_table"):
            run_logger.log_table("val/predictions", columns=columns, data=[[r[c] for c in columns] for r in rows])
    folder = Path(trainer.default_root_dir) / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({c: r[c] for c in columns}) + "\n" for r in rows)
    (folder / f"step_{step:06d}.jsonl").write_text(lines)
    first = rows[0]
    logger.info("step %d sample prediction [%s]: %r\n  reference: %r", step, first["id"],
                first["prediction"][:300], first["reference"][:300])


# ---------------------------------------------------------------------- start and end of a run


def start_run(cfg: DictConfig, trainer: Any, run_dir: Path) -> None:
    """The resolved config beside the checkpoints folder (Hydra keeps the unresolved one in .hydra/;
    each checkpoint also carries it under "encdec_config"), and in every logger."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if trainer.global_rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    for run_logger in trainer.loggers:
        run_logger.log_hyperparams(resolved)


def finish_run(
    monitor: str, module: Any, trainer: Any, export: dict[str, Any], run_dir: Path, plots: bool = False
) -> dict[str, Any]:
    """Draw the validation curve (before the loggers close: wandb gets it too), close the loggers,
    then (rank 0) write metrics.json and print the report; returns the summary."""
    summary = run_summary(monitor, module, trainer, export)
    places = logger_locations(trainer) if trainer.global_rank == 0 else []
    if trainer.global_rank == 0 and plots:
        from encdec.evaluation.plots import write_training_curve

        write_training_curve(summary["validation"], run_dir)
    close_loggers(trainer)
    if trainer.global_rank == 0:
        write_json(run_dir / "metrics.json", summary)
        print(report(summary, run_dir, places), flush=True)
    return summary


def close_loggers(trainer: Any) -> None:
    """Finish wandb runs, so the next job of a `-m` sweep starts its own."""
    for run_logger in trainer.loggers:
        if type(run_logger).__name__ == "WandbLogger":
            run_logger.experiment.finish()


ROUGE_COLUMNS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def run_summary(monitor: str, module: Any, trainer: Any, export: dict[str, Any]) -> dict[str, Any]:
    """metrics.json: the monitored best, the validation history and where everything went."""
    callback = trainer.checkpoint_callback
    best = callback.best_model_score if callback is not None else None
    if best is None:
        best = trainer.callback_metrics.get(monitor)
    return {
        "monitor": monitor, "best": None if best is None else float(best),
        "best_checkpoint": (callback.best_model_path or None) if callback is not None and callback.monitor else None,
        **export, "validation": module.history, "steps": trainer.global_step,
        "final": {k: float(v) for k, v in trainer.callback_metrics.items()},
    }


def history_table(history: list[dict]) -> list[str]:
    """Validation ROUGE F1 (%) by step; step 0 is the untrained model when validated first."""
    lines = ["step    " + "".join(f"{n:>11}" for n in ROUGE_COLUMNS)]
    for row in history:
        lines.append(f"{row['step']:<8}"
                     + "".join(f"{row.get('val/' + n, float('nan')):>11.2f}" for n in ROUGE_COLUMNS))
    return lines


def logger_locations(trainer: Any) -> list[str]:
    """Where each logger wrote, read before the loggers are closed (a finished wandb run refuses)."""
    lines = []
    for run_logger in trainer.loggers:
        experiment = getattr(run_logger, "experiment", None)
        where = getattr(experiment, "dir", None) or getattr(run_logger, "log_dir", None)
        if where is None or not Path(where).exists():
            continue
        lines.append(f"{type(run_logger).__name__}: {where}")
        if getattr(getattr(experiment, "settings", None), "mode", None) == "offline":
            lines.append(f"  offline run; upload with: wandb sync {Path(where).parent}")
    return lines


def report(summary: dict[str, Any], run_dir: Path, logger_lines: list[str]) -> str:
    best = "n/a (no validation ran)" if summary["best"] is None else f"{summary['best']:.2f}"
    places = {"run folder:": run_dir, "model (HF):": summary.get("exported_model"),
              "metrics:": run_dir / "metrics.json", "checkpoints:": run_dir / "checkpoints"}
    lines = [*history_table(summary["validation"]), "", f"best {summary['monitor']}: {best}"]
    lines += [f"{label:<16}{path}" for label, path in places.items() if path and Path(path).exists()]
    if summary.get("exported_model"):
        lines.append(f"{'':<16}({summary['exported_weights']})")
    return "\n".join(["", "=" * 72, *lines, *logger_lines, "=" * 72])
