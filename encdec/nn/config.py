"""Backbone and encoder-decoder configs, read from and written to Hugging Face config.json dicts.

One `BackboneConfig` serves every family: a family is one row of `FAMILIES` (encdec.nn.families:
flags the backbone reads, defaults, and the HF names of fields, e.g. GPT-2's `n_embd` for
`hidden_size`), translated only at the border.
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
from encdec.nn.families import FAMILIES, FAMILY_ONLY, Family, family_of


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
    # Fields of the decoder-only LM families (transformers' Llama/Qwen/Gemma names); absent from the
    # config.json of families that lack them.
    num_key_value_heads: int | None = None  # grouped-query attention; None: num_attention_heads
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    rope_parameters: dict[str, Any] | None = None  # {"rope_type", "rope_theta", scaling keys}
    attention_bias: bool | None = None  # Llama: biases on q/k/v/o (a family may fix them)
    mlp_bias: bool | None = None
    sliding_window: int | None = None  # keys a sliding-attention layer sees
    layer_types: list[str] | None = None  # "full_attention" / "sliding_attention" per layer
    query_pre_attn_scalar: float | None = None  # Gemma 2: attention scale 1/sqrt(this), not 1/sqrt(head_dim)
    attn_logit_softcapping: float | None = None  # scores -> cap * tanh(scores / cap)
    final_logit_softcapping: float | None = None  # logits -> cap * tanh(logits / cap)
    cross_attention_init: str | None = None  # a decoder's cross-attention kind (Family.cross_attention)
    use_bidirectional_attention: bool | None = None  # an LM family's layers made bidirectional (an encoder)
    cross_attention_hidden_size: int | None = None  # cross-attention reads encoder outputs this wide (T5Gemma)
    norm_bias: bool | None = None  # LayerNorms with a bias (None: yes); ModernBERT's have none by default
    local_attention: int | None = None  # ModernBERT's window: `local_attention // 2` keys either side (decoder: newest)
    # LM heads whose parts the config sets (ModernBERT's decoder); None: the family's fixed choice
    head_dense_bias: bool | None = None  # a bias on the head's dense transform (None: yes)
    head_activation: str | None = None  # the transform's activation (None: Family.head_act, else hidden_act)
    head_bias: bool | None = None  # a bias on the vocabulary projection (None: Family.head_bias)
    extra: dict[str, Any] = field(default_factory=dict)  # unknown HF keys, kept for round trips

    def __post_init__(self) -> None:
        family = family_of(self.model_type)
        check_field_types(self)  # a config.json value of the wrong type, named before it reaches a layer
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}; pick a head count that divides it."
            )
        if self.num_attention_heads % self.kv_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {self.kv_heads}; pick a kv head count that divides it.")
        kind = self.cross_attention_init
        if kind is not None and kind not in family.cross_attention:
            raise ValueError(f"cross_attention_init={kind!r} is not available for a {self.model_type} decoder; "
                             f"choose one of {', '.join(family.cross_attention)}.")

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
    def causal(self) -> bool:
        """Whether self-attention is causal: a decoder, or a decoder-only LM family not made bidirectional."""
        return self.is_decoder or (self.family.causal_lm and not self.use_bidirectional_attention)

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def cross_attention_kind(self) -> str:
        """The decoder's cross-attention kind: the one it was composed with, else the family's default."""
        return self.cross_attention_init or self.family.cross_attention[0]

    @property
    def layer_norm_bias(self) -> bool:
        """Whether the family's norms are LayerNorms with a bias (ModernBERT's norm_bias=False: none)."""
        return self.family.norm == "layer" and self.norm_bias is not False

    @property
    def lm_head_biases(self) -> tuple[bool, bool]:
        """(bias on the head's dense transform, bias on the vocabulary projection): the config's where
        it names them (ModernBERT's decoder), else the family's."""
        vocab = self.family.head_bias if self.head_bias is None else self.head_bias
        return self.head_dense_bias is not False, vocab

    @property
    def window(self) -> int | None:
        """How far a sliding-attention layer sees: the `sliding_window` newest keys (causal), or keys
        within this distance either side (bidirectional); ModernBERT and its decoder: half their `local_attention`."""
        return self.local_attention // 2 if self.local_attention is not None else self.sliding_window

    @property
    def rope(self) -> dict[str, Any]:
        """RoPE settings with transformers' defaults filled in (type "default", theta 10000)."""
        return {"rope_type": "default", "rope_theta": 10000.0, **(self.rope_parameters or {})}

    @property
    def rope_kinds(self) -> list[str | None]:
        """The layer kinds with RoPE settings of their own (ModernBERT's `rope_parameters` keyed by
        "full_attention" / "sliding_attention": one theta for global layers, one for local ones), or
        [None]: one setting for every layer."""
        params, kinds = self.rope_parameters or {}, sorted(set(self.layer_kinds))
        return kinds if all(isinstance(params.get(kind), dict) for kind in kinds) else [None]

    def rope_for(self, kind: str | None) -> dict[str, Any]:
        """RoPE settings of layers of `kind` (a `rope_kinds` entry; None: the one setting)."""
        if kind is None:
            return self.rope
        return {"rope_type": "default", "rope_theta": 10000.0, **self.rope_parameters[kind]}

    @property
    def layer_kinds(self) -> list[str]:
        """ "full_attention" or "sliding_attention" for each layer, as transformers derives them when
        config.json lists none (Gemma 2 alternates from a sliding first layer; Qwen slides from
        max_window_layers on when use_sliding_window is set; ModernBERT makes every
        `global_attn_every_n_layers`-th layer global from the first, default 3)."""
        n, window = self.num_hidden_layers, self.window
        if self.layer_types is not None:
            return list(self.layer_types)
        if window is None or self.family.sliding_layers == "none":
            return ["full_attention"] * n
        if self.family.sliding_layers == "alternate":
            return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)]
        if self.family.sliding_layers == "every_nth":
            every = self.extra.get("global_attn_every_n_layers", 3)
            return ["full_attention" if i % every == 0 else "sliding_attention" for i in range(n)]
        first = self.extra.get("max_window_layers", n) if self.extra.get("use_sliding_window") else n
        return ["sliding_attention" if i >= first else "full_attention" for i in range(n)]

    @property
    def packable(self) -> bool:
        """Whether the training fast path can run on packed tokens: not with soft-capped scores or
        merged cross-attention (those run padded)."""
        return not (self.attn_logit_softcapping or (self.add_cross_attention and self.cross_attention_kind == "merged"))

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
        kwargs: dict[str, Any] = copy.deepcopy(family.defaults)
        if family.legacy_rope_thetas:
            _legacy_rope_per_kind(hf, family)
        elif family.positions == "rotary":
            _legacy_rope(hf)
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
            if theirs is not None and not (ours in FAMILY_ONLY and value is None):
                out[theirs] = value
        out.pop("architectures", None)
        return dict(sorted(out.items()))


