"""Unpadded ("packed") execution for the training fast path.

A padded (B, T) batch wastes the linear layers, LayerNorms and MLPs on padding, and attention on
padded rows and columns. Packing gathers the tokens that matter into one (N, C) matrix: every
position-wise layer then runs on N rows, and attention runs per sequence at its real length.
Results on the kept tokens equal the padded computation's, because no kept token ever attends to
a dropped one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from encdec.attention import DropoutAttention, Segment, attention, causal_rows, mask_bias


@dataclass
class Packing:
    """The kept tokens of a (B, T) grid: flat row-major `index` into B * T, and per-row counts."""

    index: Tensor  # (N,)
    lengths: list[int]
    batch: int
    seq_len: int

    @classmethod
    def from_mask(cls, keep: Tensor) -> Packing:
        """keep (B, T) bool: True where a token is computed."""
        keep = keep.bool()
        return cls(keep.flatten().nonzero().squeeze(1), keep.sum(1).tolist(), *keep.shape)

    def pack(self, x: Tensor) -> Tensor:
        """(B, T, ...) -> (N, ...)."""
        return x.reshape(self.batch * self.seq_len, *x.shape[2:]).index_select(0, self.index)

    def unpack(self, x: Tensor) -> Tensor:
        """(N, ...) -> (B, T, ...), zeros where nothing was computed."""
        full = x.new_zeros(self.batch * self.seq_len, *x.shape[1:]).index_copy(0, self.index, x)
        return full.view(self.batch, self.seq_len, *x.shape[1:])


@dataclass
class PackedMask:
    """Attention over packed tokens, passed where a padded mask would go: sequence b's queries
    (q_lengths[b] rows) see only its own keys (k_lengths[b] rows), causally if `causal`, and only
    keys with `key_keep` True (None: all; e.g. a GPT-2 decoder's first token, which is its pad)."""

    q_lengths: list[int]
    k_lengths: list[int]
    causal: bool = False
    key_keep: Tensor | None = None  # (N_k,) bool

    @classmethod
    def self_attention(cls, packing: Packing, attention_mask: Tensor | None, causal: bool) -> PackedMask:
        key_keep = None
        if attention_mask is not None:
            key_keep = packing.pack(attention_mask).bool()
            key_keep = None if bool(key_keep.all()) else key_keep
        return cls(packing.lengths, packing.lengths, causal, key_keep)


def packed_attention(q: Tensor, k: Tensor, v: Tensor, mask: PackedMask, dropout: float) -> Tensor:
    """q (N_q, H, D), k/v (N_k, H, D) -> (N_q, H, D), attention within each sequence."""
    if 0.0 < dropout < 1.0 and q.device.type == "cpu" and not torch.compiler.is_compiling():
        return _dropout_attention(q, k, v, mask, dropout)
    outputs = []
    for q0, q1, k0, k1 in _spans(mask):
        if q1 == q0:
            continue
        if k1 == k0:  # nothing to attend to: zero output, as SDPA gives a fully masked row
            outputs.append(q.new_zeros(q1 - q0, *q.shape[1:]))
            continue
        seq_mask, causal = _sequence_mask(q0, q1, k0, k1, mask)
        qkv = (t.transpose(0, 1)[None] for t in (q[q0:q1], k[k0:k1], v[k0:k1]))  # (1, H, T_b, D)
        outputs.append(attention(*qkv, seq_mask, dropout, causal)[0].transpose(0, 1))
    return torch.cat(outputs) if outputs else q.new_zeros(q.shape)


def _dropout_attention(q: Tensor, k: Tensor, v: Tensor, mask: PackedMask, p: float) -> Tensor:
    """All sequences in one `DropoutAttention` call (one autograd node, no split and cat)."""
    spans = [span for span in _spans(mask) if span[1] > span[0] and span[3] > span[2]]
    segments = [_segment(*span, mask, q) for span in spans]
    heads_first = [t.transpose(0, 1) for t in (q, k, v)]  # (H, N, D) views
    return DropoutAttention.apply(*heads_first, segments, p, None).transpose(0, 1)


def _spans(mask: PackedMask):
    """(q start, q end, k start, k end) of each sequence in the packed rows."""
    q0 = k0 = 0
    for q_len, k_len in zip(mask.q_lengths, mask.k_lengths):
        yield q0, q0 + q_len, k0, k0 + k_len
        q0, k0 = q0 + q_len, k0 + k_len


def _sequence_mask(q0: int, q1: int, k0: int, k1: int, mask: PackedMask) -> tuple[Tensor | None, bool]:
    """One sequence's boolean (1, 1, T|1, S) mask, or (None, causal) when SDPA's flag suffices."""
    if mask.key_keep is None:
        return None, mask.causal
    seq_mask = mask.key_keep[k0:k1][None, None, None, :]
    if mask.causal:
        seq_mask = seq_mask & causal_rows(q1 - q0, k1 - k0, seq_mask.device)
    return seq_mask, False


def _segment(q0: int, q1: int, k0: int, k1: int, mask: PackedMask, like: Tensor) -> Segment:
    """One sequence as a `DropoutAttention` segment of the (H, N, D) views."""
    seq_mask, causal = _sequence_mask(q0, q1, k0, k1, mask)
    if causal:
        seq_mask = causal_rows(q1 - q0, k1 - k0, like.device)
    bias, dead = mask_bias(None if seq_mask is None else seq_mask.reshape(1, *seq_mask.shape[-2:]), like.dtype)
    return Segment((slice(None), slice(q0, q1)), (slice(None), slice(k0, k1)), bias, dead)
