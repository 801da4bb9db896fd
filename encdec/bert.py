"""BERT and RoBERTa: one stack for both (RoBERTa differs in position ids and config values),
used as encoder or, with causal self-attention, cross-attention and an LM head, as decoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from encdec.config import BackboneConfig
from encdec.dropout import Dropout
from encdec.modules import Block, KVCache, activation, causal_mask, init_weights, padding_mask, run_layers
from encdec.packing import PackedMask, Packing


def roberta_position_ids(input_ids: Tensor, pad_id: int, past_length: int = 0) -> Tensor:
    """RoBERTa counts only real tokens, starting at pad + 1; pads keep position pad."""
    real = input_ids.ne(pad_id).long()
    return (torch.cumsum(real, dim=1) + past_length) * real + pad_id


class Embeddings(nn.Module):
    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        c = config.hidden_size
        self.roberta = config.model_type == "roberta"
        self.pad_id = config.pad_token_id
        self.word = nn.Embedding(config.vocab_size, c, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, c, padding_idx=self.pad_id if self.roberta else None)
        self.token_type = nn.Embedding(max(config.type_vocab_size, 1), c)
        self.norm = nn.LayerNorm(c, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None, past_length: int = 0,
        packing: Packing | None = None,
    ) -> Tensor:
        """(B, T, C); with `packing`, only the kept tokens, (N, C), at their padded-grid positions."""
        if self.roberta:
            positions = roberta_position_ids(input_ids, self.pad_id, past_length)
        else:
            positions = torch.arange(past_length, past_length + input_ids.shape[1], device=input_ids.device)[None]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if packing is not None:
            positions = positions.expand_as(input_ids)
            input_ids, positions, token_type_ids = (packing.pack(t) for t in (input_ids, positions, token_type_ids))
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        return self.dropout(self.norm(x))


class BertStack(nn.Module):
    """Embeddings and layers; bidirectional as an encoder, causal with cross-attention as a decoder."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False
        if not config.is_decoder:
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
    ) -> Tensor:
        """Hidden states (B, T, C), or (N, C) for the tokens kept by `packing` (then `memory_kv`
        and `memory_mask` are packed too). As a decoder, `memory_kv` holds each layer's cross K/V."""
        x = self.embeddings(input_ids, token_type_ids, pos, packing)
        mask, causal = self_attention_mask(self.config, attention_mask, x, pos, packing)
        x = run_layers(
            self.layers, x, mask, causal=causal, pos=pos,
            memory_kv=memory_kv, memory_mask=memory_mask, caches=caches,
            checkpointed=self.gradient_checkpointing,
        )
        return x

    def cross_kv(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        return [layer.cross_attn.project_kv(memory) for layer in self.layers]


def self_attention_mask(
    config: BackboneConfig, attention_mask: Tensor | None, x: Tensor, pos: int, packing: Packing | None = None
) -> tuple[Tensor | PackedMask | None, bool]:
    """The boolean self-attention mask, or (None, True) when SDPA's built-in causal mask suffices;
    for packed tokens a `PackedMask`."""
    if packing is not None:
        return PackedMask.self_attention(packing, attention_mask, causal=config.is_decoder), False
    if not config.is_decoder:
        return padding_mask(attention_mask), False
    t = x.shape[1]
    if attention_mask is None and (pos == 0 or t == 1):
        return None, pos == 0  # one new query sees every cached key: no mask to build
    return causal_mask(attention_mask, t, pos + t, x.device), False


class BertLMHead(nn.Module):
    """Dense + activation + LayerNorm, then the tied word-embedding projection plus a bias."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def transform(self, x: Tensor) -> Tensor:
        """The features that the tied projection turns into logits."""
        return self.norm(self.act(self.dense(x)))

    def forward(self, x: Tensor, word_embeddings: Tensor) -> Tensor:
        return nn.functional.linear(self.transform(x), word_embeddings, self.bias)


class BertDecoder(nn.Module):
    """BERT/RoBERTa stack with cross-attention and an LM head tied to the input embeddings."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        self.stack = BertStack(config)
        self.head = BertLMHead(config)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **kw) -> Tensor:
        return self.stack(input_ids, attention_mask, **kw)

    def cross_kv(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        return self.stack.cross_kv(memory)

    def logits(self, hidden: Tensor) -> Tensor:
        return self.head(hidden, self.output_embeddings())

    def projection(self, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """(features, weight, bias) with logits = features @ weight^T + bias, for fused losses."""
        return self.head.transform(hidden), self.output_embeddings(), self.head.bias

    def output_embeddings(self) -> Tensor:
        return self.stack.embeddings.word.weight

    def init_weights(self) -> None:
        init_weights(self, self.config.initializer_range)
        nn.init.zeros_(self.head.bias)


def build_bert_encoder(config: BackboneConfig) -> BertStack:
    stack = BertStack(config)
    init_weights(stack, config.initializer_range)
    return stack
