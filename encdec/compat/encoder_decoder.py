"""The parts of transformers' EncoderDecoderModel API that are not the seq2seq core: composing from
module instances, the forward that returns attentions / hidden states / a cache, accessors
(get_encoder, num_parameters, device, ...) and from_pretrained's loading options.

`EncoderDecoderModel` (encdec.model) takes these as a mixin, so model.py keeps the core."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from encdec.base.jsonfile import naming, read_config_json
from encdec.compat.explicit import Cache, Trace, rope_of, run_explicit
from encdec.compat.outputs import Seq2SeqLMOutput
from encdec.compat.pretrained import count_parameters, output_embeddings
from encdec.compat.single_models import SingleModel, view
from encdec.nn.backbone import Backbone
from encdec.nn.config import RUNTIME_DEFAULTS, BackboneConfig, EncoderDecoderConfig, hf_aliases
from encdec.nn.loss import logits_loss
from encdec.nn.masks import padding_mask


def compose(
    config: EncoderDecoderConfig | None, encoder: nn.Module | None, decoder: nn.Module | None
) -> tuple[EncoderDecoderConfig, Backbone | None, Backbone | None]:
    """The config and the given encdec backbones of `EncoderDecoderModel(config=, encoder=, decoder=)`."""
    encoder, decoder = (_backbone_of(m, side) for m, side in ((encoder, "encoder"), (decoder, "decoder")))
    if config is None:
        if encoder is None or decoder is None:
            raise ValueError("Pass config=..., or both encoder=... and decoder=... modules.")
        config = EncoderDecoderConfig.from_encoder_decoder_configs(encoder.config, decoder.config)
        config.encoder, config.decoder = encoder.config, decoder.config  # shared, as in transformers
    for side, module in (("encoder", encoder), ("decoder", decoder)):
        if module is not None:
            setattr(config, side, module.config)
    if decoder is not None and not (decoder.config.is_decoder and decoder.config.add_cross_attention):
        raise ValueError(
            "The decoder module has no cross-attention: build it from a config with is_decoder=True and "
            "add_cross_attention=True "
            "(e.g. BertLMHeadModel(BertConfig(..., is_decoder=True, add_cross_attention=True)))."
        )
    return config, encoder, decoder


def _backbone_of(module: nn.Module | None, side: str) -> Backbone | None:
    if module is None or isinstance(module, Backbone):
        return module
    if isinstance(getattr(module, "backbone", None), Backbone):  # encdec.compat.single_models classes
        return module.backbone
    raise TypeError(
        f"{side}={type(module).__module__}.{type(module).__name__} is not an encdec module. Build it with "
        "encdec's class of that name (from encdec import BertModel, ...), or save the transformers model "
        "(save_pretrained) and use EncoderDecoderModel.from_encoder_decoder_pretrained(enc_dir, dec_dir)."
    )


def wants_explicit(**flags: Any) -> bool:
    """A call needs the explicit path when it asks for a cache, attentions, hidden states or embeddings."""
    return any(v is not None and v is not False for v in flags.values())


def explicit_forward(
    model: Any,
    *,
    input_ids: Tensor | None,
    attention_mask: Tensor | None,
    token_type_ids: Tensor | None,
    inputs_embeds: Tensor | None,
    encoder_outputs: Any,
    decoder_input_ids: Tensor | None,
    decoder_attention_mask: Tensor | None,
    decoder_inputs_embeds: Tensor | None,
    past_key_values: Cache | None,
    use_cache: bool,
    output_attentions: bool,
    output_hidden_states: bool,
    labels: Tensor | None,
    cache_position: Tensor | None,
) -> Seq2SeqLMOutput:
    """transformers' forward with everything it can return, on the explicit attention path."""
    if encoder_outputs is None:
        x = model.encoder.embeddings(input_ids, token_type_ids, inputs_embeds=inputs_embeds)
        encoder_hidden, enc = run_explicit(
            model.encoder, x, attention_mask, hidden_states=output_hidden_states, attentions=output_attentions,
            rope=rope_of(model.encoder, x),
        )
    else:
        encoder_hidden, enc = _given_encoder_outputs(encoder_outputs)
    cache = _cache_of(past_key_values, use_cache)
    if cache is not None and cache.cross_kv is not None:
        memory_kv = cache.cross_kv
    else:
        memory_kv = model.decoder.cross_kv(model.memory(encoder_hidden))
        if cache is not None:
            cache.cross_kv = memory_kv
    past = cache.get_seq_length() if cache is not None else 0
    if cache_position is not None and int(cache_position.reshape(-1)[0]) != past:
        raise ValueError(f"cache_position starts at {int(cache_position.reshape(-1)[0])} but past_key_values hold "
                         f"{past} tokens.")
    x = model.decoder.embeddings(decoder_input_ids, None, past, inputs_embeds=decoder_inputs_embeds)
    hidden, dec = run_explicit(
        model.decoder, x, decoder_attention_mask, memory_kv=memory_kv, memory_mask=padding_mask(attention_mask),
        cache=cache, past_length=past, hidden_states=output_hidden_states, attentions=output_attentions,
        rope=rope_of(model.decoder, x, past),
    )
    logits = model.decoder.logits(hidden)
    loss = None
    if labels is not None:
        loss = logits_loss(logits, labels)
    return Seq2SeqLMOutput(
        loss=loss, logits=logits, past_key_values=cache if use_cache else None,
        decoder_hidden_states=dec.hidden_states, decoder_attentions=dec.attentions,
        cross_attentions=dec.cross_attentions, encoder_last_hidden_state=encoder_hidden,
        encoder_hidden_states=enc.hidden_states, encoder_attentions=enc.attentions,
    )


