"""The Hugging Face folder a training run ends with: the best validated weights (or the last ones,
said aloud) exported with the run's generation settings and tokenizers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from encdec.serving.loading import load_weights
from encdec.serving.parts import Seq2SeqParts, export_model

logger = logging.getLogger("encdec")


def export_best(cfg: DictConfig, parts: Seq2SeqParts, trainer: Any) -> dict[str, Any]:
    """Write the HF folder (rank 0 only) from the best validated checkpoint; without one, from the
    last weights, and say so."""
    if not cfg.get("export_dir") or trainer.global_rank != 0:
        return {"exported_model": None}
    callback = trainer.checkpoint_callback
    scored = callback is not None and callback.monitor is not None and callback.best_model_score is not None
    best = callback.best_model_path if scored else ""
    if best:
        load_weights(parts.model, best)
        weights = f"the best validated checkpoint: {Path(best).name}"
    else:
        weights = "the LAST weights: no validated checkpoint to choose from"
        logger.warning("Exporting the last weights to %s: no validation produced a best checkpoint.", cfg.export_dir)
    folder = export_model(parts, Path(cfg.export_dir), OmegaConf.to_container(cfg.generation))
    return {"exported_model": str(folder), "exported_weights": weights}
