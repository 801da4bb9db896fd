"""Unpadded ("packed") execution for the training fast path.

A padded (B, T) batch wastes the linear layers, LayerNorms and MLPs on padding, and attention on
padded rows and columns. Packing gathers the tokens that matter into one (N, C) matrix: every
position-wise layer then runs on N rows, and attention runs per sequence at its real length.
Results on the kept tokens equal the padded computation's, because no kept token ever attends to
a dropped one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from encdec.nn.cpu_kernels import DropoutAttention, Segment, attention, causal_rows, mask_bias

logger = logging.getLogger("encdec")
_logged: set[tuple[str, str]] = set()  # (kernel, reason) pairs already logged


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
        """(N, ...) -> (B, T, ...), zeros where nothing was computed. index_put, not index_copy: its
        backward keeps only the index, where index_copy's keeps x (and the storage x views) alive."""
        full = x.new_zeros(self.batch * self.seq_len, *x.shape[1:]).index_put((self.index,), x)
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
    _built: dict = field(default_factory=dict, repr=False, compare=False)  # per-batch kernel inputs

    def cumulative(self, device: torch.device) -> tuple[Tensor, Tensor, int, int]:
        """(cu_seqlens_q, cu_seqlens_k, max_q, max_k) as varlen kernels take them: int32 (B + 1,)
        offsets of each sequence's rows. Built once per batch; every layer reuses them."""
        if "cumulative" not in self._built:
            def offsets(lengths: list[int]) -> Tensor:
                return torch.tensor([0, *lengths], dtype=torch.int32, device=device).cumsum(0, dtype=torch.int32)

            self._built["cumulative"] = (offsets(self.q_lengths), offsets(self.k_lengths),
                                         max(self.q_lengths, default=0), max(self.k_lengths, default=0))
        return self._built["cumulative"]

    def padded_layout(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """Where packed rows go in a (B * T_max) padded grid, for queries and keys, and the
        boolean mask of that grid, (B, 1, 1|T_q, T_k): own keys only, key_keep, causal. Built once
        per batch."""
        if "padded" not in self._built:
            q_index, q_valid = _grid(self.q_lengths, device)
            k_index, k_valid = _grid(self.k_lengths, device)
            if self.key_keep is not None:
                k_valid = k_valid.flatten().index_copy(0, k_index, self.key_keep).view(k_valid.shape)
            grid_mask = k_valid[:, None, None, :]
            if self.causal:  # self-attention: queries and keys are the same rows, so causal aligns at 0
                grid_mask = grid_mask & causal_rows(q_valid.shape[1], k_valid.shape[1], device)
            self._built["padded"] = (q_index, k_index, grid_mask)
        return self._built["padded"]

    @classmethod
    def self_attention(cls, packing: Packing, attention_mask: Tensor | None, causal: bool) -> PackedMask:
        key_keep = None
        if attention_mask is not None:
            key_keep = packing.pack(attention_mask).bool()
            key_keep = None if bool(key_keep.all()) else key_keep
        return cls(packing.lengths, packing.lengths, causal, key_keep)


def _grid(lengths: list[int], device: torch.device) -> tuple[Tensor, Tensor]:
    """Flat indices of each sequence's rows in a (B, T_max) grid, and the grid's (B, T_max) validity."""
    width = max(lengths, default=0)
    valid = torch.arange(width, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
    return valid.flatten().nonzero().squeeze(1), valid


def packed_kernel(device_type: str, dtype: torch.dtype, head_dim: int, dropout: float,
                  mask: PackedMask) -> tuple[str, str]:
    """(kernel, why) for attention over packed rows. CPU: "per_sequence" (SDPA per sequence, or
    the CPU dropout kernel). GPU: "varlen", one flash-attention call over all sequences, where it
    applies; else "padded", one SDPA call over a padded copy (the why names what ruled varlen out).
    Never a loop of small launches on a GPU."""
    if device_type == "cpu":
        return "per_sequence", ""
    reasons = [
        (device_type != "cuda" or not _has_varlen(), f"no varlen_attn for {device_type} in this torch"),
        (dtype not in (torch.float16, torch.bfloat16), f"dtype {dtype} (varlen needs fp16/bf16)"),
        (head_dim % 8 or head_dim > 256, f"head size {head_dim}"),
        (dropout > 0.0, "attention dropout (varlen has none; SDPA's own dropout used)"),
        (mask.key_keep is not None, "keys masked inside a sequence"),
        (mask.causal and mask.q_lengths != mask.k_lengths, "causal with different query/key lengths"),
    ]
    why = next((reason for bad, reason in reasons if bad), "")
    return ("padded", why) if why else ("varlen", "")


def _has_varlen() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def packed_attention(q: Tensor, k: Tensor, v: Tensor, mask: PackedMask, dropout: float) -> Tensor:
    """q (N_q, H, D), k/v (N_k, H, D) -> (N_q, H, D), attention within each sequence."""
    key = (q.device.type, q.dtype, q.shape[-1], dropout)
    if key not in mask._built:
        mask._built[key] = packed_kernel(*key, mask)
        if mask._built[key] not in _logged and q.device.type != "cpu":
            _logged.add(mask._built[key])
            logger.info("Packed attention on %s: %s kernel%s", q.device.type, mask._built[key][0],
                        f" ({mask._built[key][1]})" if mask._built[key][1] else "")
    kernel = mask._built[key][0]
    if kernel == "varlen":
        return _varlen_attention(q, k, v, mask)
    if kernel == "padded":
        return padded_attention(q, k, v, mask, dropout)
    if 0.0 < dropout < 1.0 and not torch.compiler.is_compiling():
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


def _varlen_attention(q: Tensor, k: Tensor, v: Tensor, mask: PackedMask) -> Tensor:
    """One flash-attention call over every sequence of the batch (CUDA, fp16/bf16, no dropout)."""
    from torch.nn.attention.varlen import varlen_attn

    cu_q, cu_k, max_q, max_k = mask.cumulative(q.device)
    return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, window_size=(-1, 0) if mask.causal else (-1, -1))


def padded_attention(q: Tensor, k: Tensor, v: Tensor, mask: PackedMask, dropout: float) -> Tensor:
    """One SDPA call over a padded (B, H, T, D) copy of the packed rows, with SDPA's own dropout
    (on CUDA drawn from torch's generator, whose state activation checkpointing restores)."""
    q_index, k_index, grid_mask = mask.padded_layout(q.device)
    batch, t_q, t_k = len(mask.q_lengths), max(mask.q_lengths), max(mask.k_lengths)

    def to_grid(x: Tensor, index: Tensor, width: int) -> Tensor:
        grid = x.new_zeros(batch * width, *x.shape[1:]).index_copy(0, index, x)
        return grid.view(batch, width, *x.shape[1:]).transpose(1, 2)  # (B, H, T, D)

    y = F.scaled_dot_product_attention(
        to_grid(q, q_index, t_q), to_grid(k, k_index, t_k), to_grid(v, k_index, t_k),
        attn_mask=grid_mask, dropout_p=dropout,
    )
    return y.transpose(1, 2).reshape(batch * t_q, *q.shape[1:]).index_select(0, q_index)


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
