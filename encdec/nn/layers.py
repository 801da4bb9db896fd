"""Building blocks shared by every backbone: attention, the KV cache, the MLP and the layer block.

One `Block` covers BERT/RoBERTa (post-norm) and GPT-2 (pre-norm), encoder or decoder, with or
without cross-attention; the differences are flags, not subclasses.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from encdec.nn.config import BackboneConfig
from encdec.nn.cpu_kernels import Dropout, attention
from encdec.nn.packing import PackedMask, packed_attention

_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def activation(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"Unknown hidden_act {name!r}; supported: {', '.join(_ACTIVATIONS)}.")
    return _ACTIVATIONS[name]


class KVCache:
    """Pre-allocated self-attention keys and values for one layer, written in place at `pos`."""

    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int, *, dtype, device) -> None:
        shape = (batch, heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    def update(self, pos: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k/v (B, H, T, D) at positions pos..pos+T and return the cache up to there."""
        end = pos + k.shape[2]
        self.k[:, :, pos:end] = k
        self.v[:, :, pos:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]

    def select(self, index: Tensor) -> None:
        """Shrink the batch to rows `index` (finished rows dropped)."""
        self.k = self.k.index_select(0, index)
        self.v = self.v.index_select(0, index)


class Attention(nn.Module):
    """Multi-head attention through SDPA: fused QKV for self-attention, fused KV for cross."""

    def __init__(self, config: BackboneConfig, cross: bool) -> None:
        super().__init__()
        c = config.hidden_size
        self.heads = config.num_attention_heads
        self.cross = cross
        if cross:
            self.q = nn.Linear(c, c)
            self.kv = nn.Linear(c, 2 * c)
        else:
            self.qkv = nn.Linear(c, 3 * c)
        self.out = nn.Linear(c, c)
        self.dropout = config.attention_probs_dropout_prob

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, H, T, D); packed (N, C) -> (N, H, D)."""
        if x.dim() == 2:
            return x.view(x.shape[0], self.heads, -1)
        b, t, c = x.shape
        return x.view(b, t, self.heads, c // self.heads).transpose(1, 2)

    def self_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention queries, keys and values of x (B, T, C), each (B, H, T, D)."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.split_heads(q), self.split_heads(k), self.split_heads(v)

    def cross_query(self, x: Tensor) -> Tensor:
        """Cross-attention queries of x (B, T, C) or packed (N, C), split into heads."""
        return self.split_heads(self.q(x))

    def project_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of the encoder output: computed once per source."""
        k, v = self.kv(memory).chunk(2, dim=-1)
        return self.split_heads(k), self.split_heads(v)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None,
        *,
        memory_kv: tuple[Tensor, Tensor] | None = None,
        cache: KVCache | None = None,
        pos: int = 0,
        causal: bool = False,
    ) -> Tensor:
        """x (B, T, C); mask broadcastable to (B, H, T, S), True = attend. Packed tokens: x (N, C)
        with a `PackedMask`."""
        dropout = self.dropout if self.training else 0.0
        if isinstance(mask, PackedMask):
            return self._packed(x, mask, memory_kv, dropout)
        if self.cross:
            q, (k, v) = self.cross_query(x), memory_kv
        else:
            q, k, v = self.self_qkv(x)
            if cache is not None:
                k, v = cache.update(pos, k, v)
        y = _attend(q, k, v, mask, dropout, causal and mask is None)
        b, h, t, d = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, h * d))

    def _packed(self, x: Tensor, mask: PackedMask, memory_kv: tuple[Tensor, Tensor] | None, dropout: float) -> Tensor:
        """Attention over packed tokens x (N, C); cross K/V come packed too, (N_src, H, D)."""
        if self.cross:
            q, (k, v) = self.cross_query(x), memory_kv
        else:
            q, k, v = self.qkv(x).view(x.shape[0], 3, self.heads, -1).unbind(1)  # each (N, H, D)
        return self.out(packed_attention(q, k, v, mask, dropout).flatten(1))


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float, is_causal: bool) -> Tensor:
    """SDPA; when several query rows share one source (beams), fold them into the query length
    so keys and values are never copied per beam."""
    group = q.shape[0] // k.shape[0]
    if group == 1:
        return attention(q, k, v, mask, dropout, is_causal)
    b, h, t, d = q.shape
    q = q.view(k.shape[0], group, h, t, d).transpose(1, 2).reshape(k.shape[0], h, group * t, d)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    return y.view(k.shape[0], h, group, t, d).transpose(1, 2).reshape(b, h, t, d)


