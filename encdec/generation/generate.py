"""`generate`: encode once, then greedy, sampling, speculative or beam search over a KV-cached
decoder, with the settings resolved once (encdec.generation.settings)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from encdec.generation.beam import SearchRecord, beam_search
from encdec.generation.greedy import greedy_search
from encdec.generation.settings import GenerationConfig, Plan, field_names, resolve
from encdec.generation.speculative import DRAFT, enabled, speculative_greedy
from encdec.generation.state import Decoding


def generate(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    generation_config: GenerationConfig | None = None,
    generator: torch.Generator | None = None,
    streamer: Any = None,
    record: SearchRecord | None = None,
    **kwargs: Any,
) -> Tensor:
    """Token ids (B * num_return_sequences, L) starting with the decoder start token, padded after
    EOS as transformers pads them. Runs in eval mode without gradients: never with dropout.
    `streamer` (transformers' streamer protocol: put(ids), end()) gets the start tokens, then each
    step's token per row (the pad id once a row has ended); `record` gets the resolved settings and
    beam search's scores."""
    for name, value in (("input_ids", input_ids), ("attention_mask", attention_mask)):
        if value is not None and not isinstance(value, Tensor):
            raise TypeError(f"generate() takes {name} as a tensor, got {type(value).__name__}: tokenize with "
                            "padding=True, return_tensors='pt' "
                            "(the tokenizer returns lists by default, as transformers').")
    plan = resolve(_base_config(model, generation_config), kwargs, decoder_positions(model.config.decoder))
    if record is not None:
        record.plan = plan
    if streamer is not None and plan.num_beams > 1:
        raise ValueError("streamer works with greedy search and sampling, not beam search: set num_beams=1.")
    if attention_mask is None:
        attention_mask = default_attention_mask(input_ids, plan)
    elif bool(attention_mask.all()):
        attention_mask = None  # nothing to mask: SDPA runs a little faster without one
    beam = plan.num_beams > 1
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            memory = model.memory(model.encode(input_ids, attention_mask))
            rows_per_source = plan.num_beams if beam else plan.num_return_sequences
            if streamer is None and enabled(plan, model.config):
                decoding = Decoding(model.decoder, memory, attention_mask, 1, plan.max_length - 1 + DRAFT)
                return speculative_greedy(decoding, plan, input_ids, attention_mask)
            decoding = Decoding(model.decoder, memory, attention_mask, rows_per_source, plan.max_length - 1)
            if beam:
                return beam_search(decoding, plan, generator, record)
            return greedy_search(decoding, plan, generator, streamer)
    finally:
        model.train(was_training)


def current_generation_config(model: Any) -> GenerationConfig:
    """model.generation_config; while it is untouched since it was read from model.config, read
    again, so that ids set on the config later (model.config.decoder_start_token_id = 101) count."""
    stored = getattr(model, "generation_config", None)
    if stored is None or stored == getattr(stored, "_origin", None):
        return GenerationConfig.from_model_config(model.config)
    return stored


def _base_config(model: Any, passed: GenerationConfig | None) -> GenerationConfig:
    """The model's generation config, with the fields a passed config sets on top (so a passed
    config without ids still uses the model's ids, as in transformers)."""
    stored = current_generation_config(model)
    if passed is None:
        return stored
    merged = stored.update(**{k: v for k, v in passed.to_dict().items() if k in field_names()})
    merged.extra = {**stored.extra, **passed.extra}
    return merged


def decoder_positions(config: Any) -> int:
    """How long a decoded sequence may grow (`BackboneConfig.max_positions`)."""
    return config.max_positions


def default_attention_mask(input_ids: Tensor, plan: Plan) -> Tensor | None:
    """Like transformers: mask the pad id when the inputs hold it (and it is not an EOS id)."""
    pad = plan.pad_id
    if pad is None or pad in plan.eos_ids or not bool((input_ids == pad).any()):
        return None
    return input_ids.ne(pad).long()
