"""Pictures of a run, as PNG files beside its metrics: the per-example view of an evaluation and
the validation ROUGE curve of a training. matplotlib is an extra (`pip install -e ".[plots]"`),
imported only here and only when a picture is asked for."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from encdec.base.errors import UsageError

logger = logging.getLogger("encdec")
CURVE_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only backend, or one line saying how to get it."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError('plots=true needs matplotlib: pip install -e ".[plots]" (or plots=false).') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def evaluation_figure(rouge2: list[float], predicted_words: list[int], reference_words: list[int]) -> Any:
    """Left: how per-example ROUGE-2 F1 (%) spreads (a mean hides a bimodal failure); right: predicted
    against reference length in words (too-short or run-on outputs stand out from the diagonal)."""
    plt = pyplot()
    figure, (spread, lengths) = plt.subplots(1, 2, figsize=(10, 4))
    spread.hist(rouge2, bins=20, range=(0, 100), color="tab:blue")
    spread.set(xlabel="ROUGE-2 F1 (%) per example", ylabel="examples", title=f"ROUGE-2 over {len(rouge2)} examples")
    lengths.scatter(reference_words, predicted_words, s=8, alpha=0.6, color="tab:orange")
    top = max([1, *predicted_words, *reference_words])
    lengths.plot([0, top], [0, top], color="grey", linewidth=1, linestyle="--")
    lengths.set(xlabel="reference length (words)", ylabel="predicted length (words)", title="Lengths")
    figure.tight_layout()
    return figure


def curve_figure(history: list[dict[str, float]]) -> Any:
    """Validation ROUGE F1 (%) against the training step, one line per ROUGE type."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    steps = [row["step"] for row in history]
    for name in CURVE_METRICS:
        if all(f"val/{name}" in row for row in history):
            axes.plot(steps, [row[f"val/{name}"] for row in history], marker="o", label=name)
    axes.set(xlabel="step", ylabel="F1 (%)", title="Validation ROUGE")
    axes.legend()
    figure.tight_layout()
    return figure


def save(figure: Any, path: Path) -> Path:
    """Write the PNG (through a temporary name, so a kill never leaves half a file) and log it to the
    active wandb run, if any."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    figure.savefig(partial, format="png", dpi=100)
    partial.replace(path)
    pyplot().close(figure)
    _log_to_wandb(path)
    return path


def _log_to_wandb(path: Path) -> None:
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.run.log({f"plots/{path.stem}": wandb.Image(str(path))})


def write_training_curve(history: list[dict[str, float]], run_dir: Path) -> Path | None:
    """validation_rouge.png in the run folder, when there is a curve to draw and matplotlib to draw it."""
    if len(history) < 1:
        return None
    try:
        figure = curve_figure(history)
    except UsageError:
        logger.info('No validation_rouge.png: matplotlib is not installed (pip install -e ".[plots]").')
        return None
    return save(figure, run_dir / "validation_rouge.png")