class MLP(nn.Module):
    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(config.hidden_size, config.ffn_size)
        self.fc_out = nn.Linear(config.ffn_size, config.hidden_size)
        self.act = activation(config.hidden_act)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


class Block(nn.Module):
    """Self-attention, optional cross-attention, MLP; each with a residual and a LayerNorm placed
    before (pre-norm, GPT-2) or after (post-norm, BERT) the sub-layer."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        c, eps = config.hidden_size, config.layer_norm_eps
        self.pre_norm = config.pre_norm
        self.self_attn = Attention(config, cross=False)
        self.self_attn_norm = nn.LayerNorm(c, eps=eps)
        if config.add_cross_attention:
            self.cross_attn = Attention(config, cross=True)
            self.cross_attn_norm = nn.LayerNorm(c, eps=eps)
        self.mlp = MLP(config)
        self.mlp_norm = nn.LayerNorm(c, eps=eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def residual(self, x: Tensor, norm: nn.LayerNorm, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """One sub-layer `fn` with its residual, dropout and norm in this family's order; callers
        that run attention their own way (encdec.compat.explicit) go through here too."""
        if self.pre_norm:
            return x + self.dropout(fn(norm(x)))
        return norm(x + self.dropout(fn(x)))

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None,
        *,
        memory_kv: tuple[Tensor, Tensor] | None = None,
        memory_mask: Tensor | None = None,
        cache: KVCache | None = None,
        pos: int = 0,
        causal: bool = False,
    ) -> Tensor:
        x = self.residual(
            x, self.self_attn_norm, lambda h: self.self_attn(h, mask, cache=cache, pos=pos, causal=causal)
        )
        if memory_kv is not None:
            x = self.residual(
                x, self.cross_attn_norm, lambda h: self.cross_attn(h, memory_mask, memory_kv=memory_kv)
            )
        return self.residual(x, self.mlp_norm, self.mlp)


def run_layers(
    layers: nn.ModuleList,
    x: Tensor,
    mask: Tensor | None,
    *,
    causal: bool,
    pos: int,
    memory_kv: list[tuple[Tensor, Tensor]] | None,
    memory_mask: Tensor | None,
    caches: list[KVCache] | None,
    checkpointed: bool = False,
) -> Tensor:
    """Run the blocks in order, handing each its cross K/V and cache. `checkpointed` (training with
    activation checkpointing) keeps only each block's input and recomputes the rest in backward."""
    for i, layer in enumerate(layers):
        kwargs = dict(
            causal=causal, pos=pos,
            memory_kv=memory_kv[i] if memory_kv is not None else None,
            memory_mask=memory_mask,
            cache=caches[i] if caches is not None else None,
        )
        if checkpointed and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(layer, x, mask, use_reentrant=False, **kwargs)
        else:
            x = layer(x, mask, **kwargs)
    return x


def padding_mask(attention_mask: Tensor | None) -> Tensor | None:
    """(B, S) 1/0 mask -> boolean (B, 1, 1, S), True = attend. Boolean, as transformers passes to
    SDPA: a query with no visible key then gets a zero output rather than NaN."""
    if attention_mask is None:
        return None
    return attention_mask[:, None, None, :].bool()


def causal_mask(attention_mask: Tensor | None, q_len: int, k_len: int, device: torch.device) -> Tensor:
    """Boolean (B|1, 1, T, S): key j is visible to query i when j <= i + (S - T) and unpadded."""
    rows = torch.arange(q_len, device=device)[:, None] + (k_len - q_len)
    allowed = (torch.arange(k_len, device=device)[None, :] <= rows)[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, :k_len].bool()
    return allowed


def init_weights(module: nn.Module, std: float) -> None:
    """BERT/GPT-2 initialisation: normal(0, std) weights, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
            if m.padding_idx is not None:
                m.weight.data[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def scaled_init(module: nn.Module, std: float, n_layer: int) -> None:
    """GPT-2 scales residual output projections by 1/sqrt(2 * n_layer)."""
    for name, p in module.named_parameters():
        if name.endswith(("self_attn.out.weight", "cross_attn.out.weight", "mlp.fc_out.weight")):
            nn.init.normal_(p, 0.0, std / math.sqrt(2 * n_layer))
