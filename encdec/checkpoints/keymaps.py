"""The Hugging Face key maps: our state-dict names <-> transformers', one layout per family.

Our modules keep their own short names; HF names exist only in the `LAYOUTS` table, one row per
family. A `Rule` maps one
of our tensors to one or more HF tensors (BERT's separate query/key/value become our fused `qkv`),
transposed where GPT-2 stores Conv1D weights as (in, out).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from encdec.nn.config import BackboneConfig

logger = logging.getLogger("encdec")

# Buffers and tied duplicates that checkpoints carry and we derive instead.
_DERIVED_SUFFIXES = (
    "position_ids", "embeddings.token_type_ids", "attn.bias", "attn.masked_bias",
    "crossattention.bias", "crossattention.masked_bias",
    "cls.predictions.decoder.weight", "lm_head.decoder.weight", "lm_head.weight", "generator_lm_head.weight",
    "lm_head.out_proj.weight", "decoder.weight",
)


@dataclass(frozen=True)
class Rule:
    """One of our tensors <-> one or more HF tensors, concatenated on dim 0 (split back by `sizes`,
    or in equal parts when None), transposed where the HF layout stores (in, out)."""

    ours: str
    theirs: tuple[str, ...]
    transpose: bool = False
    sizes: tuple[int, ...] | None = None
    # A weight nothing here runs (the encoder's pooler): a file without it loads, the weight starting
    # fresh and named in the load report, as transformers loads `add_pooling_layer=False` checkpoints.
    optional: bool = False


# ---------------------------------------------------------------- key maps, one table per family


def linear_rule(ours: str, *theirs: str, transpose: bool = False, bias: bool = True,
                sizes: tuple[int, ...] | None = None, optional: bool = False) -> list[Rule]:
    """A Linear (or LayerNorm): weight, and bias unless `bias=False`; `sizes` split a fused weight."""
    rules = [Rule(f"{ours}.weight", tuple(f"{t}.weight" for t in theirs), transpose, sizes, optional)]
    if bias:
        rules.append(Rule(f"{ours}.bias", tuple(f"{t}.bias" for t in theirs), sizes=sizes, optional=optional))
    return rules


def norm_rule(config: BackboneConfig, ours: str, theirs: str) -> list[Rule]:
    """A LayerNorm (weight, and bias unless norm_bias=False) or an RMSNorm (weight only), as the family uses."""
    return linear_rule(ours, theirs, bias=config.layer_norm_bias)


def _bert_layer(i: int, p: str, config: BackboneConfig) -> list[Rule]:
    h, o = f"{p}encoder.layer.{i}.", f"layers.{i}."
    rules = [
        *linear_rule(o + "self_attn.qkv", *(f"{h}attention.self.{n}" for n in ("query", "key", "value"))),
        *linear_rule(o + "self_attn.out", h + "attention.output.dense"),
        *linear_rule(o + "self_attn_norm", h + "attention.output.LayerNorm"),
        *linear_rule(o + "mlp.fc_in", h + "intermediate.dense"),
        *linear_rule(o + "mlp.fc_out", h + "output.dense"),
        *linear_rule(o + "mlp_norm", h + "output.LayerNorm"),
    ]
    if config.add_cross_attention:
        rules += [
            *linear_rule(o + "cross_attn.q", h + "crossattention.self.query"),
            *linear_rule(o + "cross_attn.kv", h + "crossattention.self.key", h + "crossattention.self.value"),
            *linear_rule(o + "cross_attn.out", h + "crossattention.output.dense"),
            *linear_rule(o + "cross_attn_norm", h + "crossattention.output.LayerNorm"),
        ]
    return rules


def _distilbert_layer(i: int, p: str, config: BackboneConfig) -> list[Rule]:
    h, o = f"{p}transformer.layer.{i}.", f"layers.{i}."
    return [
        *linear_rule(o + "self_attn.qkv", *(f"{h}attention.{n}_lin" for n in ("q", "k", "v"))),
        *linear_rule(o + "self_attn.out", h + "attention.out_lin"),
        *linear_rule(o + "self_attn_norm", h + "sa_layer_norm"),
        *linear_rule(o + "mlp.fc_in", h + "ffn.lin1"),
        *linear_rule(o + "mlp.fc_out", h + "ffn.lin2"),
        *linear_rule(o + "mlp_norm", h + "output_layer_norm"),
    ]


def _gpt2_layer(i: int, p: str, config: BackboneConfig) -> list[Rule]:
    h, o = f"{p}h.{i}.", f"layers.{i}."
    rules = [
        *linear_rule(o + "self_attn_norm", h + "ln_1"),
        *linear_rule(o + "self_attn.qkv", h + "attn.c_attn", transpose=True),
        *linear_rule(o + "self_attn.out", h + "attn.c_proj", transpose=True),
        *linear_rule(o + "mlp_norm", h + "ln_2"),
        *linear_rule(o + "mlp.fc_in", h + "mlp.c_fc", transpose=True),
        *linear_rule(o + "mlp.fc_out", h + "mlp.c_proj", transpose=True),
    ]
    if config.add_cross_attention:
        rules += [
            *linear_rule(o + "cross_attn_norm", h + "ln_cross_attn"),
            *linear_rule(o + "cross_attn.q", h + "crossattention.q_attn", transpose=True),
            *linear_rule(o + "cross_attn.kv", h + "crossattention.c_attn", transpose=True),
            *linear_rule(o + "cross_attn.out", h + "crossattention.c_proj", transpose=True),
        ]
    return rules


def _llama_layer(i: int, p: str, config: BackboneConfig) -> list[Rule]:
    """Llama, Qwen and Gemma 2 layers. Gemma 2's sandwich names its norms by place: input, post
    attention, pre and post feed-forward; Llama's `post_attention_layernorm` is the MLP's input norm."""
    h, o = f"{p}layers.{i}.", f"layers.{i}."
    family = config.family
    sandwich = family.sandwich_norm
    rules = [
        *_attention_rules(config, o + "self_attn", h + "self_attn", ("q_proj", "k_proj", "v_proj")),
        *norm_rule(config, o + "self_attn_norm", h + "input_layernorm"),
        *norm_rule(config, o + "mlp_norm",
                   h + ("pre_feedforward_layernorm" if sandwich else "post_attention_layernorm")),
        *linear_rule(o + "mlp.fc_in", h + "mlp.gate_proj", h + "mlp.up_proj", bias=bool(config.mlp_bias)),
        *linear_rule(o + "mlp.fc_out", h + "mlp.down_proj", bias=bool(config.mlp_bias)),
    ]
    if sandwich:
        rules += norm_rule(config, o + "self_attn_post_norm", h + "post_attention_layernorm")
        rules += norm_rule(config, o + "mlp_post_norm", h + "post_feedforward_layernorm")
    return rules + _added_cross_attention(config, o, h, "o_proj", "cross_attn_layernorm")


def _added_cross_attention(config: BackboneConfig, o: str, h: str, out: str, norm: str) -> list[Rule]:
    """The cross-attention encdec adds to a decoder-only LM, under encdec's own names in the family's
    style (these LMs have none in transformers): q/k/v and `out` projections, `norm`, the gate."""
    if not config.add_cross_attention or config.cross_attention_kind == "merged":
        return []
    rules = _attention_rules(config, o + "cross_attn", h + "cross_attn", ("q_proj", "k_proj", "v_proj"),
                             cross=True, out=out)
    rules += norm_rule(config, o + "cross_attn_norm", h + norm)
    if config.family.sandwich_norm:
        rules += norm_rule(config, o + "cross_attn_post_norm", h + "post_cross_attn_layernorm")
    if config.cross_attention_kind == "gated":
        rules.append(Rule(o + "cross_attn_gate", (h + "cross_attn_gate",)))
    return rules


def _t5gemma_layer(i: int, p: str, config: BackboneConfig) -> list[Rule]:
    """T5Gemma's encoder and decoder layers: Gemma 2's, with norms named pre_/post_ each sub-layer."""
    h, o = f"{p}layers.{i}.", f"layers.{i}."
    rules = [
        *_attention_rules(config, o + "self_attn", h + "self_attn", ("q_proj", "k_proj", "v_proj")),
        *linear_rule(o + "mlp.fc_in", h + "mlp.gate_proj", h + "mlp.up_proj", bias=False),
        *linear_rule(o + "mlp.fc_out", h + "mlp.down_proj", bias=False),
    ]
    parts = [("self_attn", "self_attn"), ("mlp", "feedforward")]
    if config.add_cross_attention:
        rules += _attention_rules(config, o + "cross_attn", h + "cross_attn", ("q_proj", "k_proj", "v_proj"),
                                  cross=True)
        parts.append(("cross_attn", "cross_attn"))
    for ours, theirs in parts:
        rules += norm_rule(config, f"{o}{ours}_norm", f"{h}pre_{theirs}_layernorm")
        rules += norm_rule(config, f"{o}{ours}_post_norm", f"{h}post_{theirs}_layernorm")
    return rules


def _modernbert_layer(i: int, p: str, config: BackboneConfig) -> list[Rule]:
    """ModernBERT's layers: fused Wqkv and GeGLU Wi already in our order; layer 0 has no attn_norm."""
    h, o = f"{p}layers.{i}.", f"layers.{i}."
    attn_bias, mlp_bias = bool(config.attention_bias), bool(config.mlp_bias)
    rules = [
        *linear_rule(o + "self_attn.qkv", h + "attn.Wqkv", bias=attn_bias),
        *linear_rule(o + "self_attn.out", h + "attn.Wo", bias=attn_bias),
        *norm_rule(config, o + "mlp_norm", h + "mlp_norm"),
        *linear_rule(o + "mlp.fc_in", h + "mlp.Wi", bias=mlp_bias),
        *linear_rule(o + "mlp.fc_out", h + "mlp.Wo", bias=mlp_bias),
    ]
    if i > 0 or config.family.first_attn_norm:
        rules += norm_rule(config, o + "self_attn_norm", h + "attn_norm")
    return rules


