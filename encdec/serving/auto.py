"""transformers' Auto classes for the folders encdec reads, so code from its documentation ports by
changing the import: `AutoModelForSeq2SeqLM` (an encoder-decoder folder), `AutoModel` (any
single-model folder as its family's base model) and `AutoModelForCausalLM` (a decoder LM).

They live here, not in compat, because AutoModelForSeq2SeqLM builds an EncoderDecoderModel, which
sits above compat. A folder of the wrong kind is one error naming the class that loads it.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from encdec.base.errors import UsageError
from encdec.base.jsonfile import read_config_json
from encdec.checkpoints.resolve import resolve_model_folder
from encdec.compat import single_models
from encdec.model import EncoderDecoderModel
from encdec.nn.config import BackboneConfig, EncoderDecoderConfig
from encdec.nn.families import FAMILIES, MODEL_TYPES

ENCODER_DECODER = "encoder-decoder"


def model_type_of(folder: os.PathLike) -> str:
    """config.json's model_type; one supported by encdec, or an error listing those."""
    model_type = read_config_json(folder).get("model_type")
    if model_type != ENCODER_DECODER and model_type not in FAMILIES:
        raise UsageError(f"{folder} holds a {model_type!r} model, which encdec does not load; it loads "
                         f"{ENCODER_DECODER!r} folders and single models of {', '.join(MODEL_TYPES)}.")
    return model_type


class AutoModelForSeq2SeqLM:
    """An encoder-decoder folder (model_type "encoder-decoder") as an EncoderDecoderModel."""

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> EncoderDecoderModel:
        """kwargs as EncoderDecoderModel.from_pretrained's (dtype, device_map, output_loading_info, ...)."""
        folder = resolve_model_folder(name_or_path)
        model_type = model_type_of(folder)
        if model_type != ENCODER_DECODER:
            family = FAMILIES[model_type]
            loaders = " or ".join(f"{name} (AutoModel{'ForCausalLM' if name == family.hf_decoder else ''})"
                                  for name in (family.hf_encoder, family.hf_decoder) if name)
            raise UsageError(
                f"{folder} is a single {model_type} model, not an encoder-decoder: AutoModelForSeq2SeqLM "
                f"cannot load it. Load it with {loaders}, or warm-start a seq2seq model from it with "
                f"EncoderDecoderModel.from_encoder_decoder_pretrained({str(folder)!r}, ...)."
            )
        return EncoderDecoderModel.from_pretrained(folder, *args, **kwargs)

    @classmethod
    def from_config(cls, config: EncoderDecoderConfig, **kwargs: Any) -> EncoderDecoderModel:
        if not isinstance(config, EncoderDecoderConfig):
            raise UsageError(f"AutoModelForSeq2SeqLM.from_config takes an EncoderDecoderConfig, got a "
                             f"{type(config).__name__}; use AutoModel / AutoModelForCausalLM for one side.")
        return EncoderDecoderModel(config)


class _SingleModelAuto:
    """AutoModel / AutoModelForCausalLM: a single-model folder as its family's class of one kind."""

    lm_head = False
    kind = "base model"

    @classmethod
    def class_for(cls, model_type: str, where: str) -> type[nn.Module]:
        """The family's transformers class of this kind, or one line naming the class to use instead."""
        if model_type == ENCODER_DECODER:
            raise UsageError(
                f"{where} is an encoder-decoder folder (model_type 'encoder-decoder'): {cls.__name__} loads one "
                "single model. Load it with AutoModelForSeq2SeqLM or EncoderDecoderModel.from_pretrained "
                "(model.get_encoder() / get_decoder() give its two sides)."
            )
        family = FAMILIES[model_type]
        name = family.hf_decoder if cls.lm_head else family.hf_encoder
        if name is None:
            other = "AutoModel" if cls.lm_head else "AutoModelForCausalLM"
            raise UsageError(f"{where}: {model_type} has no {cls.kind} in encdec ({model_type} serves only as "
                             f"{'an encoder' if cls.lm_head else 'a decoder'}); load it with {other}.")
        return getattr(single_models, name)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> nn.Module:
        """kwargs as the family class's from_pretrained (config fields, dtype, output_loading_info, ...)."""
        folder = resolve_model_folder(name_or_path)
        return cls.class_for(model_type_of(folder), str(folder)).from_pretrained(folder, *args, **kwargs)

    @classmethod
    def from_config(cls, config: BackboneConfig, **kwargs: Any) -> nn.Module:
        if isinstance(config, EncoderDecoderConfig):
            return cls.class_for(ENCODER_DECODER, "this config")(config)
        return cls.class_for(config.model_type, "this config")(config)


class AutoModel(_SingleModelAuto):
    """Any single-model folder as its family's base model (BertModel, RobertaModel, ...): a decoder
    folder too, then causal, as transformers builds it from a config with is_decoder=True."""


class AutoModelForCausalLM(_SingleModelAuto):
    """A single-model folder as its family's causal LM (BertLMHeadModel, GPT2LMHeadModel, ...)."""

    lm_head = True
    kind = "causal LM"
