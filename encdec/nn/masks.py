"""Boolean attention masks (True = attend) built from 1/0 attention masks: padding, causal, sliding
windows and merged (encoder outputs then own tokens). Boolean, as transformers passes them to SDPA:
a query with no visible key then gets a zero output rather than NaN."""

from __future__ import annotations

import torch
from torch import Tensor


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