def _modernbert_decoder_layer(i: int, p: str, config: BackboneConfig) -> list[Rule]:
    """ModernBERT's decoder layers: ModernBERT's, with q/k/v projected apart; layer 0 has no attn_norm."""
    h, o = f"{p}layers.{i}.", f"layers.{i}."
    mlp_bias = bool(config.mlp_bias)
    rules = [
        *_attention_rules(config, o + "self_attn", h + "attn", ("q_proj", "k_proj", "v_proj"), out="Wo"),
        *norm_rule(config, o + "mlp_norm", h + "mlp_norm"),
        *linear_rule(o + "mlp.fc_in", h + "mlp.Wi", bias=mlp_bias),
        *linear_rule(o + "mlp.fc_out", h + "mlp.Wo", bias=mlp_bias),
    ]
    if i > 0:
        rules += norm_rule(config, o + "self_attn_norm", h + "attn_norm")
    return rules + _added_cross_attention(config, o, h, "Wo", "cross_attn_norm")


def _attention_rules(config: BackboneConfig, ours: str, theirs: str, qkv: tuple[str, str, str],
                     cross: bool = False, out: str = "o_proj") -> list[Rule]:
    """q/k/v projections fused as ours (q + kv for cross-attention), the output projection, q/k norms."""
    q_size, kv_size = config.num_attention_heads * config.head_size, config.kv_heads * config.head_size
    family, flag = config.family, bool(config.attention_bias)
    qkv_bias = flag if family.qkv_bias is None else family.qkv_bias
    out_bias = flag if family.out_bias is None else family.out_bias
    q, k, v = (f"{theirs}.{n}" for n in qkv)
    if cross:
        rules = [*linear_rule(ours + ".q", q, bias=qkv_bias),
                 *linear_rule(ours + ".kv", k, v, bias=qkv_bias, sizes=(kv_size, kv_size))]
    else:
        rules = linear_rule(ours + ".qkv", q, k, v, bias=qkv_bias, sizes=(q_size, kv_size, kv_size))
    rules += linear_rule(ours + ".out", f"{theirs}.{out}", bias=out_bias)
    if family.qk_norm:
        rules += norm_rule(config, ours + ".q_norm", f"{theirs}.q_norm")
        rules += norm_rule(config, ours + ".k_norm", f"{theirs}.k_norm")
    return rules


