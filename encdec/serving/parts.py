"""A model and its tokenizers (Seq2SeqParts) in each of their worlds: built from a Hydra `model`
config (warm-started from two checkpoints or randomly initialised), exported as a Hugging Face
folder, rebuilt from a train.py Lightning checkpoint (.ckpt).

The classic silent failures of encoder-decoder fine-tuning start here: a decoder start token that
is unset or disagrees with the tokenizer, or a decoder without a pad token (GPT-2). So the ids are
read from the decoder's tokenizer by role ("cls", "sep", "bos", ...) named in the config, and a
missing role fails before any weights are loaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from encdec.model import EncoderDecoderModel
from encdec.nn.config import BackboneConfig, EncoderDecoderConfig
from encdec.nn.families import MODEL_TYPES
from encdec.tokenization.tokenizer import Tokenizer, load_tokenizer

logger = logging.getLogger("encdec")


@dataclass
class Seq2SeqParts:
    """A model and the tokenizers that feed it: `tokenizer` for sources, `decoder_tokenizer` for
    targets and decoding (the same object when both sides share a vocabulary)."""

    model: EncoderDecoderModel
    tokenizer: Tokenizer
    decoder_tokenizer: Tokenizer

    @property
    def shared_tokenizer(self) -> bool:
        return self.tokenizer is self.decoder_tokenizer


def _load_tokenizers(encoder: Mapping, decoder: Mapping) -> tuple[Tokenizer, Tokenizer]:
    """Load each side's tokenizer once; the same name on both sides gives one shared object."""
    enc_name, dec_name = str(encoder["tokenizer"]), str(decoder["tokenizer"])
    enc_tok = load_tokenizer(enc_name)
    return enc_tok, enc_tok if dec_name == enc_name else load_tokenizer(dec_name)


def _role_id(tokenizer: Tokenizer, role: str, what: str) -> int:
    """The id of the tokenizer's `role` token ("cls", "sep", "bos", "eos", "pad")."""
    value = getattr(tokenizer, f"{role}_token_id", None)
    if value is None:
        named = {r: t for r, t in tokenizer.special_tokens().items() if t is not None}
        raise ValueError(
            f"The decoder tokenizer has no {role!r} token for {what}; its special tokens are {named}. "
            f"Set model.decoder.{what}=<one of {sorted(named)}> in the model config."
        )
    return int(value)


def special_ids(decoder: Mapping, tokenizer: Tokenizer) -> dict[str, int]:
    """decoder_start_token_id, eos_token_id and pad_token_id from the roles the config names."""
    return {
        "decoder_start_token_id": _role_id(tokenizer, decoder["start_token"], "start_token"),
        "eos_token_id": _role_id(tokenizer, decoder["eos_token"], "eos_token"),
        "pad_token_id": _role_id(tokenizer, decoder["pad_token"], "pad_token"),
    }


def _side_kwargs(side: str, overrides: Mapping | None) -> dict[str, Any]:
    return {f"{side}_{k}": v for k, v in (overrides or {}).items()}


def _random_backbone(spec: Mapping, tokenizer: Tokenizer) -> BackboneConfig:
    """A config for a randomly initialised side; the vocabulary defaults to the tokenizer's."""
    fields = dict(spec.get("config") or {})
    if "model_type" not in fields:
        raise ValueError(
            f"A side without `pretrained` needs `config.model_type`, one of: {', '.join(MODEL_TYPES)}."
        )
    fields.setdefault("vocab_size", tokenizer.vocab_size)
    return BackboneConfig.from_dict(fields)


def _build_model(encoder: Mapping, decoder: Mapping, tokenizers: tuple, top: dict,
                 cross_attention_init: str | None = None) -> EncoderDecoderModel:
    """Warm start when both sides name a checkpoint, random init when neither does."""
    enc_ckpt, dec_ckpt = encoder.get("pretrained"), decoder.get("pretrained")
    kind = {"cross_attention_init": cross_attention_init} if cross_attention_init else {}
    if enc_ckpt and dec_ckpt:
        return EncoderDecoderModel.from_encoder_decoder_pretrained(
            str(enc_ckpt), str(dec_ckpt), **_side_kwargs("encoder", encoder.get("config")),
            **_side_kwargs("decoder", {**(decoder.get("config") or {}), **kind}), **top,
        )
    if enc_ckpt or dec_ckpt:
        raise ValueError(
            "Warm-starting one side and initialising the other randomly is not supported: set "
            "`pretrained` on both model.encoder and model.decoder, or on neither (random init from `config`)."
        )
    decoder_config = _random_backbone(decoder, tokenizers[1])
    if cross_attention_init:
        decoder_config.cross_attention_init = cross_attention_init
    config = EncoderDecoderConfig.from_encoder_decoder_configs(_random_backbone(encoder, tokenizers[0]),
                                                               decoder_config, **top)
    return EncoderDecoderModel(config)


def build_seq2seq(encoder: Mapping, decoder: Mapping, tie_encoder_decoder: bool = False,
                  cross_attention_init: str | None = None) -> Seq2SeqParts:
    """Hydra target of the `model` group: tokenizers, then the model with its special ids set.
    `cross_attention_init` chooses how a decoder-only LM gets cross-attention (None: its default)."""
    tokenizers = _load_tokenizers(encoder, decoder)
    ids = special_ids(decoder, tokenizers[1])
    top = {"tie_encoder_decoder": bool(tie_encoder_decoder), **ids}
    model = _build_model(encoder, decoder, tokenizers, top, cross_attention_init)
    model.check_tokenizers(*tokenizers)
    logger.info("Special ids from the decoder tokenizer: %s", ids)
    return Seq2SeqParts(model, *tokenizers)


# ---------------------------------------------------------------------- Hugging Face folder and .ckpt


def generation_config(model: Any, settings: dict[str, Any]) -> Any:
    """The validation generation settings plus the model's special ids, as a GenerationConfig."""
    from encdec.generation.settings import GenerationConfig

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
