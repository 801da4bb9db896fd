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


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32: Llama's `w * x`, or Gemma's `(1 + w) * x` with
    the weight stored as an offset from 1 (`plus_one`), each rounded to the input dtype as theirs."""

    def __init__(self, width: int, eps: float, plus_one: bool = False) -> None:
        super().__init__()
        self.eps, self.plus_one = eps, plus_one
        self.weight = nn.Parameter(torch.zeros(width) if plus_one else torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.plus_one:
            return (y * (1.0 + self.weight.float())).type_as(x)
        return self.weight * y.to(x.dtype)


def make_norm(config: BackboneConfig, width: int | None = None) -> nn.Module:
    """The family's norm over `width` features (default: the hidden size)."""
    width = width or config.hidden_size
    if config.family.norm == "layer":
        return nn.LayerNorm(width, eps=config.layer_norm_eps)
    return RMSNorm(width, config.layer_norm_eps, plus_one=config.family.norm == "rms_plus_one")


class Rotary(nn.Module):
    """Rotary position embeddings: cos/sin tables for given positions (RoPE types "default",
    "linear" and "llama3", as transformers computes their inverse frequencies)."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.register_buffer("inv_freq", rope_inverse_frequencies(config), persistent=False)

    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """positions (...,) int -> cos, sin (..., D) in `dtype`, each frequency used twice."""
        freqs = positions[..., None].float() * self.inv_freq.float()
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rope_inverse_frequencies(config: BackboneConfig) -> Tensor:
    rope, dim = config.rope, config.head_size
    inv_freq = 1.0 / (rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    kind = rope["rope_type"]
    if kind == "linear":
        return inv_freq / rope["factor"]
    if kind == "llama3":
        return _llama3_frequencies(inv_freq, rope)
    if kind != "default":
        raise ValueError(f"rope_type {kind!r} is not supported; encdec implements default, linear and llama3. "
                         "Use a checkpoint with one of these or transformers for this model.")
    return inv_freq


def _llama3_frequencies(inv_freq: Tensor, rope: dict) -> Tensor:
    """Llama 3.1's scaling: long wavelengths slowed by `factor`, short ones kept, a smooth blend between."""
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old_context = rope["original_max_position_embeddings"]
    wavelength = 2 * math.pi / inv_freq
    scaled = torch.where(wavelength > old_context / low, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelength - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelength >= old_context / high) & (wavelength <= old_context / low)
    return torch.where(medium, blended, scaled)


