"""What a training run leaves behind: atomic checkpoints, loggers, prediction tables, the exported
Hugging Face folder of the best model and a metrics file.

A run killed while writing must never leave a truncated checkpoint where resume would look, so
every file here is written to a temporary name in the same folder and moved into place.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

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


# ---------------------------------------------------------------------- export


def generation_config(model: Any, settings: dict[str, Any]) -> Any:
    """The validation generation settings plus the model's special ids, as a GenerationConfig."""
    from encdec.generation import GenerationConfig

    ids = {k: getattr(model.config, k) for k in ("decoder_start_token_id", "eos_token_id", "pad_token_id")}
    return GenerationConfig.from_dict({**dict(settings), **ids})


def export_model(parts: Any, folder: Path, generation: dict[str, Any]) -> Path:
    """A Hugging Face folder: config.json, model.safetensors, generation_config.json and the
    tokenizer files (the encoder's at the top; both in encoder_tokenizer/ and decoder_tokenizer/
    when the sides differ)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = parts.model
    config = generation_config(model, generation)
    model.generation_config = config
    model.save_pretrained(folder)
    config.save(folder)
    parts.tokenizer.save_pretrained(folder)
    if not parts.shared_tokenizer:
        parts.tokenizer.save_pretrained(folder / "encoder_tokenizer")
        parts.decoder_tokenizer.save_pretrained(folder / "decoder_tokenizer")
    return folder


def best_checkpoint(trainer: Any) -> str | None:
    """The monitored best checkpoint, else the last one written, else None."""
    callback = trainer.checkpoint_callback
    if callback is None:
        return None
    return callback.best_model_path or callback.last_model_path or None


def load_weights(model: torch.nn.Module, ckpt_path: str) -> None:
    """Put the weights of a Lightning checkpoint (keys `model.*`) into a bare model."""
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
    own = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    model.load_state_dict(own)
