"""Fine-tune an encoder-decoder model: `python train.py` (the offline quickstart), or e.g.
`python train.py experiment=bert2bert_cnn_dailymail`. Configs live in conf/ (see conf/train.yaml).

Check the config, compose, seed, instantiate, fit, export the best model as a Hugging Face folder;
return the monitored metric so that `-m` sweeps can optimise it. torch and Lightning are imported
only once the config passed its checks, so `--help` and config errors come back in a second or two.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("encdec")


def build(cfg: DictConfig) -> tuple[Any, Any, Any, Any]:
    """Everything the config names: model parts, data (opened and checked now, before any
    validation), module, callbacks, loggers, trainer."""
    from hydra.utils import instantiate

    from encdec.callbacks import progress_bar
    from encdec.runs import AtomicCheckpointIO

    parts = instantiate(cfg.model)
    datamodule = instantiate(
        cfg.data, tokenizer=parts.tokenizer, decoder_tokenizer=parts.decoder_tokenizer,
        eos_token_id=parts.model.config.eos_token_id,
    )
    datamodule.check_sources()  # a bad file or column fails here, not after the baseline validation
    module = instantiate(cfg.module, model=parts.model, tokenizer=parts.decoder_tokenizer)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)  # not through instantiate: it holds _target_s
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if cfg.trainer.get("enable_progress_bar", True) and (bar := progress_bar()) is not None:
        callbacks.append(bar)
    loggers = [instantiate(cfg.logger)] if cfg.get("logger") else []
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])
    return parts, datamodule, module, trainer


def save_config(cfg: DictConfig, run_dir: Path) -> None:
    """The resolved config beside the checkpoints folder (Hydra keeps the unresolved one in .hydra/;
    each checkpoint also carries it under "encdec_config")."""
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)


def log_config(trainer: Any, cfg: DictConfig) -> None:
    for run_logger in trainer.loggers:
        run_logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))


def export_best(cfg: DictConfig, parts: Any, trainer: Any) -> dict[str, Any]:
    """Write the HF folder (rank 0 only) from the best validated checkpoint; without one, from the
    last weights, and say so."""
    from encdec.runs import export_model, load_weights

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
        log.warning("Exporting the last weights to %s: no validation produced a best checkpoint.", cfg.export_dir)
    folder = export_model(parts, Path(cfg.export_dir), OmegaConf.to_container(cfg.generation))
    return {"exported_model": str(folder), "exported_weights": weights}


def close_loggers(trainer: Any) -> None:
    """Finish wandb runs, so the next job of a `-m` sweep starts its own."""
    for run_logger in trainer.loggers:
        if type(run_logger).__name__ == "WandbLogger":
            run_logger.experiment.finish()


def prepare(cfg: DictConfig, run_dir: Path) -> None:
    """Checks that need no torch, then the ones that do; stale temporary files of killed runs go."""
    from encdec.preflight import check_train_config, quickstart_notice

    check_train_config(cfg)
    notice = quickstart_notice(cfg, hydra_choices())
    if notice:
        log.warning(notice)
    from encdec.preflight import check_device
    from encdec.runs import remove_stale_temporaries

    check_device(cfg.trainer.get("accelerator"), "trainer.accelerator")
    for folder in {run_dir / "checkpoints", *([Path(cfg.ckpt_path).parent] if cfg.get("ckpt_path") else [])}:
        remove_stale_temporaries(folder)


def hydra_choices() -> dict[str, Any]:
    """The config group choices of this run (empty when composed outside `@hydra.main`)."""
    from hydra.core.hydra_config import HydraConfig

    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def train(cfg: DictConfig) -> float | None:
    """Run one training; returns the best value of cfg.monitor."""
    run_dir = Path(cfg.run_dir)
    prepare(cfg, run_dir)
    import lightning as L
    import torch

    from encdec.entry import log_lightning_once
    from encdec.run_summary import logger_locations, report, run_summary
    from encdec.runs import write_json

    log_lightning_once()

    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    L.seed_everything(cfg.seed, workers=True)
    parts, datamodule, module, trainer = build(cfg)
    if trainer.global_rank == 0:
        save_config(cfg, run_dir)
    log_config(trainer, cfg)
    if cfg.get("validate_before_training") and not cfg.get("ckpt_path"):
        trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    summary = run_summary(cfg.monitor, module, trainer, export_best(cfg, parts, trainer))
    places = logger_locations(trainer) if trainer.global_rank == 0 else []
    close_loggers(trainer)
    if trainer.global_rank == 0:
        write_json(run_dir / "metrics.json", summary)
        print(report(summary, run_dir, places), flush=True)
    return summary["best"]


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from encdec.entry import quiet_known_noise, run_entry

    quiet_known_noise()
    return run_entry("train.py", lambda: train(cfg), run_dir=cfg.run_dir, debug=cfg.get("debug", False))


if __name__ == "__main__":
    from encdec.entry import run_hydra_main

    run_hydra_main(main)
