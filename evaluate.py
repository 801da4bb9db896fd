"""Evaluate a model or a baseline with ROUGE: `python evaluate.py model_path=PATH_OR_ID data=... split=test`.

The config is checked (numbers, model path, data files and columns) before the model loads; torch
is imported only after that.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

logger = logging.getLogger("encdec")


def generation_overrides(cfg: DictConfig) -> dict[str, Any]:
    return {k: v for k, v in OmegaConf.to_container(cfg.generation).items() if v is not None}


def summarizer_for(cfg: DictConfig):
    """A batch -> summaries function, and the settings that identify it in run.json."""
    from encdec.evaluation.evaluate import baseline
    from encdec.serving.loading import load_summarizer

    if cfg.baseline is not None:
        return baseline(cfg.baseline), {"baseline": cfg.baseline}
    from encdec.evaluation.distributed import device_of_rank, rank_and_world

    device = device_of_rank(cfg.device, *rank_and_world())
    summarizer = load_summarizer(cfg.model_path, device=device, dtype=cfg.dtype, batch_size=cfg.batch_size)
    overrides = generation_overrides(cfg)
    settings = {**summarizer.model.generation_config.to_dict(), **overrides}
    return (lambda batch: summarizer([e.article for e in batch], **overrides)), {
        "model": str(cfg.model_path), "dtype": cfg.dtype, "generation": settings,
    }


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    from encdec.apps.preflight import check_evaluate_config

    check_evaluate_config(cfg)
    from encdec.apps.run_folder import claim_output_folder
    from encdec.evaluation.distributed import launch, rank_and_world

    if rank_and_world()[1] == 1:  # the launching process holds the folder for the ranks it starts
        claim_output_folder(Path(cfg.output_dir))
    if cfg.get("devices", 1) > 1 and rank_and_world()[1] == 1:
        return launch(cfg, evaluate)  # each rank runs evaluate(cfg); rank 0's metrics come back
    from encdec.evaluation.evaluate import PredictionStore, predict, read_examples, report, score, write_plots
    from encdec.training.run_records import wandb_run, write_json

    data = hydra.utils.instantiate(cfg.data.source)
    locate = getattr(data, "locate", None)  # local files: refused records named by file and line
    examples = read_examples(
        data.open(cfg.split), cfg.data.text_column, cfg.data.summary_column, cfg.data.id_column, cfg.limit,
        locate=None if locate is None else partial(locate, cfg.split),
    )
    summarize_batch, identity = summarizer_for(cfg)
    identity.update(data=repr(data), split=cfg.split)
    store = PredictionStore(Path(cfg.output_dir), identity, overwrite=cfg.overwrite)
    predictions, rate = predict(examples, store, summarize_batch, cfg.batch_size)
    if store.rank != 0:
        return None
    scores, pairs = score(examples, predictions, cfg.rouge_workers, cfg.bootstrap_samples)
    metrics = {**identity, "examples": len(examples), "examples_per_s": rate, "rouge": scores}
    write_json(Path(cfg.output_dir) / "metrics.json", metrics)
    print(report(scores, identity["data"]))
    print(f"predictions: {store.path}\nmetrics: {Path(cfg.output_dir) / 'metrics.json'}")
    with wandb_run(cfg.get("wandb", False), Path(cfg.output_dir), "evaluate", identity) as run:
        if run is not None:
            run.summary.update({f"{cfg.split}/{name}": value["fmeasure"]["mid"] for name, value in scores.items()})
        if cfg.get("plots"):
            print(f"plots: {write_plots(examples, predictions, pairs, Path(cfg.output_dir))}")
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    from encdec.apps.entry import quiet_known_noise, run_entry

    quiet_known_noise()
    metrics = run_entry("evaluate.py", lambda: evaluate(cfg), run_dir=hydra_output_dir(), debug=cfg.get("debug", False))
    return metrics["rouge"]["rougeL"]["fmeasure"]["mid"]


def hydra_output_dir() -> str:
    """The folder Hydra made for this run (eval_outputs/DATE/TIME), even when output_dir points elsewhere."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir


if __name__ == "__main__":
    from encdec.apps.entry import run_hydra_main

    run_hydra_main(main, "evaluate.py")
