"""A Summarizer for what users point at: a Hugging Face folder, a Hub id, or a train.py Lightning
checkpoint (.ckpt), whose embedded run config rebuilds the model and tokenizers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from encdec.base.renames import upgrade_targets
from encdec.serving.parts import generation_config
from encdec.serving.summarizer import Summarizer


def load_summarizer(model_path: str | os.PathLike, **kwargs: Any) -> Any:
    """A Summarizer for an HF folder or Hub id, or for a train.py Lightning checkpoint (.ckpt)."""
    if str(model_path).endswith(".ckpt"):
        return summarizer_from_checkpoint(Path(model_path), **kwargs)
    return Summarizer.from_pretrained(model_path, **kwargs)


def load_weights(model: torch.nn.Module, ckpt_path: str) -> None:
    """Put the weights of a Lightning checkpoint (keys `model.*`) into a bare model."""
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
    own = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    model.load_state_dict(own)


def summarizer_from_checkpoint(path: Path, **kwargs: Any) -> Any:
    """Rebuild the run's model and tokenizers from the config the checkpoint carries, then load its
    weights. Lightning checkpoints are pickles: load only ones you trust (your own runs)."""
    from hydra.utils import instantiate

    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} not found.")
    run_config = torch.load(path, map_location="cpu", weights_only=False).get("encdec_config")
    if run_config is None:
        raise ValueError(f"{path} carries no encdec run config; is it a checkpoint written by train.py?")
    upgrade_targets(run_config)  # checkpoints of the flat layout name encdec.parts.build_seq2seq
    parts = instantiate(run_config["model"])
    load_weights(parts.model, str(path))
    parts.model.generation_config = generation_config(parts.model, run_config["generation"])
    return Summarizer(parts.model, parts.tokenizer, parts.decoder_tokenizer, **kwargs)
