"""Rotary position embeddings (RoPE): cos/sin tables and the rotation of queries and keys."""

from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor, nn

from encdec.nn.config import BackboneConfig

# The cos/sin of RoPE that layers read: one pair for every layer, or one per layer kind (ModernBERT's
# global and local layers rotate by different thetas), keyed as `Block.kind`.
Rope = Union[tuple[Tensor, Tensor], dict[str, tuple[Tensor, Tensor]]]


class Rotary(nn.Module):
    """Rotary position embeddings: cos/sin tables for given positions (RoPE types "default",
    "linear" and "llama3", as transformers computes their inverse frequencies), one table per
    `config.rope_kinds` entry (None: one table for every layer)."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.kinds = config.rope_kinds
        for kind in self.kinds:
            self.register_buffer(_buffer(kind), rope_inverse_frequencies(config, kind), persistent=False)

    def forward(self, positions: Tensor, dtype: torch.dtype, kind: str | None = None) -> tuple[Tensor, Tensor]:
        """positions (...,) int -> cos, sin (..., D) in `dtype` for layers of `kind`, each frequency used twice."""
        freqs = positions[..., None].float() * getattr(self, _buffer(kind)).float()
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def _buffer(kind: str | None) -> str:
    return "inv_freq" if kind is None else f"inv_freq_{kind}"


def layer_rope(rope: Rope | None, kind: str) -> tuple[Tensor, Tensor] | None:
    """The cos/sin a layer of `kind` rotates by."""
    return rope[kind] if isinstance(rope, dict) else rope


def rope_inverse_frequencies(config: BackboneConfig, kind: str | None = None) -> Tensor:
    rope, dim = config.rope_for(kind), config.head_size
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
