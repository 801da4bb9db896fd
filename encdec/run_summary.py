"""What train.py writes and prints when a run ends: the metrics.json summary, and the table of
validation scores with the places everything went (only places that exist), printed last."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
        lines.append(f"{row['step']:<8}" + "".join(f"{row.get('val/' + n, float('nan')):>11.2f}" for n in ROUGE_COLUMNS))
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