def _legacy_rope(hf: dict[str, Any]) -> None:
    """config.json files written before transformers 5 keep `rope_theta` and `rope_scaling` at the
    top; fold them into `rope_parameters` as transformers 5 reads them."""
    theta, scaling = hf.pop("rope_theta", None), hf.pop("rope_scaling", None)
    if theta is None and scaling is None:
        return
    params = dict(scaling or hf.get("rope_parameters") or {})
    if "type" in params:
        params.setdefault("rope_type", params.pop("type"))
    params.setdefault("rope_type", "default")
    if theta is not None:
        params.setdefault("rope_theta", theta)
    hf["rope_parameters"] = params


def _legacy_rope_per_kind(hf: dict[str, Any], family: Family) -> None:
    """Families with RoPE settings per layer kind (ModernBERT): every kind's settings complete, as
    transformers 5 fills them: its `rope_parameters` entry, else older configs' `rope_scaling` and
    per-kind theta (`global_rope_theta`, `local_rope_theta`), else the family's defaults."""
    thetas = {kind: hf.pop(name) for kind, name in family.legacy_rope_thetas.items() if name in hf}
    scaling, given = hf.pop("rope_scaling", None), hf.get("rope_parameters") or {}
    params = copy.deepcopy(family.defaults["rope_parameters"])
    for kind, own in params.items():
        mine = dict(given.get(kind) or {})
        if scaling:
            mine.update(scaling)
        if "type" in mine:
            mine.setdefault("rope_type", mine.pop("type"))
        if "rope_theta" not in mine and kind in thetas:
            mine["rope_theta"] = thetas[kind]
        own.update(mine)
    hf["rope_parameters"] = params


