"""The decoder state every search (greedy, beam, speculative) steps: cached self-attention K/V per
row and cross-attention K/V computed once per source."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from encdec.nn.attention import KVCache
from encdec.nn.masks import padding_mask


class Decoding:
    """The decoder while generating. Cross-attention keys and values are computed once per source
    and shared by all rows of that source (rows are source-major: source 0's rows, then source
    1's, ...); each layer's self-attention cache is allocated once, for the longest sequence."""

    def __init__(
        self,
        decoder: nn.Module,
        memory: Tensor,
        memory_attention_mask: Tensor | None,
        rows_per_source: int,
        length: int,
    ) -> None:
        self.decoder = decoder
        self.memory_kv = _contiguous(decoder.cross_kv(memory))  # per layer (k, v), each (B, H, S, D)
        self.memory_mask = padding_mask(memory_attention_mask)  # (B, 1, 1, S) or None
        self.sources = memory.shape[0]
        config = decoder.config
        heads, head_dim = config.kv_heads, config.head_size  # grouped-query attention caches kv heads only
        self.caches = [
            KVCache(self.sources * rows_per_source, heads, length, head_dim, dtype=memory.dtype, device=memory.device)
            for _ in range(config.num_hidden_layers)
        ]
        self.pos = 0
        self.scratch: Tensor | None = None  # reorder's buffer

    def step(self, tokens: Tensor) -> Tensor:
        """Feed tokens (N, T); float32 next-token logits (N, V) of the last position only."""
        hidden = self.decoder(
            tokens, None, memory_kv=self.memory_kv, memory_mask=self.memory_mask, caches=self.caches, pos=self.pos
        )
        self.pos += tokens.shape[1]
        return self.decoder.logits(hidden[:, -1]).float()

    def reorder(self, index: Tensor) -> None:
        """Row i takes the cache of row index[i] (beam moves); in place, filled positions of the
        rows that change only, through one scratch buffer: a fresh temporary per step, growing
        with the sequence, would be a fresh mmap each time (page faults cost as much as the copy)."""
        moved = index.ne(torch.arange(index.numel(), device=index.device)).nonzero().squeeze(1)
        if moved.numel() == 0:
            return
        parents = index[moved]
        first = self.caches[0].k
        if self.scratch is None or self.scratch.numel() < first.numel():
            self.scratch = torch.empty(first.numel(), dtype=first.dtype, device=first.device)
        for cache in self.caches:
            for buffer in (cache.k, cache.v):
                filled = buffer[:, :, : self.pos]
                taken = self.scratch[: moved.numel() * filled[0].numel()].view(moved.numel(), *filled.shape[1:])
                torch.index_select(filled, 0, parents, out=taken)
                filled.index_copy_(0, moved, taken)

    def keep(self, rows: Tensor, sources: Tensor | None = None) -> None:
        """Drop finished rows (and the sources none of the remaining rows read) from the batch."""
        for cache in self.caches:
            cache.select(rows)
        if sources is not None:
            self.memory_kv = [(k.index_select(0, sources), v.index_select(0, sources)) for k, v in self.memory_kv]
            if self.memory_mask is not None:
                self.memory_mask = self.memory_mask.index_select(0, sources)
            self.sources = sources.numel()

    def repeat_sources(self, times: int) -> None:
        """One copy of each source's cross K/V per row, so rows can finish independently."""
        self.memory_kv = [(k.repeat_interleave(times, 0), v.repeat_interleave(times, 0)) for k, v in self.memory_kv]
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask.repeat_interleave(times, 0)
        self.sources *= times


def _contiguous(memory_kv: list[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
    """Every step reads the cross K/V whole, and SDPA reads the strided views the fused projection
    gives markedly slower; copy them once, a layer at a time so each view's storage goes at once."""
    for i, (k, v) in enumerate(memory_kv):
        memory_kv[i] = (k.contiguous(), v.contiguous())
    return memory_kv