def apply_rope(x: Tensor, rope: tuple[Tensor, Tensor] | None) -> Tensor:
    """Rotate pairs (i, i + D/2) of x (..., H, T, D) or packed (N, H, D) by the positions' angles;
    cos/sin come shaped to broadcast over the head axis."""
    if rope is None:
        return x
    cos, sin = rope
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


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
        and its own tokens in one softmax (merged cross-attention; `memory_mask` masks the former)."""
        dropout = self.dropout if self.training else 0.0
        if isinstance(mask, PackedMask):
            return self._packed(x, mask, memory_kv, dropout, rope)
        if self.cross:
            q, (k, v) = self.cross_query(x), memory_kv
        else:
            q, k, v = self.self_qkv(x, rope)
            if cache is not None:
                k, v = cache.update(pos, k, v)
            if memory_kv is not None:
                q_len, k_len = q.shape[2], k.shape[2]
                if mask is None and causal:
                    mask = causal_mask(None, q_len, k_len, x.device)
                (mk, mv), memory_mask = _rows(memory_kv, memory_mask, k.shape[0])
                k, v = torch.cat((mk, k), dim=2), torch.cat((mv, v), dim=2)
                mask, causal = merged_mask(mask, memory_mask, mk.shape[2], q_len, k_len, x.shape[0]), False
        y = attend(q, k, v, mask, dropout=dropout, causal=causal and mask is None, scale=self.scale,
                   softcap=self.softcap)
        b, h, t, d = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, h * d))

    def _packed(self, x: Tensor, mask: PackedMask, memory_kv: tuple[Tensor, Tensor] | None, dropout: float,
                rope: tuple[Tensor, Tensor] | None) -> Tensor:
        """Attention over packed tokens x (N, C); cross K/V come packed too, (N_src, KV, D)."""
        if self.cross:
            q, (k, v) = self.cross_query(x), memory_kv
        else:
            q, k, v = self.self_qkv(x, rope)
        if self.kv_heads != self.heads:
            k, v = (t.repeat_interleave(self.heads // self.kv_heads, dim=1) for t in (k, v))
        if self.scale is not None:  # the packed kernels scale by 1/sqrt(D): fold the difference into q
            q = q * (self.scale * self.head_dim ** 0.5)
        return self.out(packed_attention(q, k, v, mask, dropout).flatten(1))


def _rows(memory_kv: tuple[Tensor, Tensor], memory_mask: Tensor | None,
          rows: int) -> tuple[tuple[Tensor, Tensor], Tensor | None]:
    """The encoder's keys, values and mask per decoder row (beams share a source's)."""
    repeat = rows // memory_kv[0].shape[0]
    if repeat == 1:
        return memory_kv, memory_mask
    kv = (memory_kv[0].repeat_interleave(repeat, 0), memory_kv[1].repeat_interleave(repeat, 0))
    if memory_mask is not None and memory_mask.shape[0] > 1:
        memory_mask = memory_mask.repeat_interleave(repeat, 0)
    return kv, memory_mask


def _norm(norm: nn.Module | None, x: Tensor) -> Tensor:
    return x if norm is None else norm(x)


def merged_mask(self_mask: Tensor | None, memory_mask: Tensor | None, s: int, t: int, k_len: int,
                batch: int) -> Tensor:
    """(B, 1, T, S + K) boolean mask of merged attention: the encoder outputs (memory_mask, or all)
    then the own keys (self_mask, or all)."""
    device = (self_mask if self_mask is not None else memory_mask).device if (
        self_mask is not None or memory_mask is not None) else None
    own = self_mask if self_mask is not None else torch.ones(1, 1, t, k_len, dtype=torch.bool, device=device)
    memory = memory_mask if memory_mask is not None else torch.ones(1, 1, 1, s, dtype=torch.bool, device=own.device)
    rows = max(batch, own.shape[0], memory.shape[0])
    return torch.cat((memory.expand(rows, 1, t, s), own.expand(rows, 1, t, k_len)), dim=-1)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, dropout: float = 0.0, causal: bool = False,
           scale: float | None = None, softcap: float | None = None) -> Tensor:
    """q (B, H, T, D), k/v (B' | B, KV, S, D) -> (B, H, T, D). Key/value heads are shared by groups
    of query heads; soft-capped scores (Gemma 2) take the explicit path, the rest SDPA."""
    if k.shape[1] != q.shape[1]:
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    if softcap is not None:
        if k.shape[0] != q.shape[0]:  # beams share their source's keys: one copy per row here
            repeat = q.shape[0] // k.shape[0]
            k, v = k.repeat_interleave(repeat, 0), v.repeat_interleave(repeat, 0)
            mask = mask.repeat_interleave(repeat, 0) if mask is not None and mask.shape[0] > 1 else mask
        return softcapped_attention(q, k, v, mask, dropout, causal, scale, softcap)[0]
    if scale is not None:  # every kernel below scales by 1/sqrt(D): fold the difference into q
        q = q * (scale * q.shape[-1] ** 0.5)
    return _attend(q, k, v, mask, dropout, causal)


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


class MLP(nn.Module):
    """fc_out(act(fc_in x)), or for gated families (SwiGLU, GeGLU) down(act(gate x) * up x) with
    gate and up fused in fc_in."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.gated = config.family.mlp == "gated"
        bias = bool(config.mlp_bias) if self.gated else True
        self.fc_in = nn.Linear(config.hidden_size, config.ffn_size * (2 if self.gated else 1), bias=bias)
        self.fc_out = nn.Linear(config.ffn_size, config.hidden_size, bias=bias)
        self.act = activation(config.hidden_act)

    def forward(self, x: Tensor) -> Tensor:
        if self.gated:
            gate, up = self.fc_in(x).chunk(2, dim=-1)
            return self.fc_out(self.act(gate) * up)
        return self.fc_out(self.act(self.fc_in(x)))


class Block(nn.Module):
    """Self-attention, optional cross-attention, MLP; each with a residual and a norm placed
    before (pre-norm: GPT-2, Llama) or after (post-norm: BERT) the sub-layer, plus a second norm
    on the sub-layer's output in sandwich families (Gemma 2). A decoder's cross-attention is of
    the kind its config names: "gated" passes a tanh gate that starts at 0, "merged" has no
    module of its own (the self-attention also attends over the encoder outputs)."""

    def __init__(self, config: BackboneConfig, kind: str = "full_attention") -> None:
        super().__init__()
        self.pre_norm = config.pre_norm
        self.sliding = kind == "sliding_attention"
        sandwich = config.family.sandwich_norm
        self.self_attn = Attention(config, cross=False)
        self.self_attn_norm = make_norm(config)
        self.self_attn_post_norm = make_norm(config) if sandwich else None
        self.merged = config.add_cross_attention and config.cross_attention_kind == "merged"
        if config.add_cross_attention and not self.merged:
            self.cross_attn = Attention(config, cross=True)
            self.cross_attn_norm = make_norm(config)
            self.cross_attn_post_norm = make_norm(config) if sandwich else None
            if config.cross_attention_kind == "gated":
                self.cross_attn_gate = nn.Parameter(torch.zeros(1))
        self.mlp = MLP(config)
        self.mlp_norm = make_norm(config)
        self.mlp_post_norm = make_norm(config) if sandwich else None
        self.dropout = Dropout(config.hidden_dropout_prob)

    def residual(self, x: Tensor, part: str, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """Sub-layer `part` ("self_attn", "cross_attn" or "mlp") computed by `fn`, with its norms,
        dropout, gate and residual in this family's order; callers that run attention their own way
        (encdec.compat.explicit) go through here too."""
        norm, post = getattr(self, f"{part}_norm"), getattr(self, f"{part}_post_norm", None)
        gate = getattr(self, f"{part}_gate", None)
        if not self.pre_norm:
            return norm(x + self.dropout(fn(x)))
        y = fn(norm(x))
        if post is not None:
            y = post(y)
        if gate is not None:
            y = torch.tanh(gate).to(y.dtype) * y
        return x + self.dropout(y)

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
        merged = memory_kv if self.merged else None
        x = self.residual(x, "self_attn", lambda h: self.self_attn(
            h, mask, cache=cache, pos=pos, causal=causal, rope=rope, memory_kv=merged, memory_mask=memory_mask))
        if memory_kv is not None and not self.merged:
            x = self.residual(x, "cross_attn", lambda h: self.cross_attn(h, memory_mask, memory_kv=memory_kv))
        return self.residual(x, "mlp", self.mlp)


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
    rope: tuple[Tensor, Tensor] | None = None,
    sliding: tuple[Tensor | None, bool] | None = None,
) -> Tensor:
    """Run the blocks in order, handing each its cross K/V, cache, RoPE angles and mask (sliding-
    window layers take `sliding`'s (mask, causal)). `checkpointed` (training with activation
    checkpointing) keeps only each block's input and recomputes the rest in backward."""
    for i, layer in enumerate(layers):
        layer_mask, layer_causal = sliding if layer.sliding and sliding is not None else (mask, causal)
        kwargs = dict(
            causal=layer_causal, pos=pos, rope=rope,
            memory_kv=memory_kv[i] if memory_kv is not None else None,
            memory_mask=memory_mask,
            cache=caches[i] if caches is not None else None,
        )
        if checkpointed and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(layer, x, layer_mask, use_reentrant=False, **kwargs)
        else:
            x = layer(x, layer_mask, **kwargs)
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


def sliding_mask(attention_mask: Tensor | None, q_len: int, k_len: int, window: int, causal: bool,
                 device: torch.device) -> Tensor:
    """Boolean (B|1, 1, T, S) mask of a sliding-window layer, queries at the last T of S positions:
    causal layers see the `window` newest keys up to their own (key > query - window), bidirectional
    ones every key within `window` positions either side, as transformers' masks do."""
    rows = torch.arange(q_len, device=device)[:, None] + (k_len - q_len)
    cols = torch.arange(k_len, device=device)[None, :]
    allowed = ((cols <= rows) & (cols > rows - window)) if causal else (cols - rows).abs() <= window
    allowed = allowed[None, None]
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
        elif isinstance(m, RMSNorm):
            (nn.init.zeros_ if m.plus_one else nn.init.ones_)(m.weight)


def scaled_init(module: nn.Module, std: float, n_layer: int) -> None:
    """GPT-2 scales residual output projections by 1/sqrt(2 * n_layer)."""
    for name, p in module.named_parameters():
        if name.endswith(("self_attn.out.weight", "cross_attn.out.weight", "mlp.fc_out.weight")):
            nn.init.normal_(p, 0.0, std / math.sqrt(2 * n_layer))
