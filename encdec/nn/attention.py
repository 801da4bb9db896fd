"""Attention of every family through SDPA, and the pre-allocated KV cache: fused QKV, grouped-query
attention, q/k norms, RoPE, score scale and soft-capping from the config; cross-attention with its
keys and values computed once per source; merged attention over encoder outputs and own tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encdec.nn.config import BackboneConfig
from encdec.nn.cpu_kernels import attention
from encdec.nn.local_attention import LocalWindow
from encdec.nn.masks import causal_mask, merged_mask
from encdec.nn.norms import make_norm
from encdec.nn.packing import PackedMask, packed_attention
from encdec.nn.rotary import apply_rope


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


def _biases(config: BackboneConfig) -> tuple[bool, bool]:
    """(q/k/v bias, output bias): fixed by the family, or the config's attention_bias (Llama)."""
    family, flag = config.family, bool(config.attention_bias)
    qkv = flag if family.qkv_bias is None else family.qkv_bias
    return qkv, (flag if family.out_bias is None else family.out_bias)


class Attention(nn.Module):
    """Multi-head attention through SDPA: fused QKV for self-attention, fused KV for cross. Heads,
    key/value heads (grouped-query attention), head size, biases, q/k norms, RoPE, the score scale
    and soft-capping come from the config."""

    def __init__(self, config: BackboneConfig, cross: bool) -> None:
        super().__init__()
        c = config.hidden_size
        self.heads, self.kv_heads, self.head_dim = config.num_attention_heads, config.kv_heads, config.head_size
        self.cross = cross
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        qkv_bias, out_bias = _biases(config)
        if cross:
            self.q = nn.Linear(c, q_size, bias=qkv_bias)
            self.kv = nn.Linear(config.cross_attention_hidden_size or c, 2 * kv_size, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(c, q_size + 2 * kv_size, bias=qkv_bias)
        self.out = nn.Linear(q_size, c, bias=out_bias)
        self.q_norm = make_norm(config, self.head_dim) if config.family.qk_norm else None
        self.k_norm = make_norm(config, self.head_dim) if config.family.qk_norm else None
        self.scale = config.query_pre_attn_scalar ** -0.5 if config.query_pre_attn_scalar else None
        self.softcap = config.attn_logit_softcapping
        self.dropout = config.attention_probs_dropout_prob

    def split_heads(self, x: Tensor, heads: int | None = None) -> Tensor:
        """(B, T, h * D) -> (B, h, T, D); packed (N, h * D) -> (N, h, D); h defaults to the query heads."""
        heads = heads or self.heads
        if x.dim() == 2:
            return x.view(x.shape[0], heads, -1)
        b, t, _ = x.shape
        return x.view(b, t, heads, -1).transpose(1, 2)

    def self_qkv(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention queries (B, H, T, D), keys and values (B, KV, T, D) of x (B, T, C) (packed:
        (N, H|KV, D)), q/k-normed and rotated where the family does."""
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        q, k, v = self.qkv(x).split((q_size, kv_size, kv_size), dim=-1)
        q = apply_rope(_norm(self.q_norm, self.split_heads(q)), rope)
        k = apply_rope(_norm(self.k_norm, self.split_heads(k, self.kv_heads)), rope)
        return q, k, self.split_heads(v, self.kv_heads)

    def cross_query(self, x: Tensor) -> Tensor:
        """Cross-attention queries of x (B, T, C) or packed (N, C), split into heads."""
        return _norm(self.q_norm, self.split_heads(self.q(x)))

    def project_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of the encoder output (no positions), computed once per source: a
        cross-attention's own projection, or for merged attention this self-attention's."""
        if self.cross:
            k, v = self.kv(memory).chunk(2, dim=-1)
        else:
            q_size = self.heads * self.head_dim
            bias = None if self.qkv.bias is None else self.qkv.bias[q_size:]
            k, v = nn.functional.linear(memory, self.qkv.weight[q_size:], bias).chunk(2, dim=-1)
        return _norm(self.k_norm, self.split_heads(k, self.kv_heads)), self.split_heads(v, self.kv_heads)

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
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """x (B, T, C); mask broadcastable to (B, H, T, S), True = attend. Packed tokens: x (N, C)
        with a `PackedMask`. A self-attention given `memory_kv` attends over the encoder outputs
        and its own tokens in one softmax (merged cross-attention; `memory_mask` masks the former).
        A sliding-window layer over a whole sequence gets a `LocalWindow` (padded or packed)."""
        dropout = self.dropout if self.training else 0.0
        if isinstance(mask, LocalWindow):
            if memory_kv is None and self.softcap is None:
                return self._local(x, mask, cache, rope, dropout)
            mask = mask.dense(x.device)  # merged keys and soft-capped scores take the explicit mask
        if isinstance(mask, PackedMask):
            return self._packed(x, mask, memory_kv, dropout, rope)
        if self.cross:
            q, (k, v) = self.cross_query(x), memory_kv
        else:
            q, k, v = self.self_qkv(x, rope)
            if cache is not None:
                k, v = cache.update(pos, k, v)
            if memory_kv is not None:
                if mask is None and causal:
                    mask = causal_mask(None, q.shape[2], k.shape[2], x.device)
                k, v, mask = attach_memory(k, v, mask, memory_kv, memory_mask, q.shape[2])
                causal = False
        y = attend(q, k, v, mask, dropout=dropout, causal=causal and mask is None, scale=self.scale,
                   softcap=self.softcap)
        b, h, t, d = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, h * d))

    def _local(self, x: Tensor, window: LocalWindow, cache: KVCache | None, rope: tuple[Tensor, Tensor] | None,
               dropout: float) -> Tensor:
        """Sliding-window self-attention of a whole sequence in memory linear in its length."""
        q, k, v = self.self_qkv(x, rope)
        if cache is not None:
            cache.update(0, k, v)
        y = window.attend(_rescaled(q, self.scale), *repeat_kv(k, v, self.heads), dropout)
        if window.packing is not None:
            return self.out(y.flatten(1))
        b, h, t, d = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, h * d))

    def _packed(self, x: Tensor, mask: PackedMask, memory_kv: tuple[Tensor, Tensor] | None, dropout: float,
                rope: tuple[Tensor, Tensor] | None) -> Tensor:
        """Attention over packed tokens x (N, C); cross K/V come packed too, (N_src, KV, D)."""
        if self.cross:
            q, (k, v) = self.cross_query(x), memory_kv
        else:
            q, k, v = self.self_qkv(x, rope)
        k, v = repeat_kv(k, v, self.heads)
        return self.out(packed_attention(_rescaled(q, self.scale), k, v, mask, dropout).flatten(1))


