"""transformers' generate() options around encdec's search: a transformers GenerationConfig passed in,
`bad_words_ids`, `forced_bos_token_id` / `forced_eos_token_id` (kept in GenerationConfig.extra; the
score rules that apply them are encdec.generation.processors'), and `return_dict_in_generate` with `output_scores`.

Greedy search's scores are recomputed after the search by one teacher-forced pass over the returned
sequences, with the same score rules the search applied at each step: its loop stays free of
bookkeeping. Beam search's come from the search (`beam_search.SearchRecord`): its per-step scores
hold rows of beams that no returned sequence keeps.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from encdec.compat.outputs import ModelOutput
from encdec.generation.generate import default_attention_mask
from encdec.generation.processors import RULES, apply, build_processors
from encdec.generation.settings import GenerationConfig

_OUTPUT_FLAGS = ("return_dict_in_generate", "output_scores")
# transformers GenerationConfig keys with nothing to do here (bookkeeping, or the cache we always use).
_IGNORED = {"transformers_version", "_from_model_config", "use_cache", "output_attentions", "output_hidden_states",
            "output_logits", "cache_implementation", "_commit_hash"}


@dataclass
class GenerateOutput(ModelOutput):
    """transformers' GenerateEncoderDecoderOutput / GenerateBeamEncoderDecoderOutput fields we fill."""

    sequences: Tensor | None = None
    sequences_scores: Tensor | None = None
    scores: tuple[Tensor, ...] | None = None
    beam_indices: Tensor | None = None


def prepare(passed: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any], dict[str, bool]]:
    """(our GenerationConfig or None, remaining kwargs, output flags): a transformers
    GenerationConfig becomes ours; RULES move into its `extra`; token_type_ids of zeros are dropped."""
    kwargs = dict(kwargs)
    token_types = kwargs.pop("token_type_ids", None)
    if token_types is not None and bool(torch.as_tensor(token_types).any()):
        raise ValueError("generate() encodes with token type 0 only; drop token_type_ids or make them zeros.")
    if passed is not None and not isinstance(passed, GenerationConfig):
        settings = passed.to_diff_dict() if hasattr(passed, "to_diff_dict") else dict(passed)
        passed = GenerationConfig.from_dict({k: v for k, v in settings.items() if k not in _IGNORED})
    flags = {name: bool(kwargs.pop(name, False)) for name in _OUTPUT_FLAGS}
    rules = {name: kwargs.pop(name) for name in RULES if name in kwargs}
    if passed is not None:
        flags = {name: flags[name] or bool(passed.extra.get(name)) for name in _OUTPUT_FLAGS}
    if rules or passed is not None:
        passed = copy.deepcopy(passed) if passed is not None else GenerationConfig()
        passed.extra = {k: v for k, v in {**passed.extra, **rules}.items() if k not in _OUTPUT_FLAGS}
        unknown = sorted(set(passed.extra) - set(RULES) - _IGNORED)
        if unknown:
            raise ValueError(f"Generation setting(s) {unknown} are not supported by encdec's generate(); drop them.")
    return passed, kwargs, flags


def generate_output(model: Any, input_ids: Tensor, attention_mask: Tensor | None, sequences: Tensor,
                    output_scores: bool, record: Any) -> GenerateOutput:
    """sequences; beam search's beam_indices, and with output_scores its sequences_scores and
    per-step scores, from the search's `record`; with output_scores, greedy search's per-step
    processed scores (N, V), recomputed here."""
    plan = record.plan
    if plan.num_beams > 1:
        return GenerateOutput(sequences=sequences, beam_indices=record.beam_indices,
                              sequences_scores=record.sequences_scores if output_scores else None,
                              scores=tuple(record.scores) if output_scores else None)
    if not output_scores:
        return GenerateOutput(sequences=sequences)
    if attention_mask is None:
        attention_mask = default_attention_mask(input_ids, plan)
    rows = sequences.shape[0] // input_ids.shape[0]
    source = dict(input_ids=input_ids.repeat_interleave(rows, 0),
                  attention_mask=None if attention_mask is None else attention_mask.repeat_interleave(rows, 0))
    with torch.no_grad():
        logits = model(**source, decoder_input_ids=sequences[:, :-1]).logits.float()
    processors = build_processors(plan, sequences.device)
    steps = [apply(processors, sequences[:, : t + 1], logits[:, t].clone()) for t in range(sequences.shape[1] - 1)]
    return GenerateOutput(sequences=sequences, scores=tuple(steps))


def transition_scores(sequences: Tensor, scores: tuple[Tensor, ...], beam_indices: Tensor | None = None,
                      normalize_logits: bool = False) -> Tensor:
    """(N, T) score of each generated token at the step that chose it, from the row that chose it
    (beam_indices; row i of every step without them); 0 after a hypothesis ended. transformers'
    compute_transition_scores: with normalize_logits, each step's scores pass a log-softmax first."""
    steps = torch.stack(scores, dim=1)  # (rows, T, V)
    if normalize_logits:
        steps = torch.log_softmax(steps, dim=-1)
    if beam_indices is None:
        beam_indices = torch.arange(steps.shape[0], device=steps.device)[:, None].expand(-1, steps.shape[1])
    ended = beam_indices < 0
    length = int((~ended).sum(-1).max())
    rows, ended = beam_indices[:, :length].clamp(min=0).long(), ended[:, :length]
    tokens = sequences[:, sequences.shape[1] - length:]
    picked = steps[rows, torch.arange(length, device=steps.device), tokens]
    return picked.masked_fill(ended, 0.0)
