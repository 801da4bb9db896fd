"""Fine-tune an encoder-decoder model: `python train.py` (the offline quickstart), or e.g.
`python train.py experiment=bert2bert_cnn_dailymail`. Configs live in conf/ (see conf/train.yaml).

Compose, seed, instantiate, fit, export the best model as a Hugging Face folder; return the
monitored metric so that `-m` sweeps can optimise it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from encdec.lightning import Seq2SeqModule
from encdec.runs import AtomicCheckpointIO, best_checkpoint, export_model, load_weights, write_json

log = logging.getLogger("encdec")


def build(cfg: DictConfig) -> tuple[Any, L.LightningDataModule, Seq2SeqModule, L.Trainer]:
    """Everything the config names: model parts, data, module, callbacks, loggers, trainer."""
    parts = instantiate(cfg.model)
    datamodule = instantiate(
        cfg.data, tokenizer=parts.tokenizer, decoder_tokenizer=parts.decoder_tokenizer,
        eos_token_id=parts.model.config.eos_token_id,
    )
    module = Seq2SeqModule(
        parts.model, parts.decoder_tokenizer,
        optimizer=instantiate(cfg.optim.optimizer), scheduler=instantiate(cfg.optim.scheduler),
        weight_decay=cfg.optim.weight_decay, lr_scale=cfg.optim.get("lr_scale"), freeze=cfg.optim.get("freeze"), compile=cfg.get("compile", False),
        generation=OmegaConf.to_container(cfg.generation),
        run_config=OmegaConf.to_container(cfg, resolve=True), **cfg.module,
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(cfg.logger)] if cfg.get("logger") else []
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])
    return parts, datamodule, module, trainer


def save_config(cfg: DictConfig, run_dir: Path) -> None:
    """The resolved config beside the checkpoints folder (Hydra keeps the unresolved one in .hydra/;
    each checkpoint also carries it under "encdec_config")."""
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)


def log_config(trainer: L.Trainer, cfg: DictConfig) -> None:
    for run_logger in trainer.loggers:
        run_logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))


def export_best(cfg: DictConfig, parts: Any, trainer: L.Trainer) -> Path | None:
    """Load the best checkpoint's weights into the model and write the HF folder (rank 0 only)."""
    if not cfg.get("export_dir") or trainer.global_rank != 0:
        return None
    ckpt = best_checkpoint(trainer)
    if ckpt:
        load_weights(parts.model, ckpt)
    return export_model(parts, Path(cfg.export_dir), OmegaConf.to_container(cfg.generation))


def summarize(cfg: DictConfig, module: Seq2SeqModule, trainer: L.Trainer, export: Path | None) -> dict:
    """metrics.json: the monitored value, the validation history and where everything went."""
    monitored = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    if monitored is None:
        monitored = trainer.callback_metrics.get(cfg.monitor)
    summary = {
        "monitor": cfg.monitor, "best": None if monitored is None else float(monitored),
        "best_checkpoint": best_checkpoint(trainer), "exported_model": str(export) if export else None,
        "validation": module.history, "steps": trainer.global_step,
        "final": {k: float(v) for k, v in trainer.callback_metrics.items()},
    }
    return summary


def history_table(history: list[dict]) -> list[str]:
    """Validation ROUGE F1 (%) by step; step 0 is the untrained model when validated first."""
    names = ("rouge1", "rouge2", "rougeL", "rougeLsum")
    lines = ["step    " + "".join(f"{n:>11}" for n in names)]
    for row in history:
        lines.append(f"{row['step']:<8}" + "".join(f"{row.get('val/' + n, float('nan')):>11.2f}" for n in names))
    return lines


def report(summary: dict, run_dir: Path, trainer: L.Trainer) -> None:
    best = "n/a" if summary["best"] is None else f"{summary['best']:.2f}"
    lines = [*history_table(summary["validation"]), "", f"best {summary['monitor']}: {best}",
             f"run folder:     {run_dir}",
             f"model (HF):     {summary['exported_model']}", f"metrics:        {run_dir / 'metrics.json'}",
             f"checkpoints:    {run_dir / 'checkpoints'}"]
    for run_logger in trainer.loggers:
        experiment = getattr(run_logger, "experiment", None)
        where = getattr(experiment, "dir", None) or getattr(run_logger, "log_dir", None)
        lines.append(f"{type(run_logger).__name__}: {where}")
        if getattr(getattr(experiment, "settings", None), "mode", None) == "offline":
            lines.append(f"  offline run; upload with: wandb sync {Path(where).parent}")
    print("\n".join(["", "=" * 72, *lines, "=" * 72]), flush=True)


def close_loggers(trainer: L.Trainer) -> None:
    """Finish wandb runs, so the next job of a `-m` sweep starts its own."""
    for run_logger in trainer.loggers:
        if type(run_logger).__name__ == "WandbLogger":
            run_logger.experiment.finish()


def train(cfg: DictConfig) -> float | None:
    """Run one training; returns the best value of cfg.monitor."""
    run_dir = Path(cfg.run_dir)
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
    export = export_best(cfg, parts, trainer)
    summary = summarize(cfg, module, trainer, export)
    if trainer.global_rank == 0:
        write_json(run_dir / "metrics.json", summary)
        report(summary, run_dir, trainer)
    close_loggers(trainer)
    return summary["best"]


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
