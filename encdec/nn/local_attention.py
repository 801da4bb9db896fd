"""Sliding-window (local) self-attention in memory linear in the sequence length.

A mask over full attention costs T x T scores however narrow the window; ModernBERT's local layers
see 64 keys either side, so at 8,192 tokens most of that is wasted. Here the sequence is cut into
blocks of `window` queries, and each block attends only to its own block and its neighbours
(3 x window keys), which hold every key the window can reach: scores and masks are
T x 3 x window. Results equal the full masked computation's (tests/nn/test_local_attention.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from encdec.nn.cpu_kernels import attention
from encdec.nn.masks import sliding_mask
from encdec.nn.packing import Packing


@dataclass
class LocalWindow:
    """Passed to sliding-window layers where a mask would go, for a whole sequence (no cached keys):
    queries see keys within `window` positions either side, or, if `causal`, the `window` newest keys
    up to their own; only keys with `key_keep` (B, T) True. With `packing`, q/k/v come packed (N, H, D)
    and positions are those of the packing's (B, T) grid."""

    window: int
    causal: bool
    key_keep: Tensor | None  # (B, T) bool over the grid; None: every key
    seq_len: int
    packing: Packing | None = None

    @classmethod
    def build(cls, window: int, causal: bool, attention_mask: Tensor | None, seq_len: int,
              packing: Packing | None = None) -> LocalWindow:
        keep = None if attention_mask is None else attention_mask.bool()
        if packing is not None:
            kept = packing.unpack(torch.ones(len(packing.index), dtype=torch.bool, device=packing.index.device))
            keep = kept if keep is None else kept & keep
        return cls(window, causal, keep, seq_len, packing)

    def dense(self, device: torch.device) -> Tensor:
        """The same attention as a full (B|1, 1, T, T) boolean mask (merged cross-attention and
        soft-capped scores take it; memory quadratic in T)."""
        if self.packing is not None:
            raise ValueError("A packed batch has no dense sliding-window mask; run it padded.")
        return sliding_mask(self.key_keep, self.seq_len, self.seq_len, self.window, self.causal, device)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, dropout: float = 0.0) -> Tensor:
        """softmax(q k^T / sqrt(D)) v over the window; q/k/v (B, H, T, D) with k/v already carrying
        q's heads, or packed (N, H, D). Returns q's layout."""
        if self.packing is None:
            return local_attention(q, k, v, self.key_keep, self.window, self.causal, dropout)
        grid = [self.packing.unpack(t).transpose(1, 2) for t in (q, k, v)]  # (B, H, T, D)
        y = local_attention(*grid, self.key_keep, self.window, self.causal, dropout)
        return self.packing.pack(y.transpose(1, 2))


def local_attention(q: Tensor, k: Tensor, v: Tensor, key_keep: Tensor | None, window: int, causal: bool,
                    dropout: float = 0.0) -> Tensor:
    """q/k/v (B, H, T, D) -> (B, H, T, D): query i sees key j when |j - i| <= window (causal:
    i - window < j <= i) and key_keep[b, j]. Blocks of `window` queries against 3 blocks of keys."""
    b, h, t, d = q.shape
    w = max(1, min(window, t))
    n = -(-t // w)
    tail = n * w - t
    q = F.pad(q, (0, 0, 0, tail)).view(b, h, n, w, d).transpose(1, 2).reshape(b * n, h, w, d)

    def neighbours(x: Tensor) -> Tensor:
        """(B, H, T, D) -> (B * n, H, 3w, D): each block's keys from the block before to the one after."""
        x = F.pad(x, (0, 0, w, tail + w)).unfold(2, 3 * w, w)  # (B, H, n, D, 3w)
        return x.permute(0, 2, 1, 4, 3).reshape(b * n, h, 3 * w, d)

    keep = torch.ones(b, t, dtype=torch.bool, device=q.device) if key_keep is None else key_keep.bool()
    keep = F.pad(keep, (w, tail + w), value=False).unfold(1, 3 * w, w)  # (B, n, 3w)
    offset = torch.arange(3 * w, device=q.device)[None, :] - w - torch.arange(w, device=q.device)[:, None]
    band = ((offset <= 0) & (offset > -window)) if causal else offset.abs() <= window  # (w, 3w): key - query
    mask = (band[None, None] & keep[:, :, None, :]).reshape(b * n, 1, w, 3 * w)
    y = attention(q, neighbours(k), neighbours(v), mask, dropout)
    return y.view(b, n, h, w, d).transpose(1, 2).reshape(b, h, n * w, d)[:, :, :t]
