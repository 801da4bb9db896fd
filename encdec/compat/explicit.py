"""The explicit attention path: a backbone run layer by layer with the attention probabilities
computed (softmax(q k^T / sqrt(d)) then @ v, as transformers' "eager" attention), so a call can
return hidden states, attention maps and a `Cache` a caller feeds back step by step.

`model.forward` takes this path only for calls that ask for attentions, hidden states or a cache;
training and `generate` keep SDPA and the pre-allocated KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from encdec.nn.attention import Attention, attach_memory, repeat_kv, softcapped_attention
from encdec.nn.masks import causal_mask, padding_mask
from encdec.nn.rotary import Rope, layer_rope


@dataclass
class Cache:
    """`past_key_values`: each decoder layer's self-attention keys and values so far (B, H, T, D)
    and the cross-attention keys and values of the source, computed once."""

    self_kv: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    cross_kv: list[tuple[Tensor, Tensor]] | None = None

    def get_seq_length(self, layer: int = 0) -> int:
        return self.self_kv[layer][0].shape[2] if len(self.self_kv) > layer else 0

    def __len__(self) -> int:
        return len(self.self_kv)

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add this call's keys and values to layer `layer`; return all of them."""
        if len(self.self_kv) > layer:
            old_k, old_v = self.self_kv[layer]
            k, v = torch.cat([old_k, k], dim=2), torch.cat([old_v, v], dim=2)
            self.self_kv[layer] = (k, v)
        else:
            self.self_kv.append((k, v))
        return k, v

    def reorder_cache(self, beam_idx: Tensor) -> None:
        """Row i takes row beam_idx[i]'s keys and values (beam search by hand)."""
        self.self_kv = [(k.index_select(0, beam_idx), v.index_select(0, beam_idx)) for k, v in self.self_kv]
        if self.cross_kv is not None:
            self.cross_kv = [(k.index_select(0, beam_idx), v.index_select(0, beam_idx)) for k, v in self.cross_kv]


@dataclass
class Trace:
    """What one explicit run returns besides the last hidden state (tuples in transformers' order)."""

    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None


def eager_attention(attn: Attention, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(output (B, T, C), probabilities (B, H, T, S)), as transformers' eager attention: scores
    scaled (and soft-capped where the family does), a masked key gets the dtype's lowest value."""
    k, v = repeat_kv(k, v, q.shape[1])
    y, probs = softcapped_attention(q, k, v, mask, attn.dropout if attn.training else 0.0, False, attn.scale,
                                    attn.softcap)
    b, h, t, d = y.shape
    return attn.out(y.transpose(1, 2).reshape(b, t, h * d)), probs


def run_explicit(
    backbone,
    x: Tensor,
    attention_mask: Tensor | None,
    *,
    memory_kv: list[tuple[Tensor, Tensor]] | None = None,
    memory_mask: Tensor | None = None,
    cache: Cache | None = None,
    past_length: int = 0,
    hidden_states: bool = False,
    attentions: bool = False,
    rope: Rope | None = None,
) -> tuple[Tensor, Trace]:
    """Run `backbone`'s blocks on embeddings x (B, T, C); with `cache`, append this call's keys
    and values to it. `rope`: the cos/sin of these positions (Backbone.rope) for rotary families.
    Returns the last hidden state (after any final norm) and the `Trace`."""
    t = x.shape[1]
    config = backbone.config
    if config.causal:
        mask = causal_mask(attention_mask, t, past_length + t, x.device)
    else:
        mask = padding_mask(attention_mask)
    window = backbone.sliding_mask(attention_mask, x, past_length, local=False)
    all_hidden, self_probs, cross_probs = [], [], []
    for i, layer in enumerate(backbone.layers):
        all_hidden.append(x)
        layer_mask = window[0] if layer.sliding else mask

        def self_fn(h: Tensor, layer=layer, i=i, layer_mask=layer_mask) -> Tensor:
            q, k, v = layer.self_attn.self_qkv(h, layer_rope(rope, layer.kind))
            if cache is not None:
                k, v = cache.append(i, k, v)
            if layer.merged and memory_kv is not None:
                k, v, layer_mask = attach_memory(k, v, layer_mask, memory_kv[i], memory_mask, q.shape[2])
            out, probs = eager_attention(layer.self_attn, q, k, v, layer_mask)
            self_probs.append(probs)
            return out

        def cross_fn(h: Tensor, layer=layer, i=i) -> Tensor:
            out, probs = eager_attention(layer.cross_attn, layer.cross_attn.cross_query(h), *memory_kv[i], memory_mask)
            cross_probs.append(probs)
            return out

        x = layer.residual(x, "self_attn", self_fn)
        if memory_kv is not None and not layer.merged:
            x = layer.residual(x, "cross_attn", cross_fn)
        x = layer.residual(x, "mlp", layer.mlp)
    if backbone.final_norm is not None:
        x = backbone.final_norm(x)
    trace = Trace(
        hidden_states=tuple(all_hidden) + (x,) if hidden_states else None,
        attentions=tuple(self_probs) if attentions else None,
        cross_attentions=tuple(cross_probs) if attentions and memory_kv is not None and cross_probs else None,
    )
    return x, trace


def rope_of(backbone, x: Tensor, past_length: int = 0, position_ids: Tensor | None = None):
    """The RoPE cos/sin of embeddings x (B, T, C) at positions past_length.. (or position_ids); None
    for families with a position table."""
    grid = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
    return backbone.rope(grid, past_length, x.dtype, position_ids=position_ids)
