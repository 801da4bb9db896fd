"""Backbone and encoder-decoder configs, read from and written to Hugging Face config.json dicts.

One `BackboneConfig` serves every family: the families differ by field values, and the HF names of
those fields (GPT-2's `n_embd` for `hidden_size`, ...) are translated only at the border.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

MODEL_TYPES = ("bert", "roberta", "gpt2")

# Our field name -> GPT-2's config.json name.
_GPT2_NAMES = {
    "hidden_size": "n_embd",
    "num_hidden_layers": "n_layer",
    "num_attention_heads": "n_head",
    "intermediate_size": "n_inner",
    "max_position_embeddings": "n_positions",
    "hidden_act": "activation_function",
    "layer_norm_eps": "layer_norm_epsilon",
    "hidden_dropout_prob": "resid_pdrop",
    "attention_probs_dropout_prob": "attn_pdrop",
}

_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "bert": {},
    "roberta": dict(
        vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
    ),
    "gpt2": dict(
        vocab_size=50257, max_position_embeddings=1024, hidden_act="gelu_new", layer_norm_eps=1e-5,
        type_vocab_size=0, pad_token_id=None, bos_token_id=50256, eos_token_id=50256,
        intermediate_size=None,
    ),
}


@dataclass
class BackboneConfig:
    """Hyper-parameters of one BERT, RoBERTa or GPT-2 stack, under BERT's field names."""

    model_type: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int | None = 3072  # GPT-2: None means 4 * hidden_size
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    embedding_dropout_prob: float | None = None  # GPT-2's embd_pdrop; BERT uses hidden_dropout_prob
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    decoder_start_token_id: int | None = None
    is_decoder: bool = False
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # unknown HF keys, kept for round trips

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(
                f"Unknown model_type {self.model_type!r}: encdec supports {', '.join(MODEL_TYPES)}. "
                "Use a checkpoint of one of these families or convert it first."
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}; pick a head count that divides it."
            )

    @property
    def ffn_size(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size

    @property
    def pre_norm(self) -> bool:
        """GPT-2 normalises before each sub-layer; BERT and RoBERTa after the residual sum."""
        return self.model_type == "gpt2"

    @property
    def embd_dropout(self) -> float:
        return self.hidden_dropout_prob if self.embedding_dropout_prob is None else self.embedding_dropout_prob

    @classmethod
    def from_dict(cls, hf: dict[str, Any]) -> BackboneConfig:
        """Build from a Hugging Face config.json dict of any supported family."""
        hf = dict(hf)
        model_type = hf.get("model_type")
        if model_type not in MODEL_TYPES:
            raise ValueError(
                f"Unknown model_type {model_type!r} in config: encdec supports "
                f"{', '.join(MODEL_TYPES)} backbones (or 'encoder-decoder' at the top level)."
            )
        kwargs: dict[str, Any] = dict(_FAMILY_DEFAULTS[model_type])
        names = _hf_names(model_type)
        known = {f.name for f in fields(cls)} - {"extra"}
        for ours in known:
            theirs = names.get(ours, ours)
            if theirs in hf:
                kwargs[ours] = hf.pop(theirs)
        if model_type == "gpt2" and "embd_pdrop" in hf:
            kwargs["embedding_dropout_prob"] = hf.pop("embd_pdrop")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"position_embedding_type {hf['position_embedding_type']!r} is not supported; "
                "encdec implements absolute position embeddings only."
            )
        return cls(extra=hf, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The Hugging Face config.json dict, with the family's own field names."""
        names = _hf_names(self.model_type)
        out = copy.deepcopy(self.extra)
        for f in fields(self):
            if f.name in ("extra", "embedding_dropout_prob"):
                continue
            if self.model_type == "gpt2" and f.name == "type_vocab_size":
                continue
            out[names.get(f.name, f.name)] = getattr(self, f.name)
        if self.model_type == "gpt2":
            out["embd_pdrop"] = self.embd_dropout
        out.pop("architectures", None)
        return dict(sorted(out.items()))


def _hf_names(model_type: str) -> dict[str, str]:
    return _GPT2_NAMES if model_type == "gpt2" else {}


def _family_config(model_type: str, hf_kwargs: dict[str, Any]) -> BackboneConfig:
    return BackboneConfig.from_dict({"model_type": model_type, **hf_kwargs})


def BertConfig(**kwargs: Any) -> BackboneConfig:  # noqa: N802 - mirrors transformers' class name
    """A BERT config from transformers' keyword names and defaults."""
    return _family_config("bert", kwargs)


def RobertaConfig(**kwargs: Any) -> BackboneConfig:  # noqa: N802
    """A RoBERTa config from transformers' keyword names and defaults."""
    return _family_config("roberta", kwargs)


def GPT2Config(**kwargs: Any) -> BackboneConfig:  # noqa: N802
    """A GPT-2 config from transformers' keyword names (n_embd, n_layer, ...) and defaults."""
    return _family_config("gpt2", kwargs)


_TOP_KEYS = ("decoder_start_token_id", "pad_token_id", "eos_token_id", "tie_encoder_decoder")


@dataclass
class EncoderDecoderConfig:
    """An encoder config, a decoder config and the ids that tie them together for seq2seq."""

    encoder: BackboneConfig
    decoder: BackboneConfig
    decoder_start_token_id: int | None = None
    pad_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_encoder_decoder: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_encoder_decoder_configs(
        cls, encoder_config: BackboneConfig, decoder_config: BackboneConfig, **kwargs: Any
    ) -> EncoderDecoderConfig:
        """Compose two backbone configs; the decoder gets causal self-attention and cross-attention."""
        encoder_config = copy.deepcopy(encoder_config)
        decoder_config = copy.deepcopy(decoder_config)
        encoder_config.is_decoder = encoder_config.add_cross_attention = False
        decoder_config.is_decoder = decoder_config.add_cross_attention = True
        return cls(encoder=encoder_config, decoder=decoder_config, **kwargs)

    @classmethod
    def from_dict(cls, hf: dict[str, Any]) -> EncoderDecoderConfig:
        hf = dict(hf)
        if hf.get("model_type") not in ("encoder-decoder", None) or "encoder" not in hf or "decoder" not in hf:
            raise ValueError(
                f"Expected an encoder-decoder config.json (model_type 'encoder-decoder' with nested "
                f"'encoder' and 'decoder'), got model_type {hf.get('model_type')!r}. For a single "
                "BERT/RoBERTa/GPT-2 checkpoint use EncoderDecoderModel.from_encoder_decoder_pretrained."
            )
        encoder = BackboneConfig.from_dict(hf.pop("encoder"))
        decoder = BackboneConfig.from_dict(hf.pop("decoder"))
        kwargs = {k: hf.pop(k) for k in _TOP_KEYS if k in hf}
        for k in ("model_type", "architectures", "is_encoder_decoder", "transformers_version"):
            hf.pop(k, None)
        return cls(encoder=encoder, decoder=decoder, extra=hf, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = copy.deepcopy(self.extra)
        out.update(
            architectures=["EncoderDecoderModel"],
            model_type="encoder-decoder",
            is_encoder_decoder=True,
            encoder=self.encoder.to_dict(),
            decoder=self.decoder.to_dict(),
            **{k: getattr(self, k) for k in _TOP_KEYS},
        )
        return out

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> EncoderDecoderConfig:
        """Read config.json from a local folder or a name resolved through the hub rules."""
        from encdec.hub import resolve_model_dir

        path = resolve_model_dir(folder) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"No config.json in {path.parent}; is this a model folder?")
        return cls.from_dict(json.loads(path.read_text()))

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "config.json").write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