def hidden_of(encoder_outputs: Any) -> Tensor:
    """Accept a tensor, a tuple whose first item is the hidden states, or an object with
    `last_hidden_state` (what transformers code passes)."""
    if isinstance(encoder_outputs, Tensor):
        return encoder_outputs
    if hasattr(encoder_outputs, "last_hidden_state"):
        return encoder_outputs.last_hidden_state
    return encoder_outputs[0]


def _given_encoder_outputs(encoder_outputs: Any) -> tuple[Tensor, Trace]:
    """The hidden states, and the hidden states and attentions of all layers when given."""
    get = lambda name: getattr(encoder_outputs, name, None)  # noqa: E731
    return hidden_of(encoder_outputs), Trace(get("hidden_states"), get("attentions"))


def _cache_of(past_key_values: Any, use_cache: bool) -> Cache | None:
    if past_key_values is None:
        return Cache() if use_cache else None
    if not isinstance(past_key_values, Cache):
        raise TypeError(
            f"past_key_values must be the encdec Cache a previous call returned (out.past_key_values), "
            f"not {type(past_key_values).__name__}."
        )
    return past_key_values


class TransformersAPI:
    """Accessors and conveniences of transformers' PreTrainedModel, for EncoderDecoderModel."""

    main_input_name = "input_ids"

    def get_encoder(self) -> SingleModel:
        return view(self.encoder)

    def get_decoder(self) -> SingleModel:
        return view(self.decoder)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embeddings.word

    def get_output_embeddings(self) -> SimpleNamespace:
        return output_embeddings(self.decoder)

    def resize_token_embeddings(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "Resize one side at a time, as in transformers: model.encoder.resize_token_embeddings(n) or "
            "model.decoder.resize_token_embeddings(n)."
        )

    def tie_weights(self) -> None:
        """Output embeddings are tied by construction; re-share encoder and decoder for BERTShare."""
        if self.config.tie_encoder_decoder:
            self.tie_encoder_decoder()

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        return count_parameters(self, only_trainable, exclude_embeddings)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p for p in self.parameters() if p.is_floating_point()).dtype

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.encoder.gradient_checkpointing

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: Any = None) -> None:
        """Recompute each layer's activations in backward: less memory for long inputs, ~30% more
        compute. (`gradient_checkpointing_enable(False)` turns it off, as encdec always allowed.)"""
        enabled = gradient_checkpointing_kwargs is not False
        for backbone in (self.encoder, self.decoder):
            backbone.gradient_checkpointing = enabled

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing_enable(False)


def split_side_kwargs(kwargs: dict[str, Any]) -> tuple[dict, dict, dict]:
    """encoder_x -> encoder config, decoder_x -> decoder config, the rest (and
    decoder_start_token_id, which belongs to the top config) -> the top config."""
    enc, dec, top = {}, {}, {}
    for key, value in kwargs.items():
        if key.startswith("encoder_"):
            enc[key[len("encoder_"):]] = value
        elif key.startswith("decoder_") and key != "decoder_start_token_id":
            dec[key[len("decoder_"):]] = value
        else:
            top[key] = value
    top_fields = {f.name for f in fields(EncoderDecoderConfig)} - {"encoder", "decoder", "extra"}
    unknown = set(top) - top_fields
    if unknown:
        raise TypeError(
            f"Unknown arguments {sorted(unknown)}: use encoder_<field> / decoder_<field> for one side's "
            f"config, or one of {sorted(top_fields)}."
        )
    return enc, dec, top


def read_backbone_config(folder: Path, overrides: dict[str, Any]) -> BackboneConfig:
    with naming(folder / "config.json"):
        config = BackboneConfig.from_dict(read_config_json(folder))
    known = {f.name for f in fields(BackboneConfig)} | set(hf_aliases(config.model_type)) | set(RUNTIME_DEFAULTS)
    for key, value in overrides.items():
        if key not in known:
            raise TypeError(f"Unknown config field {key!r}; known fields: {sorted(known - {'extra'})}.")
        setattr(config, key, value)
    return config