@dataclass(frozen=True)
class KeyLayout:
    """Where one family keeps each tensor in transformers' checkpoints."""

    base: str  # the attribute transformers' *ForCausalLM keeps the base model under
    layer: Callable[[int, str, BackboneConfig], list[Rule]]  # rules of layer i (HF prefix, the config)
    embeddings: dict[str, str]  # our embeddings part -> HF module, relative to the base model
    head: dict[str, str] = field(default_factory=dict)  # our head tensor -> HF name (decoders)
    final_norm: str = ""  # HF module of a final LayerNorm, relative to the base model


_BERT_EMBEDDINGS = {
    "word": "embeddings.word_embeddings", "position": "embeddings.position_embeddings",
    "token_type": "embeddings.token_type_embeddings", "norm": "embeddings.LayerNorm", "project": "embeddings_project",
}
_ROBERTA = KeyLayout("roberta.", _bert_layer, _BERT_EMBEDDINGS, {
    "head.dense": "lm_head.dense", "head.norm": "lm_head.layer_norm", "head.bias": "lm_head.bias",
    "head.weight": "lm_head.decoder.weight",
})
_LM = KeyLayout("model.", _llama_layer, {"word": "embed_tokens"}, {"head.weight": "lm_head.weight"}, "norm")
# One key map per family: the only place transformers' parameter names live.
LAYOUTS: dict[str, KeyLayout] = {
    "bert": KeyLayout("bert.", _bert_layer, _BERT_EMBEDDINGS, {
        "head.dense": "cls.predictions.transform.dense", "head.norm": "cls.predictions.transform.LayerNorm",
        "head.bias": "cls.predictions.bias", "head.weight": "cls.predictions.decoder.weight",
    }),
    "roberta": _ROBERTA,
    "xlm-roberta": _ROBERTA,
    "camembert": _ROBERTA,
    "bert-generation": KeyLayout("bert.", _bert_layer, _BERT_EMBEDDINGS, {
        "head.bias": "lm_head.bias", "head.weight": "lm_head.decoder.weight",
    }),
    "electra": KeyLayout("electra.", _bert_layer, _BERT_EMBEDDINGS, {
        "head.dense": "generator_predictions.dense", "head.norm": "generator_predictions.LayerNorm",
        "head.bias": "generator_lm_head.bias", "head.weight": "generator_lm_head.weight",
    }),
    "distilbert": KeyLayout("distilbert.", _distilbert_layer, _BERT_EMBEDDINGS),
    "gpt2": KeyLayout(
        "transformer.", _gpt2_layer, {"word": "wte", "position": "wpe"}, {"head.weight": "lm_head.weight"}, "ln_f"
    ),
    **dict.fromkeys(("llama", "qwen2", "qwen3", "gemma2"), _LM),
    # ModernBertModel; ModernBertForMaskedLM keeps it under `model.` (its head is not loaded)
    "modernbert": KeyLayout("model.", _modernbert_layer,
                            {"word": "embeddings.tok_embeddings", "norm": "embeddings.norm"}, {}, "final_norm"),
    # ModernBertDecoderModel; ModernBertDecoderForCausalLM keeps it under `model.`, its head beside it
    "modernbert-decoder": KeyLayout("model.", _modernbert_decoder_layer,
                                    {"word": "embeddings.tok_embeddings", "norm": "embeddings.norm"}, {
                                        "head.dense": "lm_head.dense", "head.norm": "lm_head.norm",
                                        "head.bias": "decoder.bias", "head.weight": "decoder.weight"},
                                    "final_norm"),
    # the stacks of T5GemmaForConditionalGeneration: composite prefixes come from encoder_decoder_rules
    "t5_gemma_module": KeyLayout("", _t5gemma_layer, {"word": "embed_tokens"},
                                 {"head.weight": "lm_head.out_proj.weight"}, "norm"),
}