def _rows(memory_kv: tuple[Tensor, Tensor], memory_mask: Tensor | None,
          rows: int) -> tuple[tuple[Tensor, Tensor], Tensor | None]:
    """Keys, values and mask with one copy per query row (beams share a source's)."""
    repeat = rows // memory_kv[0].shape[0]
    if repeat == 1:
        return memory_kv, memory_mask
    kv = (memory_kv[0].repeat_interleave(repeat, 0), memory_kv[1].repeat_interleave(repeat, 0))
    if memory_mask is not None and memory_mask.shape[0] > 1:
        memory_mask = memory_mask.repeat_interleave(repeat, 0)
    return kv, memory_mask


def attach_memory(k: Tensor, v: Tensor, mask: Tensor | None, memory_kv: tuple[Tensor, Tensor],
                  memory_mask: Tensor | None, q_len: int) -> tuple[Tensor, Tensor, Tensor]:
    """Merged attention's keys, values and boolean mask: the encoder outputs (one copy per decoder
    row), then the own keys k/v (B, KV, K, D) under `mask` (None: all visible)."""
    (mk, mv), memory_mask = _rows(memory_kv, memory_mask, k.shape[0])
    mask = merged_mask(mask, memory_mask, mk.shape[2], q_len, k.shape[2], k.shape[0])
    return torch.cat((mk, k), dim=2), torch.cat((mv, v), dim=2), mask


def repeat_kv(k: Tensor, v: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """Grouped-query attention: each key/value head repeated for the query heads it serves (head
    axis 1, padded (B, KV, S, D) or packed (N, KV, D))."""
    if k.shape[1] == heads:
        return k, v
    return k.repeat_interleave(heads // k.shape[1], dim=1), v.repeat_interleave(heads // k.shape[1], dim=1)


def _rescaled(q: Tensor, scale: float | None) -> Tensor:
    """SDPA and the packed kernels scale scores by 1/sqrt(D): a family's own scale goes into q."""
    return q if scale is None else q * (scale * q.shape[-1] ** 0.5)


def _norm(norm: nn.Module | None, x: Tensor) -> Tensor:
    return x if norm is None else norm(x)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, dropout: float = 0.0, causal: bool = False,
           scale: float | None = None, softcap: float | None = None) -> Tensor:
    """q (B, H, T, D), k/v (B' | B, KV, S, D) -> (B, H, T, D). Key/value heads are shared by groups
    of query heads; soft-capped scores (Gemma 2) take the explicit path, the rest SDPA."""
    k, v = repeat_kv(k, v, q.shape[1])
    if softcap is not None:
        (k, v), mask = _rows((k, v), mask, q.shape[0])  # beams share their source's keys: a copy per row
        return softcapped_attention(q, k, v, mask, dropout, causal, scale, softcap)[0]
    return _attend(_rescaled(q, scale), k, v, mask, dropout, causal)


def softcapped_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float, causal: bool,
                         scale: float | None, softcap: float | None) -> tuple[Tensor, Tensor]:
    """Scores, cap * tanh(scores / cap), masked softmax in float32, dropout, @ v; also returns the
    probabilities. k/v already have q's heads and rows."""
    scores = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if causal:
        mask = causal_mask(None, q.shape[2], k.shape[2], q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    return F.dropout(probs, dropout, dropout > 0) @ v, probs


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
