"""Backbone and encoder-decoder configs, read from and written to Hugging Face config.json dicts.

One `BackboneConfig` serves every family: a family is one row of `FAMILIES` (flags the backbone
reads, defaults, and the HF names of fields, e.g. GPT-2's `n_embd` for `hidden_size`), translated
only at the border.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from encdec.base.fieldtypes import check_field_types
from encdec.base.hub import resolve_model_dir
from encdec.base.jsonfile import naming, read_config_json


@dataclass(frozen=True)
class Family:
    """How one checkpoint family differs from BERT, as values: the backbone reads these flags, and
    transformers' class names for it (the border: encdec.compat derives its names from these)."""

    hf_config: str  # transformers' config class, e.g. "BertConfig"
    hf_encoder: str | None  # transformers' base-model class (an encoder), e.g. "BertModel"
    hf_decoder: str | None  # transformers' causal-LM class (a decoder), e.g. "BertLMHeadModel"
    defaults: dict[str, Any] = field(default_factory=dict)  # config values unlike BertConfig's
    hf_names: dict[str, str | None] = field(default_factory=dict)  # ours -> config.json name; None: absent
    encoder: bool = True  # usable as the encoder
    decoder: bool = True  # usable as the decoder (causal self-attention + cross-attention + LM head)
    pre_norm: bool = False  # LayerNorm before each sub-layer (GPT-2), not after the residual sum
    final_norm: bool = False  # a LayerNorm after the last layer (GPT-2's ln_f)
    embedding_norm: bool = True  # LayerNorm on the summed embeddings
    roberta_positions: bool = False  # positions count real tokens from pad + 1; pads sit at pad
    pad_embedding: bool = True  # the word embedding's pad row gets no gradient (padding_idx)
    pooler: bool = False  # encoder checkpoints carry a pooler (loaded and saved, never run)
    head: str = "transform"  # LM head: "transform" (dense, act, LayerNorm), "plain" or "none"
    head_hidden: bool = True  # the transform keeps the hidden width (False: to embedding_size, ELECTRA)
    head_act: str | None = None  # the transform's activation; None: hidden_act
    head_bias: bool = True
    scaled_init: bool = False  # GPT-2 scales residual output projections by 1/sqrt(2 n_layer)


_ROBERTA_DEFAULTS = dict(
    vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
    pad_token_id=1, bos_token_id=0, eos_token_id=2,
)
_ROBERTA = dict(roberta_positions=True, pooler=True, head_act="gelu")

