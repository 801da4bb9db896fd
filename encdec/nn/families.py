"""The families encdec speaks: one `Family` row per Hugging Face model_type, with the flags the one
backbone reads, the family's config defaults, its config.json field names and transformers' class
names. Adding a family is adding a row here and a key layout in encdec.checkpoints.keymaps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    head_act: str | None = None  # the transform's activation; None: hidden_act (a config's head_activation wins)
    head_bias: bool = True  # a bias on the vocabulary projection (a config's head_bias wins)
    scaled_init: bool = False  # GPT-2 scales residual output projections by 1/sqrt(2 n_layer)
    # The decoder-only LMs of today (Llama, Qwen, Gemma) differ by these flags:
    norm: str = "layer"  # "layer" (LayerNorm), "rms" (RMSNorm: w * x), "rms_plus_one" (Gemma: (1 + w) * x)
    positions: str = "absolute"  # "absolute" (a learned or sinusoidal table) or "rotary" (RoPE on q and k)
    mlp: str = "plain"  # "plain" (fc_out(act(fc_in x))) or "gated" (down(act(gate x) * up x): SwiGLU, GeGLU)
    qkv_bias: bool | None = True  # biases on q/k/v; None: the config's attention_bias decides (Llama)
    out_bias: bool | None = True  # bias on the attention output projection; None: attention_bias
    qk_norm: bool = False  # RMSNorm of each head's queries and keys before RoPE (Qwen3)
    embed_scale: bool = False  # word embeddings times sqrt(hidden_size) (Gemma)
    sandwich_norm: bool = False  # a second norm on each sub-layer's output before the residual (Gemma 2)
    # Cross-attention kinds a decoder of this family can be given, the default first: BERT-era
    # decoders have transformers' own (fresh weights); decoder-only LMs get one added (see
    # encdec.model: "gated" keeps the pretrained LM exact at step 0).
    cross_attention: tuple[str, ...] = ("random",)
    sliding_layers: str = "none"  # which layers slide when config.json names none: "alternate" | "qwen" | "every_nth"
    first_attn_norm: bool = True  # False: layer 0's attention reads the (already normed) embeddings as they are
    # config.json keys of an older per-layer-kind RoPE theta (ModernBERT's global_rope_theta), by layer kind
    legacy_rope_thetas: dict[str, str] = field(default_factory=dict)
    causal_lm: bool = False  # a decoder-only LM: causal even as a base model, unless made bidirectional


_ROBERTA_DEFAULTS = dict(
    vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
    pad_token_id=1, bos_token_id=0, eos_token_id=2,
)
_ROBERTA = dict(roberta_positions=True, pooler=True, head_act="gelu")

# Decoder-only LMs of today: pre-norm RMSNorm blocks, rotary positions, gated MLPs, no position
# table, no token types, no dropout; transformers' Llama names for the fields BERT lacks.
_LM = dict(
    encoder=True, pre_norm=True, final_norm=True, embedding_norm=False, norm="rms", positions="rotary", mlp="gated",
    qkv_bias=None, out_bias=None, head="plain", head_bias=False, cross_attention=("gated", "random", "copy", "merged"),
    causal_lm=True,
)
_LM_DEFAULTS = dict(
    hidden_act="silu", layer_norm_eps=1e-6, type_vocab_size=0, hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0, pad_token_id=None, tie_word_embeddings=False,
)
_LM_NAMES = {
    "layer_norm_eps": "rms_norm_eps", "attention_probs_dropout_prob": "attention_dropout", "type_vocab_size": None,
    "hidden_dropout_prob": None, "num_key_value_heads": "num_key_value_heads", "head_dim": "head_dim",
    "rope_parameters": "rope_parameters", "attention_bias": "attention_bias", "mlp_bias": "mlp_bias",
    "sliding_window": "sliding_window", "layer_types": "layer_types", "cross_attention_init": "cross_attention_init",
    "use_bidirectional_attention": "use_bidirectional_attention",
}

_GEMMA2_DEFAULTS = dict(
    _LM_DEFAULTS, vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
    num_attention_heads=8, num_key_value_heads=4, head_dim=256, hidden_act="gelu_pytorch_tanh",
    max_position_embeddings=8192, pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True,
    query_pre_attn_scalar=256, sliding_window=4096, final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
)
_GEMMA2_NAMES = {
    **_LM_NAMES, "hidden_act": "hidden_activation", "mlp_bias": None, "query_pre_attn_scalar": "query_pre_attn_scalar",
    "attn_logit_softcapping": "attn_logit_softcapping", "final_logit_softcapping": "final_logit_softcapping",
}

# ModernBERT: pre-norm LayerNorm blocks (bias as norm_bias says), the first layer's attention reading the
# normed embeddings, GeGLU, rotary positions with one theta for global layers and one for local ones,
# every third layer global and the others seeing `local_attention // 2` keys either side.
_MODERNBERT_DEFAULTS = dict(
    vocab_size=50368, hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12,
    max_position_embeddings=8192, layer_norm_eps=1e-5, norm_bias=False, pad_token_id=50283, bos_token_id=50281,
    eos_token_id=50282, attention_bias=False, mlp_bias=False, type_vocab_size=0, hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0, embedding_dropout_prob=0.0, local_attention=128,
    rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 160000.0},
                     "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
)
_MODERNBERT_NAMES = {
    "hidden_act": "hidden_activation", "layer_norm_eps": "norm_eps", "norm_bias": "norm_bias",
    "attention_probs_dropout_prob": "attention_dropout", "embedding_dropout_prob": "embedding_dropout",
    "hidden_dropout_prob": None, "type_vocab_size": None, "attention_bias": "attention_bias", "mlp_bias": "mlp_bias",
    "local_attention": "local_attention", "layer_types": "layer_types", "rope_parameters": "rope_parameters",
}

# ModernBERT's decoder twin (Ettin decoders): ModernBERT's layers made causal, its local layers seeing the
# `local_attention // 2` newest keys; separate q/k/v projections; an LM head of its own (dense, activation,
# LayerNorm, then a vocabulary projection tied to the embeddings, with a bias), whose dense bias,
# activation and vocabulary bias the config names (classifier_bias, classifier_activation, decoder_bias).
_MODERNBERT_DECODER_NAMES = {
    **_MODERNBERT_NAMES, "head_dense_bias": "classifier_bias", "head_activation": "classifier_activation",
    "head_bias": "decoder_bias", "cross_attention_init": "cross_attention_init",
    "use_bidirectional_attention": "use_bidirectional_attention",
}

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
    "llama": Family(
        "LlamaConfig", "LlamaModel", "LlamaForCausalLM",
        defaults=dict(_LM_DEFAULTS, vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, max_position_embeddings=2048, bos_token_id=1, eos_token_id=2),
        hf_names=_LM_NAMES, **_LM,
    ),
    "qwen2": Family(
        "Qwen2Config", "Qwen2Model", "Qwen2ForCausalLM",
        defaults=dict(_LM_DEFAULTS, vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                      num_attention_heads=32, max_position_embeddings=32768),
        hf_names={**_LM_NAMES, "attention_bias": None, "mlp_bias": None},
        **dict(_LM, qkv_bias=True, out_bias=False, sliding_layers="qwen"),
    ),
    "qwen3": Family(
        "Qwen3Config", "Qwen3Model", "Qwen3ForCausalLM",
        defaults=dict(_LM_DEFAULTS, vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                      num_attention_heads=32, max_position_embeddings=32768, head_dim=128),
        hf_names={**_LM_NAMES, "mlp_bias": None}, **dict(_LM, qk_norm=True, sliding_layers="qwen"),
    ),
    "gemma2": Family(
        "Gemma2Config", "Gemma2Model", "Gemma2ForCausalLM",
        defaults=_GEMMA2_DEFAULTS,
        hf_names=_GEMMA2_NAMES,
        **dict(_LM, norm="rms_plus_one", embed_scale=True, sandwich_norm=True, sliding_layers="alternate"),
    ),
    "modernbert": Family(
        "ModernBertConfig", "ModernBertModel", None, defaults=_MODERNBERT_DEFAULTS, hf_names=_MODERNBERT_NAMES,
        decoder=False, pre_norm=True, final_norm=True, positions="rotary", mlp="gated", qkv_bias=None,
        out_bias=None, sliding_layers="every_nth", first_attn_norm=False,
        legacy_rope_thetas={"full_attention": "global_rope_theta", "sliding_attention": "local_rope_theta"},
    ),
    "modernbert-decoder": Family(
        "ModernBertDecoderConfig", "ModernBertDecoderModel", "ModernBertDecoderForCausalLM",
        defaults=dict(_MODERNBERT_DEFAULTS, head_dense_bias=False, head_activation="gelu", head_bias=True),
        hf_names=_MODERNBERT_DECODER_NAMES,
        **dict(_LM, embedding_norm=True, norm="layer", head="transform", head_bias=True,
               sliding_layers="every_nth", first_attn_norm=False,
               legacy_rope_thetas={"full_attention": "global_rope_theta", "sliding_attention": "local_rope_theta"}),
    ),
    # T5Gemma's encoder and decoder stacks (Gemma 2 layers; the decoder with its own cross-attention),
    # read from a T5GemmaForConditionalGeneration folder: no single-model classes of their own.
    "t5_gemma_module": Family(
        "T5GemmaModuleConfig", None, None,
        defaults=_GEMMA2_DEFAULTS,
        hf_names={**_GEMMA2_NAMES, "cross_attention_init": None,
                  "use_bidirectional_attention": None, "hidden_dropout_prob": "dropout_rate",
                  "cross_attention_hidden_size": "cross_attention_hidden_size"},
        **dict(_LM, norm="rms_plus_one", embed_scale=True, sandwich_norm=True, sliding_layers="alternate",
               causal_lm=False, cross_attention=("random",)),
    ),
}
MODEL_TYPES = tuple(FAMILIES)
# BackboneConfig fields only some families have: absent from config.json unless the family's
# hf_names names them.
FAMILY_ONLY = (
    "embedding_size", "embedding_dropout_prob", "sinusoidal_positions", "num_key_value_heads", "head_dim",
    "rope_parameters", "attention_bias", "mlp_bias", "sliding_window", "layer_types", "query_pre_attn_scalar",
    "attn_logit_softcapping", "final_logit_softcapping", "cross_attention_init", "use_bidirectional_attention",
    "cross_attention_hidden_size", "norm_bias", "local_attention", "head_dense_bias", "head_activation", "head_bias",
)


# Families people ask for that encdec does not speak yet, and why (the error names it).
NOT_YET = {
    "deberta-v2": "DeBERTa-v2/v3's disentangled attention (content-to-position and position-to-content "
                  "scores over log-bucketed relative positions) has no encdec implementation yet",
}


def family_of(model_type: Any) -> Family:
    """The family row, or an error that lists the supported model types."""
    if model_type in NOT_YET:
        encoders = ", ".join(name for name, family in FAMILIES.items() if family.encoder and family.hf_encoder)
        raise ValueError(f"model_type {model_type!r} is not supported: {NOT_YET[model_type]}. "
                         f"Use one of these encoders instead: {encoders}.")
    if model_type not in FAMILIES:
        raise ValueError(
            f"Unknown model_type {model_type!r}: encdec supports {', '.join(MODEL_TYPES)} "
            "(or 'encoder-decoder' at the top level). Use a checkpoint of one of these families or convert it first."
        )
    return FAMILIES[model_type]


