"""GenerationConfig and Plan: generation settings in transformers' names, resolved and checked once
before any search runs.

Settings come, highest priority first, from keyword arguments, a `GenerationConfig` passed in,
the model's `generation_config` (generation_config.json, or the generation keys old checkpoints
keep in config.json) and the defaults below, which are transformers' defaults.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from encdec.base.fieldtypes import check_field_types
from encdec.base.jsonfile import naming, read_json
from encdec.nn.config import EncoderDecoderConfig

GENERATION_CONFIG_NAME = "generation_config.json"
DEFAULT_MAX_LENGTH = 20
EARLY_STOPPING = (True, False, "never")
_TOP_IDS = ("decoder_start_token_id", "pad_token_id", "eos_token_id")  # fields of EncoderDecoderConfig
# Ids transformers reads from the decoder's config when the top-level config leaves them unset.
_ID_FIELDS = ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id")


@dataclass
class GenerationConfig:
    """What `generate` does, under transformers' names and with its defaults."""

    max_length: int = DEFAULT_MAX_LENGTH  # counts the start token; the default means 20 new tokens
    max_new_tokens: int | None = None  # wins over max_length
    min_length: int = 0  # counts the start token: EOS is banned while the sequence is shorter
    min_new_tokens: int | None = None  # wins over min_length
    num_beams: int = 1
    early_stopping: bool | str = False  # True, False or "never" (see generation/beam.py)
    length_penalty: float = 1.0  # finished beams score sum_logprobs / length ** length_penalty
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    num_return_sequences: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    decoder_start_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    speculative: bool = True  # encdec's own: exact copy-speculative greedy search (encdec/generation/speculative.py)
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept for round trips

    def __post_init__(self) -> None:
        check_field_types(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationConfig:
        """Known keys become fields (None means the default); the rest is kept in `extra`."""
        known = field_names()
        values = {k: v for k, v in data.items() if k in known and v is not None}
        extra = {k: v for k, v in data.items() if k not in known and k != "extra"}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """Fields that differ from the defaults (as transformers saves them), plus `extra`."""
        default = GenerationConfig()
        out = copy.deepcopy(self.extra)
        out.update({k: getattr(self, k) for k in field_names() if getattr(self, k) != getattr(default, k)})
        return out

    def update(self, **kwargs: Any) -> GenerationConfig:
        """A copy with `kwargs` applied; an unknown name raises, listing the known ones."""
        unknown = set(kwargs) - field_names()
        if unknown:
            raise TypeError(
                f"Unknown generation argument(s) {sorted(unknown)}; known: {sorted(field_names())}."
            )
        new, default = copy.deepcopy(self), GenerationConfig()
        for key, value in kwargs.items():  # None restores a default; for ids it means "none"
            setattr(new, key, getattr(default, key) if value is None else value)
        check_field_types(new)
        return new

    @classmethod
    def from_model_config(cls, config: EncoderDecoderConfig) -> GenerationConfig:
        """Generation keys old checkpoints keep in config.json, and the ids of the top-level config,
        falling back to the decoder's config for ids left unset (as transformers does)."""
        top = {**config.extra, **{k: getattr(config, k) for k in _TOP_IDS}}
        gen = cls.from_dict({k: v for k, v in top.items() if k in field_names()})
        decoder = {**config.decoder.extra, **{k: getattr(config.decoder, k) for k in _ID_FIELDS}}
        default = cls()
        for name in field_names():
            if getattr(gen, name) == getattr(default, name) and decoder.get(name) is not None:
                setattr(gen, name, decoder[name])
        gen._origin = copy.deepcopy(gen)  # lets generate() notice ids set later on model.config
        return gen

    @classmethod
    def load(cls, folder: str | os.PathLike) -> GenerationConfig:
        path = Path(folder) / GENERATION_CONFIG_NAME
        data = read_json(path)
        data.pop("transformers_version", None)
        data.pop("_from_model_config", None)
        with naming(path):
            return cls.from_dict(data)

    def save(self, folder: str | os.PathLike) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        (Path(folder) / GENERATION_CONFIG_NAME).write_text(text)


def field_names() -> set[str]:
    return {f.name for f in fields(GenerationConfig)} - {"extra"}


@dataclass
class Plan:
    """A resolved GenerationConfig, what every search reads: lengths made absolute, special ids
    filled in, every value checked."""

    config: GenerationConfig  # what it was resolved from (its `extra` holds transformers' rules)
    max_length: int  # counts the start token
    min_length: int
    start_id: int
    eos_ids: list[int]
    pad_id: int | None
    num_beams: int
    num_return_sequences: int
    do_sample: bool
    early_stopping: bool | str
    length_penalty: float
    no_repeat_ngram_size: int
    repetition_penalty: float
    temperature: float
    top_k: int
    top_p: float
    speculative: bool


# The settings a Plan copies from the config as they are.
_SEARCH_SETTINGS = ("num_beams", "num_return_sequences", "do_sample", "early_stopping", "length_penalty",
                    "no_repeat_ngram_size", "repetition_penalty", "temperature", "top_k", "top_p", "speculative")


def resolve(base: GenerationConfig, kwargs: dict[str, Any], max_positions: int) -> Plan:
    """Apply kwargs to the base config, make lengths absolute and check everything once."""
    config = base.update(**kwargs)
    eos = config.eos_token_id
    eos_ids = [] if eos is None else ([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])
    pad = config.pad_token_id if config.pad_token_id is not None else (eos_ids[0] if eos_ids else None)
    start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.bos_token_id
    if start is None:
        raise ValueError(
            "decoder_start_token_id is not set: set model.config.decoder_start_token_id (e.g. to "
            "tokenizer.cls_token_id for BERT) or pass decoder_start_token_id=... to generate."
        )
    plan = Plan(config, _max_length(config, kwargs), _min_length(config), int(start), eos_ids, pad,
                **{name: getattr(config, name) for name in _SEARCH_SETTINGS})
    validate(plan, max_positions)
    return plan


def _max_length(config: GenerationConfig, kwargs: dict[str, Any]) -> int:
    """Total length including the start token. Like transformers, a max_length left at its default
    means 20 new tokens."""
    if config.max_new_tokens is not None:
        return config.max_new_tokens + 1
    if "max_length" not in kwargs and config.max_length == DEFAULT_MAX_LENGTH:
        return DEFAULT_MAX_LENGTH + 1
    return config.max_length


def _min_length(config: GenerationConfig) -> int:
    return config.min_new_tokens + 1 if config.min_new_tokens is not None else config.min_length


def validate(plan: Plan, max_positions: int) -> None:
    """Raise early, naming the bad value and the fix."""
    for ok, message in _length_checks(plan, max_positions) + _search_checks(plan.config):
        if not ok:
            raise ValueError(message)


def _length_checks(plan: Plan, max_positions: int) -> list[tuple[bool, str]]:
    longest, shortest = plan.max_length, plan.min_length
    return [
        (longest > 1, f"max_length {longest} leaves no room after the start token; raise it or set max_new_tokens."),
        (longest <= max_positions, f"max_length {longest} exceeds the decoder's {max_positions} positions; "
                                   "lower max_length / max_new_tokens."),
        (shortest <= longest, f"min_length {shortest} > max_length {longest}; lower min_length (min_new_tokens) "
                              "or raise max_length (max_new_tokens)."),
    ]


def _search_checks(c: GenerationConfig) -> list[tuple[bool, str]]:
    n = c.num_return_sequences
    checks = [
        (c.num_beams >= 1, f"num_beams must be >= 1, got {c.num_beams}; use 1 for greedy search."),
        (n >= 1, f"num_return_sequences must be >= 1, got {n}."),
        (c.early_stopping in EARLY_STOPPING, f"early_stopping must be True, False or 'never': {c.early_stopping!r}."),
        (c.repetition_penalty > 0, f"repetition_penalty must be > 0, got {c.repetition_penalty}; 1.0 disables it."),
        (c.no_repeat_ngram_size >= 0, f"no_repeat_ngram_size must be >= 0, got {c.no_repeat_ngram_size}; 0 is off."),
    ]
    if c.num_beams > 1:
        checks.append((n <= c.num_beams, f"num_return_sequences {n} > num_beams {c.num_beams}; beam search returns "
                                         "at most num_beams sequences: raise num_beams or lower num_return_sequences."))
    elif not c.do_sample:
        checks.append((n == 1, f"greedy search returns one sequence per input, not num_return_sequences={n}; "
                               f"use num_beams >= {n} or do_sample=True."))
    if c.do_sample:
        checks += [
            (c.temperature > 0, f"temperature must be > 0, got {c.temperature}; for greedy set do_sample=False."),
            (c.top_k >= 0, f"top_k must be >= 0, got {c.top_k}; 0 disables it."),
            (0.0 <= c.top_p <= 1.0, f"top_p must be in [0, 1], got {c.top_p}; 1.0 disables it."),
        ]
    return checks