def encoder_decoder_rules(config: Any) -> list[Rule]:
    """Rules between an EncoderDecoderModel's state dict and its HF folder: transformers'
    EncoderDecoderModel layout (`encoder.` / `decoder.` + each side's single-model layout), or
    T5Gemma's (`model.encoder.`, `model.decoder.`, `lm_head.out_proj`)."""
    if config.hf_format == "t5gemma":
        decoder = backbone_rules(config.decoder)
        head = [r for r in decoder if r.ours.startswith("head.")]
        rules = prefixed(backbone_rules(config.encoder, lm_head=False), "encoder.", "model.encoder.")
        rules += prefixed([r for r in decoder if r not in head], "decoder.", "model.decoder.")
        return rules + prefixed(head, "decoder.", "")
    return (prefixed(backbone_rules(config.encoder, lm_head=False), "encoder.", "encoder.")
            + prefixed(backbone_rules(config.decoder), "decoder.", "decoder."))


def base_prefix(config: BackboneConfig) -> str:
    """The attribute transformers' LM-head class keeps its base model under."""
    return LAYOUTS[config.model_type].base


def backbone_rules(config: BackboneConfig, lm_head: bool | None = None) -> list[Rule]:
    """Rules between our `Backbone` and transformers' base model (encoder) or *ForCausalLM
    (decoder) layout; only for the parts this config builds. `lm_head` as in `Backbone`: the
    *ForCausalLM layout; by default a decoder config's."""
    layout, family = LAYOUTS[config.model_type], config.family
    lm_head = config.is_decoder if lm_head is None else lm_head
    p = layout.base if lm_head else ""
    emb = layout.embeddings
    parts = ("word", "position") if family.positions == "absolute" else ("word",)
    rules = [Rule(f"embeddings.{n}.weight", (f"{p}{emb[n]}.weight",)) for n in parts]
    if config.type_vocab_size > 0:
        rules.append(Rule("embeddings.token_type.weight", (f"{p}{emb['token_type']}.weight",)))
    if family.embedding_norm:
        rules += norm_rule(config, "embeddings.norm", p + emb["norm"])
    if config.embedding_width != config.hidden_size:
        rules += linear_rule("embeddings.project", p + emb["project"])
    for i in range(config.num_hidden_layers):
        rules += layout.layer(i, p, config)
    if layout.final_norm:
        rules += norm_rule(config, "final_norm", p + layout.final_norm)
    if lm_head:
        rules += _head_rules(config, layout.head)
    elif family.pooler:
        rules += linear_rule("pooler", "pooler.dense", optional=True)
    return rules