def _hf_names(family: Family) -> dict[str, str | None]:
    """Every field of ours -> its config.json name in this family (None: the family lacks it)."""
    names: dict[str, str | None] = {
        f.name: (None if f.name in FAMILY_ONLY else f.name) for f in fields(BackboneConfig) if f.name != "extra"
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
    hf_format: str = "encoder-decoder"  # config.json and weight layout: transformers' EncoderDecoderModel, "t5gemma"
    extra: dict[str, Any] = field(default_factory=dict)

    def __setattr__(self, name: str, value: Any) -> None:
        set_attribute(self, name, value, _TOP_FIELDS)

    @property
    def cross_attention_init(self) -> str:
        """How the decoder's cross-attention was added (stored in the decoder's config)."""
        return self.decoder.cross_attention_kind

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
        if encoder_config.family.causal_lm:  # an LM as the encoder reads the whole source (T5Gemma's recipe)
            encoder_config.use_bidirectional_attention = True
        if decoder_config.family.causal_lm:
            # a decoder-only LM gets cross-attention added (the family's default kind unless chosen) and
            # starts, ends and pads as the LM does; BERT-era decoders keep transformers' behaviour
            decoder_config.cross_attention_init = decoder_config.cross_attention_kind
            for top, own in (("decoder_start_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                             ("pad_token_id", "pad_token_id")):
                if kwargs.get(top) is None and getattr(decoder_config, own) is not None:
                    kwargs[top] = getattr(decoder_config, own)
        return cls(encoder=encoder_config, decoder=decoder_config, **kwargs)

    def __post_init__(self) -> None:
        check_field_types(self, skip=("encoder", "decoder", "extra"))

    @classmethod
    def from_dict(cls, hf: dict[str, Any]) -> EncoderDecoderConfig:
        hf = dict(hf)
        if hf.get("model_type") == "t5gemma":
            return cls._from_t5gemma(hf)
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

    @classmethod
    def _from_t5gemma(cls, hf: dict[str, Any]) -> EncoderDecoderConfig:
        """A T5GemmaForConditionalGeneration config.json: two Gemma 2 stacks, the decoder with its own
        cross-attention over the encoder's width; generation starts at the decoder's BOS."""
        encoder, decoder = (BackboneConfig.from_dict(hf.pop(side)) for side in ("encoder", "decoder"))
        encoder.is_decoder = encoder.add_cross_attention = False
        decoder.is_decoder = decoder.add_cross_attention = True
        decoder.cross_attention_hidden_size = encoder.hidden_size
        kwargs = {k: hf.pop(k) for k in ("pad_token_id", "eos_token_id") if k in hf}
        hf.pop("bos_token_id", None)
        for k in ("model_type", "architectures", "is_encoder_decoder", "transformers_version"):
            hf.pop(k, None)
        return cls(encoder=encoder, decoder=decoder, decoder_start_token_id=decoder.bos_token_id, hf_format="t5gemma",
                   extra=hf, **kwargs)

    def _to_t5gemma(self) -> dict[str, Any]:
        sides = {side: getattr(self, side).to_dict() for side in ("encoder", "decoder")}
        for side in sides.values():
            side.pop("add_cross_attention", None)
            side.pop("decoder_start_token_id", None)
        return {**copy.deepcopy(self.extra), **sides, "architectures": ["T5GemmaForConditionalGeneration"],
                "model_type": "t5gemma", "is_encoder_decoder": True, "bos_token_id": self.decoder.bos_token_id,
                "pad_token_id": self.pad_token_id, "eos_token_id": self.eos_token_id}

    def to_dict(self) -> dict[str, Any]:
        if self.hf_format == "t5gemma":
            return self._to_t5gemma()
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