# One row per supported model_type. Defaults follow the family's published checkpoints where
# transformers' config class keeps BERT's (roberta-base, xlm-roberta-base, camembert-base).
FAMILIES: dict[str, Family] = {
    "bert": Family("BertConfig", "BertModel", "BertLMHeadModel", pooler=True),
    "roberta": Family("RobertaConfig", "RobertaModel", "RobertaForCausalLM", defaults=_ROBERTA_DEFAULTS, **_ROBERTA),
    "xlm-roberta": Family("XLMRobertaConfig", "XLMRobertaModel", "XLMRobertaForCausalLM",
                          defaults=dict(_ROBERTA_DEFAULTS, vocab_size=250002), **_ROBERTA),
    "camembert": Family("CamembertConfig", "CamembertModel", "CamembertForCausalLM",
                        defaults=dict(_ROBERTA_DEFAULTS, vocab_size=32005), **_ROBERTA),
    "bert-generation": Family(
        "BertGenerationConfig", "BertGenerationEncoder", "BertGenerationDecoder",
        defaults=dict(
            vocab_size=50358, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
            intermediate_size=4096, pad_token_id=0, bos_token_id=2, eos_token_id=1, type_vocab_size=0,
        ),
        hf_names={"type_vocab_size": None}, head="plain",
    ),
    "electra": Family(
        "ElectraConfig", "ElectraModel", "ElectraForCausalLM",
        defaults=dict(embedding_size=128, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
        hf_names={"embedding_size": "embedding_size"}, head_hidden=False, head_act="gelu",
    ),
    "distilbert": Family(
        "DistilBertConfig", "DistilBertModel", None,
        defaults=dict(type_vocab_size=0),
        hf_names={
            "hidden_size": "dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
            "intermediate_size": "hidden_dim", "hidden_act": "activation", "hidden_dropout_prob": "dropout",
            "attention_probs_dropout_prob": "attention_dropout", "sinusoidal_positions": "sinusoidal_pos_embds",
            "layer_norm_eps": None, "type_vocab_size": None,
        },
        decoder=False,
    ),
    "gpt2": Family(
        "GPT2Config", None, "GPT2LMHeadModel",
        defaults=dict(
            vocab_size=50257, max_position_embeddings=1024, hidden_act="gelu_new", layer_norm_eps=1e-5,
            type_vocab_size=0, pad_token_id=None, bos_token_id=50256, eos_token_id=50256,
            intermediate_size=None, embedding_dropout_prob=0.1,
        ),
        hf_names={
            "hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
            "intermediate_size": "n_inner", "max_position_embeddings": "n_positions",
            "hidden_act": "activation_function", "layer_norm_eps": "layer_norm_epsilon",
            "hidden_dropout_prob": "resid_pdrop", "attention_probs_dropout_prob": "attn_pdrop",
            "embedding_dropout_prob": "embd_pdrop", "type_vocab_size": None,
        },
        encoder=False, pre_norm=True, final_norm=True, embedding_norm=False, pad_embedding=False,
        head="plain", head_bias=False, scaled_init=True,
    ),
}
MODEL_TYPES = tuple(FAMILIES)
# Fields only some families have: absent from config.json unless the family's hf_names names them.
_FAMILY_ONLY = ("embedding_size", "embedding_dropout_prob", "sinusoidal_positions")


def family_of(model_type: Any) -> Family:
    """The family row, or an error that lists the supported model types."""
    if model_type not in FAMILIES:
        raise ValueError(
            f"Unknown model_type {model_type!r}: encdec supports {', '.join(MODEL_TYPES)} "
            "(or 'encoder-decoder' at the top level). Use a checkpoint of one of these families or convert it first."
        )
    return FAMILIES[model_type]


@dataclass
class BackboneConfig:
    """Hyper-parameters of one backbone of any family, under BERT's field names."""

    model_type: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int | None = 3072  # GPT-2: None means 4 * hidden_size
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # 0: the family has no token-type embeddings
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    embedding_dropout_prob: float | None = None  # GPT-2's embd_pdrop; the others use hidden_dropout_prob
    embedding_size: int | None = None  # ELECTRA's embedding width; None: hidden_size
    sinusoidal_positions: bool = False  # DistilBERT's sinusoidal_pos_embds (fixed sin/cos init)
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    decoder_start_token_id: int | None = None
    is_decoder: bool = False
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # unknown HF keys, kept for round trips

    def __post_init__(self) -> None:
        family_of(self.model_type)
        check_field_types(self)  # a config.json value of the wrong type, named before it reaches a layer
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}; pick a head count that divides it."
            )

    def __setattr__(self, name: str, value: Any) -> None:
        """transformers code sets attributes after construction: our fields and the family's HF
        names (GPT-2's `n_layer`, `activation_function`) set the field; settings we cannot honour
        raise; other names are kept in `extra`, so they are saved and read back."""
        alias = hf_aliases(self.__dict__.get("model_type", "bert")).get(name)
        set_attribute(self, alias or name, value, _BACKBONE_FIELDS)

    def __getattr__(self, name: str) -> Any:
        alias = hf_aliases(self.__dict__.get("model_type", "bert")).get(name)
        if alias:
            return getattr(self, alias)
        return get_attribute(self, name, is_encoder_decoder=False)

    @property
    def family(self) -> Family:
        return FAMILIES[self.model_type]

    @property
    def ffn_size(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size

    @property
    def embedding_width(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def pre_norm(self) -> bool:
        return self.family.pre_norm

    @property
    def embd_dropout(self) -> float:
        return self.hidden_dropout_prob if self.embedding_dropout_prob is None else self.embedding_dropout_prob

    @property
    def position_offset(self) -> int:
        """The first position a real token takes: RoBERTa-style families start after the pad id."""
        return (self.pad_token_id or 0) + 1 if self.family.roberta_positions else 0

    @property
    def max_positions(self) -> int:
        """The longest sequence the position table covers (RoBERTa: 514 rows hold 512 tokens)."""
        return self.max_position_embeddings - self.position_offset

    @classmethod
    def from_dict(cls, hf: dict[str, Any]) -> BackboneConfig:
        """Build from a Hugging Face config.json dict of any supported family."""
        hf = dict(hf)
        model_type = hf.get("model_type")
        family = family_of(model_type)
        kwargs: dict[str, Any] = dict(family.defaults)
        for ours, theirs in _hf_names(family).items():
            if theirs is not None and theirs in hf:
                kwargs[ours] = hf.pop(theirs)
        for name, value in hf.items():
            check_setting(name, value)
        return cls(extra=hf, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The Hugging Face config.json dict, with the family's own field names."""
        out = copy.deepcopy(self.extra)
        for ours, theirs in _hf_names(self.family).items():
            value = getattr(self, ours)
            if theirs is not None and not (ours in _FAMILY_ONLY and value is None):
                out[theirs] = value
        out.pop("architectures", None)
        return dict(sorted(out.items()))


def _hf_names(family: Family) -> dict[str, str | None]:
    """Every field of ours -> its config.json name in this family (None: the family lacks it)."""
    names: dict[str, str | None] = {
        f.name: (None if f.name in _FAMILY_ONLY else f.name) for f in fields(BackboneConfig) if f.name != "extra"
    }
    names.update(family.hf_names)
    return names


def hf_aliases(model_type: str) -> dict[str, str]:
    """The family's config.json names that differ from ours -> our field (GPT-2's n_embd -> hidden_size)."""
    family = FAMILIES.get(model_type, FAMILIES["bert"])
    return {theirs: ours for ours, theirs in family.hf_names.items() if theirs and theirs != ours}


# Settings transformers code reads from a config, with transformers' defaults when unset.
RUNTIME_DEFAULTS = {
    "output_attentions": False, "output_hidden_states": False, "use_return_dict": True, "return_dict": True,
    "use_cache": True, "torchscript": False, "chunk_size_feed_forward": 0,
}
# Settings encdec has one value of: any other value raises when set or read from config.json.
_FIXED = {"position_embedding_type": ("absolute",), "chunk_size_feed_forward": (0,), "torchscript": (False,)}


def check_setting(name: str, value: Any) -> None:
    """Raise for a config setting encdec cannot honour, naming it and what is supported."""
    if name in _FIXED and value not in _FIXED[name]:
        raise ValueError(
            f"{name}={value!r} is not supported; encdec implements {name}={_FIXED[name][0]!r} only. "
            "Leave it unset or use transformers for this model."
        )
    if name == "attn_implementation" and value not in (None, "sdpa", "eager"):
        raise ValueError(f"attn_implementation={value!r} is not supported; use 'sdpa' (default) or 'eager'.")


def set_attribute(config: Any, name: str, value: Any, known: frozenset[str]) -> None:
    """A field is set as is; anything else is checked and kept in `config.extra` (saved)."""
    if name in known or name.startswith("_"):
        object.__setattr__(config, name, value)
        return
    check_setting(name, value)
    config.extra[name] = value


def get_attribute(config: Any, name: str, is_encoder_decoder: bool) -> Any:
    """An attribute that is not a field: from `extra`, else transformers' default for it."""
    if name.startswith("__") or name == "extra":
        raise AttributeError(name)
    extra = config.__dict__.get("extra", {})
    if name in extra:
        return extra[name]
    if name == "is_encoder_decoder":
        return is_encoder_decoder
    if name == "use_return_dict":
        return extra.get("return_dict", True)
    if name in RUNTIME_DEFAULTS:
        return RUNTIME_DEFAULTS[name]
    raise AttributeError(f"{type(config).__name__} has no attribute {name!r}")


def max_positions_of(hf: dict[str, Any]) -> int | None:
    """`max_positions` of a single-model config.json dict; None for other config files."""
    if hf.get("model_type") not in FAMILIES:
        return None
    return BackboneConfig.from_dict(hf).max_positions


_BACKBONE_FIELDS = frozenset(f.name for f in fields(BackboneConfig))
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

    def __setattr__(self, name: str, value: Any) -> None:
        set_attribute(self, name, value, _TOP_FIELDS)

    def __getattr__(self, name: str) -> Any:
        return get_attribute(self, name, is_encoder_decoder=True)

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

    def __post_init__(self) -> None:
        check_field_types(self, skip=("encoder", "decoder", "extra"))

    @classmethod
    def from_dict(cls, hf: dict[str, Any]) -> EncoderDecoderConfig:
        hf = dict(hf)
        if hf.get("model_type") not in ("encoder-decoder", None) or "encoder" not in hf or "decoder" not in hf:
            raise ValueError(
                f"Expected an encoder-decoder config.json (model_type 'encoder-decoder' with nested "
                f"'encoder' and 'decoder'), got model_type {hf.get('model_type')!r}. For a single "
                "single-model checkpoint use EncoderDecoderModel.from_encoder_decoder_pretrained."
            )
        sides = {side: _side_config(hf.pop(side), side) for side in ("encoder", "decoder")}
        kwargs = {k: hf.pop(k) for k in _TOP_KEYS if k in hf}
        for k in ("model_type", "architectures", "is_encoder_decoder", "transformers_version"):
            hf.pop(k, None)
        return cls(**sides, extra=hf, **kwargs)

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
        """Read config.json from a local folder or a name resolved through the hub rules; what is
        wrong in it is one error naming the file."""
        folder = resolve_model_dir(folder)
        with naming(folder / "config.json"):
            return cls.from_dict(read_config_json(folder))

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        for key, value in self.extra.items():
            check_setting(key, value)
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "config.json").write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


def _side_config(hf: Any, side: str) -> BackboneConfig:
    """The encoder or decoder section of an encoder-decoder config.json."""
    if not isinstance(hf, dict):
        raise ValueError(f"{side!r} is {hf!r} ({type(hf).__name__}), not an object holding the {side}'s config")
    try:
        return BackboneConfig.from_dict(hf)
    except ValueError as exc:
        raise ValueError(f"{side}: {exc}") from None


_TOP_FIELDS = frozenset(f.name for f in fields(EncoderDecoderConfig))
