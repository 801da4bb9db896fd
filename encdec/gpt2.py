"""GPT-2 as a decoder: pre-norm blocks with cross-attention added, LM head tied to `wte`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from encdec.bert import self_attention_mask
from encdec.config import BackboneConfig
from encdec.dropout import Dropout
from encdec.modules import Block, KVCache, init_weights, run_layers, scaled_init
from encdec.packing import Packing


class GPT2Decoder(nn.Module):
    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        c = config.hidden_size
        self.wte = nn.Embedding(config.vocab_size, c)
        self.wpe = nn.Embedding(config.max_position_embeddings, c)
        self.dropout = Dropout(config.embd_dropout)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False
        self.final_norm = nn.LayerNorm(c, eps=config.layer_norm_eps)

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
        """Final-normed hidden states (B, T, C), or (N, C) for the tokens kept by `packing`;
        positions count from the cache position."""
        positions = torch.arange(pos, pos + input_ids.shape[1], device=input_ids.device)[None]
        if packing is not None:
            input_ids, positions = packing.pack(input_ids), packing.pack(positions.expand_as(input_ids))
        x = self.dropout(self.wte(input_ids) + self.wpe(positions))
        mask, causal = self_attention_mask(self.config, attention_mask, x, pos, packing)
        x = run_layers(
            self.layers, x, mask, causal=causal, pos=pos,
            memory_kv=memory_kv, memory_mask=memory_mask, caches=caches,
            checkpointed=self.gradient_checkpointing,
        )
        return self.final_norm(x)

    def cross_kv(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        return [layer.cross_attn.project_kv(memory) for layer in self.layers]

    def logits(self, hidden: Tensor) -> Tensor:
        return nn.functional.linear(hidden, self.wte.weight)

    def projection(self, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """(features, weight, bias) with logits = features @ weight^T + bias, for fused losses."""
        return hidden, self.wte.weight, None

    def output_embeddings(self) -> Tensor:
        return self.wte.weight

    def init_weights(self) -> None:
        init_weights(self, self.config.initializer_range)
        scaled_init(self, self.config.initializer_range, self.config.num_hidden_layers)
