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
from omegaconf import DictConfig

log = logging.getLogger("encdec")


def build(cfg: DictConfig) -> tuple[Any, Any, Any, Any]:
    """Everything the config names: model parts, data (opened and checked now, before any
    validation), module, callbacks, loggers, trainer."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from encdec.training.callbacks import progress_bar
    from encdec.training.run_records import AtomicCheckpointIO

    parts = instantiate(cfg.model)
    datamodule = instantiate(
        cfg.data, tokenizer=parts.tokenizer, decoder_tokenizer=parts.decoder_tokenizer,
        eos_token_id=parts.model.config.eos_token_id,
    )
    datamodule.check_lengths(parts.model.config)  # sources and targets within the model's positions
    datamodule.check_sources()  # a bad file or column fails here, not after the baseline validation
    module = instantiate(cfg.module, model=parts.model, tokenizer=parts.decoder_tokenizer)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)  # not through instantiate: it holds _target_s
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if cfg.trainer.get("enable_progress_bar", True) and (bar := progress_bar()) is not None:
        callbacks.append(bar)
    loggers = [instantiate(cfg.logger)] if cfg.get("logger") else []
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])
    return parts, datamodule, module, trainer


def prepare(cfg: DictConfig, run_dir: Path) -> None:
    """Checks that need no torch, then the ones that do; stale temporary files of killed runs go."""
    from hydra.core.hydra_config import HydraConfig

    from encdec.apps.preflight import check_train_config, quickstart_notice
    from encdec.base.renames import current_target, upgrade_targets

    for old in upgrade_targets(cfg):  # a user's yaml written for the flat layout
        log.warning("%s moved; using %s (update your config).", old, current_target(old))
    check_train_config(cfg)
    choices = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
    if notice := quickstart_notice(cfg, choices):
        log.warning(notice)
    from encdec.serving.devices import check_device
    from encdec.training.run_records import check_resumable, remove_stale_temporaries

    check_device(cfg.trainer.get("accelerator"), "trainer.accelerator")
    for folder in {run_dir / "checkpoints", *([Path(cfg.ckpt_path).parent] if cfg.get("ckpt_path") else [])}:
        remove_stale_temporaries(folder)
    if cfg.get("ckpt_path"):
        check_resumable(Path(cfg.ckpt_path))


def train(cfg: DictConfig) -> float | None:
    """Run one training; returns the best value of cfg.monitor."""
    run_dir = Path(cfg.run_dir)
    prepare(cfg, run_dir)
    import lightning as L
    import torch

    from encdec.apps.entry import exit_interrupted, log_lightning_once
    from encdec.training.export import export_best
    from encdec.training.interrupts import TrainingInterrupted
    from encdec.training.run_records import finish_run, start_run

    log_lightning_once()
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    L.seed_everything(cfg.seed, workers=True)
    parts, datamodule, module, trainer = build(cfg)
    start_run(cfg, trainer, run_dir)
    if cfg.get("validate_before_training") and not cfg.get("ckpt_path"):
        trainer.validate(module, datamodule=datamodule, verbose=False)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except TrainingInterrupted as stop:  # SIGINT, SIGTERM, SLURM's requeue signal: last.ckpt is written
        exit_interrupted("train.py", stop)
    summary = finish_run(cfg.monitor, module, trainer, export_best(cfg, parts, trainer), run_dir,
                         plots=cfg.get("plots", False))
    return summary["best"]


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from encdec.apps.entry import quiet_known_noise, run_entry

    quiet_known_noise()
    return run_entry("train.py", lambda: train(cfg), run_dir=cfg.run_dir, debug=cfg.get("debug", False))


if __name__ == "__main__":
    from encdec.apps.entry import run_hydra_main

    run_hydra_main(main, "train.py")
