"""Evaluate a model or a baseline with ROUGE: `python evaluate.py model_path=PATH_OR_ID data=... split=test`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from encdec.evaluation import (
    PredictionStore, baseline, load_summarizer, predict, read_examples, report, score,
)
from encdec.runs import write_json

logger = logging.getLogger("encdec")


def generation_overrides(cfg: DictConfig) -> dict[str, Any]:
    return {k: v for k, v in OmegaConf.to_container(cfg.generation).items() if v is not None}


def summarizer_for(cfg: DictConfig):
    """A batch -> summaries function, and the settings that identify it in run.json."""
    if cfg.baseline is not None:
        return baseline(cfg.baseline), {"baseline": cfg.baseline}
    if cfg.model_path is None:
        raise ValueError("Set model_path=PATH_OR_ID (a model folder, a train.py .ckpt or a Hub id), or baseline=lead3.")
    summarizer = load_summarizer(cfg.model_path, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size)
    overrides = generation_overrides(cfg)
    settings = {**summarizer.model.generation_config.to_dict(), **overrides}
    return (lambda batch: summarizer([e.article for e in batch], **overrides)), {
        "model": str(cfg.model_path), "generation": settings,
    }


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    data = hydra.utils.instantiate(cfg.data.source)
    examples = read_examples(
        data.open(cfg.split), cfg.data.text_column, cfg.data.summary_column, cfg.data.id_column, cfg.limit
    )
    summarize_batch, identity = summarizer_for(cfg)
    identity.update(data=repr(data), split=cfg.split)
    store = PredictionStore(Path(cfg.output_dir), identity, overwrite=cfg.overwrite)
    predictions, rate = predict(examples, store, summarize_batch, cfg.batch_size)
    scores = score(examples, predictions, cfg.rouge_workers, cfg.bootstrap_samples)
    metrics = {**identity, "examples": len(examples), "examples_per_s": rate, "rouge": scores}
    write_json(Path(cfg.output_dir) / "metrics.json", metrics)
    print(report(scores, identity["data"]))
    print(f"predictions: {store.path}\nmetrics: {Path(cfg.output_dir) / 'metrics.json'}")
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    metrics = evaluate(cfg)
    return metrics["rouge"]["rougeL"]["fmeasure"]["mid"]


if __name__ == "__main__":
    main()
