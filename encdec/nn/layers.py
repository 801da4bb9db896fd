"""The MLP and the layer block shared by every backbone (attention: encdec.nn.attention), the loop
over the blocks and weight initialisation.

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

from encdec.nn.attention import Attention, KVCache
from encdec.nn.config import BackboneConfig
from encdec.nn.cpu_kernels import Dropout
from encdec.nn.norms import RMSNorm, make_norm
from encdec.nn.rotary import Rope, layer_rope

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

    def __init__(self, config: BackboneConfig, kind: str = "full_attention", attn_norm: bool = True) -> None:
        super().__init__()
        self.pre_norm = config.pre_norm
        self.kind = kind
        self.sliding = kind == "sliding_attention"
        sandwich = config.family.sandwich_norm
        self.self_attn = Attention(config, cross=False)
        # ModernBERT's first layer reads its normed embeddings without a norm of its own
        self.self_attn_norm = make_norm(config) if attn_norm else nn.Identity()
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
    rope: Rope | None = None,
    sliding: tuple[Tensor | None, bool] | None = None,
) -> Tensor:
    """Run the blocks in order, handing each its cross K/V, cache, RoPE angles (its kind's, where
    kinds rotate differently) and mask (sliding-window layers take `sliding`'s (mask, causal)).
    `checkpointed` (training with activation checkpointing) keeps only each block's input and
    recomputes the rest in backward."""
    for i, layer in enumerate(layers):
        layer_mask, layer_causal = sliding if layer.sliding and sliding is not None else (mask, causal)
        kwargs = dict(
            causal=layer_causal, pos=pos, rope=layer_rope(rope, layer.kind),
            memory_kv=memory_kv[i] if memory_kv is not None else None,
            memory_mask=memory_mask,
            cache=caches[i] if caches is not None else None,
        )
        if checkpointed and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(layer, x, layer_mask, use_reentrant=False, **kwargs)
        else:
            x = layer(x, layer_mask, **kwargs)
    return x


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
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, RMSNorm):
            (nn.init.zeros_ if m.plus_one else nn.init.ones_)(m.weight)


def scaled_init(module: nn.Module, std: float, n_layer: int) -> None:
    """GPT-2 scales residual output projections by 1/sqrt(2 * n_layer)."""
    for name, p in module.named_parameters():
        if name.endswith(("self_attn.out.weight", "cross_attn.out.weight", "mlp.fc_out.weight")):
            nn.init.normal_(p, 0.0, std / math.sqrt(2 * n_layer))
