"""One backbone for every family: embeddings, a stack of `Block`s, an optional final norm and LM head.

The family's flags (`encdec.nn.config.FAMILIES`) choose the parts, so a family is data, not a class:
BERT, RoBERTa, XLM-R, CamemBERT, bert-generation, ELECTRA and DistilBERT are post-norm stacks that
differ in embeddings (position rule, token types, ELECTRA's projection) and head; GPT-2 is pre-norm
with a final LayerNorm. Bidirectional as an encoder; as a decoder causal, with cross-attention and
an LM head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from encdec.nn.attention import KVCache
from encdec.nn.config import BackboneConfig
from encdec.nn.cpu_kernels import Dropout
from encdec.nn.families import FAMILIES
from encdec.nn.layers import Block, activation, init_weights, run_layers, scaled_init
from encdec.nn.local_attention import LocalWindow
from encdec.nn.masks import causal_mask, padding_mask, sliding_mask
from encdec.nn.norms import make_norm
from encdec.nn.packing import PackedMask, Packing
from encdec.nn.rotary import Rope, Rotary


def roberta_position_ids(input_ids: Tensor, pad_id: int, past_length: int = 0) -> Tensor:
    """RoBERTa counts only real tokens, starting at pad + 1; pads keep position pad."""
    real = input_ids.ne(pad_id).long()
    return (torch.cumsum(real, dim=1) + past_length) * real + pad_id


def sinusoidal_table(positions: int, dim: int) -> Tensor:
    """DistilBERT's fixed position table: sin on even columns, cos on odd, wavelengths up to 10^4."""
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    column = torch.arange(dim)
    angle = pos / torch.pow(10000.0, (2 * (column // 2) / dim).double())
    table = torch.empty(positions, dim, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = torch.sin(angle[:, 0::2]), torch.cos(angle[:, 1::2])
    return table.float()


class Embeddings(nn.Module):
    """Word + position (+ token type) embeddings, LayerNorm and dropout, then ELECTRA's projection
    to the hidden width when its embedding width differs."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        family, width = config.family, config.embedding_width
        self.roberta_positions = family.roberta_positions
        self.pad_id = config.pad_token_id
        self.word = nn.Embedding(config.vocab_size, width, padding_idx=self.pad_id if family.pad_embedding else None)
        self.position = None  # rotary families rotate queries and keys instead (encdec.nn.rotary.Rotary)
        if family.positions == "absolute":
            self.position = nn.Embedding(
                config.max_position_embeddings, width, padding_idx=self.pad_id if self.roberta_positions else None
            )
        self.scale = width ** 0.5 if family.embed_scale else None  # Gemma scales the word embeddings
        self.token_type = nn.Embedding(config.type_vocab_size, width) if config.type_vocab_size > 0 else None
        self.norm = make_norm(config, width) if family.embedding_norm else None
        self.dropout = Dropout(config.embd_dropout)
        self.project = nn.Linear(width, config.hidden_size) if width != config.hidden_size else None
        self.model_type = config.model_type

    def position_ids(self, input_ids: Tensor, past_length: int = 0) -> Tensor:
        """(B, T) rows of the position table, by the family's rule."""
        if self.roberta_positions:
            return roberta_position_ids(input_ids, self.pad_id, past_length)
        t = input_ids.shape[1]
        return torch.arange(past_length, past_length + t, device=input_ids.device)[None].expand_as(input_ids)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        past_length: int = 0,
        packing: Packing | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
    ) -> Tensor:
        """(B, T, C); with `packing`, only the kept tokens, (N, C), at their padded-grid positions.
        `inputs_embeds` (B, T, width) replace the word embeddings of input_ids (then RoBERTa-style
        positions simply count up from pad + 1, as transformers counts them)."""
        if inputs_embeds is not None:
            if input_ids is not None:
                raise ValueError("Pass input_ids or inputs_embeds, not both.")
            input_ids = torch.full(inputs_embeds.shape[:2], (self.pad_id or 0) + 1, device=inputs_embeds.device)
        if token_type_ids is not None and self.token_type is None:
            raise ValueError(
                f"token_type_ids were passed, but {self.model_type} has no token-type embeddings; drop them."
            )
        if position_ids is None:
            positions = self.position_ids(input_ids, past_length)
        else:
            positions = position_ids.expand_as(input_ids)
        if packing is not None:
            input_ids, positions = packing.pack(input_ids), packing.pack(positions)
            token_type_ids = None if token_type_ids is None else packing.pack(token_type_ids)
        x = self.word(input_ids) if inputs_embeds is None else inputs_embeds
        if self.scale is not None and inputs_embeds is None:
            x = x * torch.tensor(self.scale, dtype=x.dtype)
        if self.position is not None:
            x = x + self.position(positions)
        if self.token_type is not None:
            x = x + (self.token_type.weight[0] if token_type_ids is None else self.token_type(token_type_ids))
        if self.norm is not None:
            x = self.norm(x)
        x = self.dropout(x)
        return x if self.project is None else self.project(x)


class LMHead(nn.Module):
    """The optional transform (dense, activation, LayerNorm; ELECTRA's generator narrows to the
    embedding width), then the vocabulary projection: the word embeddings unless untied, plus a bias."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        family = config.family
        width = config.hidden_size if family.head_hidden else config.embedding_width
        self.dense = self.norm = None
        dense_bias, vocab_bias = config.lm_head_biases
        if family.head == "transform":
            self.dense = nn.Linear(config.hidden_size, width, bias=dense_bias)
            self.act = activation(config.head_activation or family.head_act or config.hidden_act)
            self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps, bias=config.norm_bias is not False)
        else:
            width = config.hidden_size
        self.bias = nn.Parameter(torch.zeros(config.vocab_size)) if vocab_bias else None
        self.weight = None if config.tie_word_embeddings else nn.Parameter(torch.empty(config.vocab_size, width))
        # A module that replaces the vocabulary projection for serving (int8: encdec.serving.int8); None: the
        # floating-point projection above.
        self.projection_override: nn.Module | None = None

    def transform(self, x: Tensor) -> Tensor:
        """The features the projection turns into logits."""
        return x if self.dense is None else self.norm(self.act(self.dense(x)))


class Backbone(nn.Module):
    """Embeddings and blocks of one family; as a decoder also cross-attention and the LM head.

    `config.is_decoder` makes self-attention causal; `lm_head` (default: `config.is_decoder`) adds
    the LM head, else the family's pooler. They differ where transformers' do: a base model
    (BertModel) of a decoder config is causal without a head, as is the encoder of a folder whose
    encoder config reads is_decoder=True (`from_encoder_decoder_configs(c, c)` on one object)."""

    def __init__(self, config: BackboneConfig, lm_head: bool | None = None) -> None:
        super().__init__()
        lm_head = config.is_decoder if lm_head is None else lm_head
        check_role(config, lm_head)
        family = config.family
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Block(config, kind, attn_norm=i > 0 or family.first_attn_norm)
                                    for i, kind in enumerate(config.layer_kinds))
        self.final_norm = make_norm(config) if family.final_norm else None
        self.rotary = Rotary(config) if family.positions == "rotary" else None
        self.gradient_checkpointing = False
        if lm_head:
            self.head = LMHead(config)
        elif family.pooler:
            # Loaded and saved for checkpoint compatibility, never run (an unused DDP parameter otherwise).
            self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
            self.pooler.requires_grad_(False)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        *,
        memory_kv: list[tuple[Tensor, Tensor]] | None = None,
        memory_mask: Tensor | None = None,
        caches: list[KVCache] | None = None,
        pos: int = 0,
        packing: Packing | None = None,
        position_ids: Tensor | None = None,
        self_mask: Tensor | None = None,
    ) -> Tensor:
        """Hidden states (B, T, C), or (N, C) for the tokens kept by `packing` (then `memory_kv`
        and `memory_mask` are packed too). As a decoder, `memory_kv` holds each layer's cross K/V.
        `position_ids` (B, T) index the position table instead of the family's rule; `self_mask`
        (B, 1, T, S), True = attend, replaces the self-attention mask built from `attention_mask`."""
        x = self.embeddings(input_ids, token_type_ids, pos, packing, position_ids)
        if self_mask is not None:
            if packing is not None:
                raise ValueError("self_mask applies to padded batches; packed tokens build their own mask.")
            mask, causal = self_mask.bool(), False
        else:
            mask, causal = self_attention_mask(self.config, attention_mask, x, pos, packing)
        x = run_layers(
            self.layers, x, mask, causal=causal, pos=pos,
            memory_kv=memory_kv, memory_mask=memory_mask, caches=caches,
            checkpointed=self.gradient_checkpointing,
            rope=self.rope(input_ids, pos, x.dtype, packing, position_ids),
            sliding=self.sliding_mask(attention_mask, x, pos, packing),
        )
        return x if self.final_norm is None else self.final_norm(x)

    def rope(self, input_ids: Tensor, pos: int, dtype: torch.dtype, packing: Packing | None = None,
             position_ids: Tensor | None = None) -> Rope | None:
        """RoPE cos/sin for these tokens, shaped to broadcast over heads: (B, 1, T, D), packed (N, 1, D);
        a dict by layer kind where kinds rotate differently (ModernBERT); None for families with a
        position table."""
        if self.rotary is None:
            return None
        positions = self.embeddings.position_ids(input_ids, pos) if position_ids is None \
            else position_ids.expand_as(input_ids)
        if packing is not None:
            positions = packing.pack(positions)
        rope = {}
        for kind in self.rotary.kinds:
            cos, sin = self.rotary(positions, dtype, kind)
            rope[kind] = cos[:, None], sin[:, None]  # the head axis: (B, T, D) -> (B, 1, T, D); (N, D) -> (N, 1, D)
        return rope.pop(None) if None in rope else rope

    def sliding_mask(self, attention_mask: Tensor | None, x: Tensor, pos: int, packing: Packing | None = None,
                     local: bool = True) -> tuple[Tensor | LocalWindow, bool] | None:
        """(mask, causal) of the sliding-window layers; None when there are none. A whole sequence
        (no cached keys) gets a `LocalWindow`, memory linear in its length, unless `local` is False
        (the explicit path, which returns the attention probabilities); steps after cached keys a mask."""
        if not any(layer.sliding for layer in self.layers):
            return None
        config = self.config
        if pos == 0 and local:
            seq_len = x.shape[1] if packing is None else packing.seq_len
            return LocalWindow.build(config.window, config.causal, attention_mask, seq_len, packing), False
        if packing is not None:
            raise ValueError("Packed batches hold whole sequences; cached steps run padded.")
        t = x.shape[1]
        return sliding_mask(attention_mask, t, pos + t, config.window, config.causal, x.device), False

    @property
    def has_lm_head(self) -> bool:
        return "head" in self._modules

    def cross_kv(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Each layer's cross-attention keys and values of the encoder output, computed once (merged
        layers: projected by their self-attention's key/value weights, without positions)."""
        return [(layer.self_attn if layer.merged else layer.cross_attn).project_kv(memory) for layer in self.layers]

    def logits(self, hidden: Tensor) -> Tensor:
        features, weight, bias = self.projection(hidden)
        override = self.head.projection_override
        logits = override(features) if override is not None else nn.functional.linear(features, weight, bias)
        cap = self.config.final_logit_softcapping
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def projection(self, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """(features, weight, bias) with logits = features @ weight^T + bias, for fused losses."""
        return self.head.transform(hidden), self.output_embeddings(), self.head.bias

    def output_embeddings(self) -> Tensor:
        head_weight = self.head.weight if self.has_lm_head else None
        return self.embeddings.word.weight if head_weight is None else head_weight

    def resize_token_embeddings(self, new_num_tokens: int) -> None:
        """Grow or shrink the vocabulary: old rows kept, new rows drawn like fresh weights (head bias 0)."""
        old, std = self.embeddings.word, self.config.initializer_range
        keep = min(new_num_tokens, old.num_embeddings)
        pad = old.padding_idx if old.padding_idx is not None and old.padding_idx < new_num_tokens else None
        word = nn.Embedding(new_num_tokens, old.embedding_dim, padding_idx=pad).to(old.weight.device, old.weight.dtype)
        with torch.no_grad():
            nn.init.normal_(word.weight, 0.0, std)
            word.weight[:keep] = old.weight[:keep]
        self.embeddings.word = word
        head = getattr(self, "head", None)
        for name in ("bias", "weight"):
            param = getattr(head, name, None) if head is not None else None
            if param is not None:
                new = torch.zeros((new_num_tokens, *param.shape[1:]), dtype=param.dtype, device=param.device)
                if name == "weight":
                    nn.init.normal_(new, 0.0, std)
                new[:keep] = param.detach()[:keep]
                setattr(head, name, nn.Parameter(new))
        self.config.vocab_size = new_num_tokens

    def copy_self_to_cross_attention(self) -> None:
        """Cross-attention starts as a copy of the same layer's self-attention, its norms included
        (T5Gemma's initialisation): queries from queries, keys and values from keys and values. A layer
        without an attention norm (ModernBERT's first) keeps its fresh cross-attention norm."""
        with torch.no_grad():
            for layer in self.layers:
                own, cross = layer.self_attn, layer.cross_attn
                q_size = own.heads * own.head_dim
                cross.q.weight.copy_(own.qkv.weight[:q_size])
                cross.kv.weight.copy_(own.qkv.weight[q_size:])
                if own.qkv.bias is not None:
                    cross.q.bias.copy_(own.qkv.bias[:q_size])
                    cross.kv.bias.copy_(own.qkv.bias[q_size:])
                pairs = [(cross.out, own.out), (cross.q_norm, own.q_norm), (cross.k_norm, own.k_norm),
                         (layer.cross_attn_norm, layer.self_attn_norm),
                         (layer.cross_attn_post_norm, layer.self_attn_post_norm)]
                for target, source in pairs:
                    if target is not None and not isinstance(source, nn.Identity):
                        target.load_state_dict(source.state_dict())

    def init_weights(self) -> None:
        """BERT's normal(0, initializer_range) init; GPT-2's scaled residual projections; zero head
        bias; DistilBERT's sinusoidal positions when asked."""
        config = self.config
        init_weights(self, config.initializer_range)
        if config.family.scaled_init:
            scaled_init(self, config.initializer_range, config.num_hidden_layers)
        if self.has_lm_head:
            if self.head.bias is not None:
                nn.init.zeros_(self.head.bias)
            if self.head.weight is not None:
                nn.init.normal_(self.head.weight, 0.0, config.initializer_range)
        if config.sinusoidal_positions:
            with torch.no_grad():
                self.embeddings.position.weight.copy_(sinusoidal_table(*self.embeddings.position.weight.shape))


def check_role(config: BackboneConfig, lm_head: bool | None = None) -> None:
    """A family used where transformers cannot use it (GPT-2 encoder, DistilBERT decoder), or given a
    cross-attention kind it cannot take, fails here."""
    kind, kinds = config.cross_attention_init, config.family.cross_attention
    if config.add_cross_attention and kind is not None and kind not in kinds:
        raise ValueError(f"cross_attention_init={kind!r} is not available for a {config.model_type} decoder; "
                         f"choose one of {', '.join(kinds)}.")
    role = "decoder" if (config.is_decoder if lm_head is None else lm_head) else "encoder"
    if not getattr(config.family, role):
        able = [name for name, family in FAMILIES.items() if getattr(family, role)]
        raise ValueError(
            f"{config.model_type} cannot be the {role} (transformers has no such model either); "
            f"{role} families: {', '.join(able)}."
        )


def self_attention_mask(
    config: BackboneConfig, attention_mask: Tensor | None, x: Tensor, pos: int, packing: Packing | None = None
) -> tuple[Tensor | PackedMask | None, bool]:
    """The boolean self-attention mask, or (None, True) when SDPA's built-in causal mask suffices;
    for packed tokens a `PackedMask`."""
    if packing is not None:
        return PackedMask.self_attention(packing, attention_mask, causal=config.causal), False
    if not config.causal:
        return padding_mask(attention_mask), False
    t = x.shape[1]
    if attention_mask is None and (pos == 0 or t == 1):
        return None, pos == 0  # one new query sees every cached key: no mask to build
    return causal_mask(attention_mask, t, pos + t, x.device), False