def _head_rules(config: BackboneConfig, names: dict[str, str]) -> list[Rule]:
    family = config.family
    dense_bias, vocab_bias = config.lm_head_biases
    rules = []
    if family.head == "transform":
        rules += linear_rule("head.dense", names["head.dense"], bias=dense_bias)
        rules += linear_rule("head.norm", names["head.norm"], bias=config.norm_bias is not False)
    if vocab_bias:
        rules.append(Rule("head.bias", (names["head.bias"],)))
    if not config.tie_word_embeddings:
        rules.append(Rule("head.weight", (names["head.weight"],)))
    return rules


def prefixed(rules: list[Rule], ours: str, theirs: str) -> list[Rule]:
    return [Rule(ours + r.ours, tuple(theirs + t for t in r.theirs), r.transpose, r.sizes, r.optional) for r in rules]


def file_names(rules: list[Rule], keys: list[str]) -> list[str]:
    """Our keys -> the checkpoint's own names (BERT's query/key/value for our fused qkv), as
    transformers reports missing keys."""
    theirs = {r.ours: r.theirs for r in rules}
    return [t for k in keys for t in theirs.get(k, (k,))]


def split_optional(rules: list[Rule], missing: list[str]) -> tuple[list[str], list[str]]:
    """Missing keys -> (required ones, optional ones such as the pooler)."""
    optional = {r.ours for r in rules if r.optional}
    return [k for k in missing if k not in optional], [k for k in missing if k in optional]


