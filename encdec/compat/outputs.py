"""Model outputs in transformers' shapes: dataclasses read by attribute, by key (`out["logits"]`) or
by index (`loss, logits = out[:2]`), where keys and indices skip the fields that are None, as
transformers' ModelOutput does."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from torch import Tensor


class ModelOutput:
    """Mixin for the output dataclasses: mapping and tuple access over the fields that are set."""

    def to_tuple(self) -> tuple:
        return tuple(v for _, v in self.items())

    def keys(self) -> list[str]:
        return [k for k, _ in self.items()]

    def values(self) -> list[Any]:
        return [v for _, v in self.items()]

    def items(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if getattr(self, key, None) is None:
                raise KeyError(f"{key!r} is not set in this output; set keys: {self.keys()}.")
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    @property
    def cache(self) -> Any:
        """transformers 5's name for past_key_values."""
        return getattr(self, "past_key_values", None)


@dataclass
class BaseModelOutput(ModelOutput):
    """An encoder's (or a base decoder's) hidden states."""

    last_hidden_state: Tensor | None = None
    past_key_values: Any = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    """A base model whose family has a pooler (BERT, RoBERTa, ...): transformers'
    BaseModelOutputWithPoolingAndCrossAttentions, fields in its order."""

    last_hidden_state: Tensor | None = None
    pooler_output: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    past_key_values: Any = None
    attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None


@dataclass
class CausalLMOutput(ModelOutput):
    """A decoder with an LM head (transformers' CausalLMOutputWithCrossAttentions)."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    past_key_values: Any = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None


@dataclass
class Seq2SeqLMOutput(ModelOutput):
    """EncoderDecoderModel's output, fields in transformers' order."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    past_key_values: Any = None
    decoder_hidden_states: tuple[Tensor, ...] | None = None
    decoder_attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None
    encoder_last_hidden_state: Tensor | None = None
    encoder_hidden_states: tuple[Tensor, ...] | None = None
    encoder_attentions: tuple[Tensor, ...] | None = None