# ---------------------------------------------------------------- applying the maps


def is_derived(key: str) -> bool:
    return key.endswith(_DERIVED_SUFFIXES)


def from_hf(hf: dict[str, Tensor], rules: list[Rule]) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """HF tensors -> ours. Returns (state, our keys with no source, HF keys nothing used)."""
    state, missing, used = {}, [], set()
    for rule in rules:
        if not all(t in hf for t in rule.theirs):
            missing.append(rule.ours)
            continue
        parts = [hf[t].t() if rule.transpose else hf[t] for t in rule.theirs]
        state[rule.ours] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        used.update(rule.theirs)
    unused = sorted(k for k in hf if k not in used and not is_derived(k))
    return state, missing, unused


def to_hf(state: dict[str, Tensor], rules: list[Rule]) -> dict[str, Tensor]:
    """Ours -> HF tensors, splitting fused projections and transposing Conv1D weights back."""
    hf = {}
    for rule in rules:
        if rule.ours not in state:
            continue
        tensor = state[rule.ours]
        parts = tensor.split(list(rule.sizes), dim=0) if rule.sizes else tensor.chunk(len(rule.theirs), dim=0)
        for name, part in zip(rule.theirs, parts):
            hf[name] = part.t() if rule.transpose else part
    return hf


def canonical_single_model_keys(
    hf: dict[str, Tensor], config: BackboneConfig, lm_head: bool | None = None
) -> dict[str, Tensor]:
    """Bring a single-model checkpoint (BertModel, BertForPreTraining, sentence-transformers,
    GPT2Model, ElectraForMaskedLM, ...) into the layout `backbone_rules` expects: base-model prefix
    present with an LM head (decoders) and absent without (encoders)."""
    lm_head = config.is_decoder if lm_head is None else lm_head
    bases = (base_prefix(config), "model.")
    heads = tuple({name.split(".")[0] + "." for name in LAYOUTS[config.model_type].head.values()})
    out = {}
    for key, value in normalize_keys(hf).items():
        for p in bases:
            if key.startswith(p):
                key = key[len(p):]
                break
        if lm_head and not key.startswith(heads):
            key = base_prefix(config) + key
        out[key] = value
    return out


def normalize_keys(hf: dict[str, Tensor]) -> dict[str, Tensor]:
    """Old spellings to current ones: LayerNorm gamma/beta, and the head bias that some
    checkpoints store only under its tied alias `...decoder.bias`."""
    out = {_rename_gamma_beta(k): v for k, v in hf.items()}
    for key in [k for k in out if k.endswith(("cls.predictions.decoder.bias", "lm_head.decoder.bias"))]:
        out.setdefault(key.replace("decoder.bias", "bias"), out[key])
        del out[key]
    return out


def _rename_gamma_beta(key: str) -> str:
    if key.endswith(".gamma"):
        return key[: -len(".gamma")] + ".weight"
    if key.endswith(".beta"):
        return key[: -len(".beta")] + ".bias"
    return key
