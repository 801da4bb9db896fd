"""Exact copy-speculative greedy search.

Summaries copy long spans of their source. Each step drafts, per row, the k source tokens that
followed the longest (up to 3 tokens) match of the row's last generated tokens in its source,
feeds the row's last token and its draft to the decoder in one pass over the cache, and keeps the
draft tokens greedy search would have chosen, plus greedy's own next token: each step yields 1 to
k + 1 tokens per row, rows advancing by different amounts (per-row cache lengths, positions and
masks). The kept tokens are those plain greedy search picks from the same logits; only the
floating-point summation order of a several-token pass differs from one-token steps, which can
flip a near-tie (benchmarks/generate.py counts such documents).
"""

from __future__ import annotations

import torch
from torch import Tensor

from encdec.generation.greedy import best, pad_id
from encdec.generation.processors import apply, build_processors
from encdec.generation.settings import Plan
from encdec.generation.state import Decoding

DRAFT = 1  # tokens drafted per row and pass: best on benchmarks/generate.py (docs/benchmarks.md)
MATCH = 3  # longest suffix looked up in the source
MIN_MATCH = 2


def enabled(plan: Plan, config) -> bool:
    """On by default for greedy search (not sampling, one sequence per input) when encoder and
    decoder share a vocabulary, so that source ids are decoder ids; `speculative=False` turns it off.
    transformers' extra rules (bad_words_ids, forced tokens: processors.extra_processors) run on plain
    greedy search, whose rules see one length for the whole batch."""
    return bool(
        plan.speculative and plan.num_beams == 1 and not plan.do_sample and plan.num_return_sequences == 1
        and not plan.config.extra
        and config.encoder.vocab_size == config.decoder.vocab_size
        and "sliding_attention" not in config.decoder.layer_kinds  # its ragged rows build their own masks
        and config.decoder.cross_attention_kind != "merged"
    )


class Ragged:
    """One layer's self-attention cache with a length per row: `update` writes the pass's keys and
    values at each row's own start and returns the cache up to `width`."""

    def __init__(self, k: Tensor, v: Tensor) -> None:
        self.k, self.v = k, v
        self.starts: Tensor | None = None
        self.width = 0

    def update(self, pos: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        rows = torch.arange(k.shape[0], device=k.device)[:, None]
        cols = self.starts[:, None] + torch.arange(k.shape[2], device=k.device)
        self.k[rows, :, cols] = k.transpose(1, 2).to(self.k.dtype)  # autocast: bf16 into the fp32 cache
        self.v[rows, :, cols] = v.transpose(1, 2).to(self.v.dtype)
        return self.k[:, :, : self.width], self.v[:, :, : self.width]

    def select(self, index: Tensor) -> None:
        self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)

    @staticmethod
    def verify(decoding: Decoding, tokens: Tensor, cached: Tensor) -> Tensor:
        """Feed tokens (N, T) at per-row positions cached..cached+T-1; logits (N, T, V)."""
        t, device = tokens.shape[1], tokens.device
        width = int(cached.max()) + t
        for cache in decoding.caches:
            cache.starts, cache.width = cached, width
        query = cached[:, None] + torch.arange(t, device=device)  # (N, T) each query's position
        mask = (torch.arange(width, device=device) <= query[:, :, None])[:, None]  # (N, 1, T, S)
        hidden = decoding.decoder(tokens, None, memory_kv=decoding.memory_kv, memory_mask=decoding.memory_mask,
                                  caches=decoding.caches, position_ids=_positions(decoding.decoder, tokens, query),
                                  self_mask=mask)
        return decoding.decoder.logits(hidden).float()


def _positions(decoder, tokens: Tensor, query: Tensor) -> Tensor:
    """Position ids as one-token steps give them (RoBERTa: past + 1 + pad, pads at pad)."""
    embeddings = decoder.embeddings
    if not embeddings.roberta_positions:
        return query
    real = tokens.ne(embeddings.pad_id).long()
    return (query + 1) * real + embeddings.pad_id


def draft(seqs: Tensor, lengths: Tensor, source: Tensor, source_lengths: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per row: the k source tokens after the first occurrence of the longest (<= MATCH) suffix of
    seqs[i, :lengths[i]] in source[i, :source_lengths[i]]. Returns drafts (N, k) and how many of
    each row's are real (N,)."""
    n_rows, s = source.shape
    device = source.device
    drafts = torch.zeros(n_rows, k, dtype=torch.long, device=device)
    count = torch.zeros(n_rows, dtype=torch.long, device=device)
    for n in range(min(MATCH, s - 1), 0, -1):
        suffix = seqs.gather(1, (lengths[:, None] - n + torch.arange(n, device=device)).clamp(min=0))
        hit = (source.unfold(1, n, 1) == suffix[:, None, :]).all(dim=-1)  # (N, S - n + 1)
        follow = torch.arange(hit.shape[1], device=device)[None] + n  # first drafted index
        hit &= (follow < source_lengths[:, None]) & (lengths >= n)[:, None]
        found = hit.any(dim=1) & (count == 0)
        start = hit.int().argmax(dim=1) + n
        taken = source.gather(1, (start[:, None] + torch.arange(k, device=device)).clamp(max=s - 1))
        drafts = torch.where(found[:, None], taken, drafts)
        count = torch.where(found, (source_lengths - start).clamp(max=k), count)
    return drafts, count


def speculative_greedy(decoding: Decoding, plan: Plan, source: Tensor, source_mask: Tensor | None,
                       k: int | None = None) -> Tensor:
    """Greedy search's output (B, L), drafting from `source` (B, S) (real where source_mask is 1).
    The decoding's caches must hold max_length - 1 + k positions."""
    k = DRAFT if k is None else k
    decoding.caches = [Ragged(c.k, c.v) for c in decoding.caches]
    device = source.device
    rows = source.shape[0]
    source_lengths = (source_mask.sum(dim=1) if source_mask is not None
                      else torch.full((rows,), source.shape[1], device=device))
    out = torch.full((rows, plan.max_length + k), pad_id(plan), dtype=torch.long, device=device)
    out[:, 0] = plan.start_id
    alive = torch.arange(rows, device=device)
    lengths = torch.ones(rows, dtype=torch.long, device=device)  # tokens so far; the last is not cached yet
    eos = torch.tensor(plan.eos_ids, dtype=torch.long, device=device)
    processors = build_processors(plan, device)
    longest = 1
    while alive.numel():
        seqs = out[alive]
        drafts, count = draft(seqs, lengths, source, source_lengths, k)
        t = 1 + int(count.max())
        tokens = torch.cat((seqs.gather(1, lengths[:, None] - 1), drafts[:, : t - 1]), dim=1)
        logits = Ragged.verify(decoding, tokens, lengths - 1)
        chosen = _greedy(processors, seqs, lengths, tokens, logits)
        n_new = _accepted(chosen, tokens, count, eos, plan.max_length - lengths)
        keep = torch.arange(t, device=device) < n_new[:, None]
        cols = lengths[:, None] + torch.arange(t, device=device)
        out[alive[:, None].expand_as(cols)[keep], cols[keep]] = chosen[keep]
        lengths = lengths + n_new
        longest = max(longest, int(lengths.max()))
        last = chosen.gather(1, (n_new - 1)[:, None]).squeeze(1)
        going = ~(torch.isin(last, eos) | (lengths >= plan.max_length))
        if not bool(going.all()):
            left = going.nonzero().squeeze(1)
            alive, lengths, source, source_lengths = alive[left], lengths[left], source[left], source_lengths[left]
            if left.numel():
                decoding.keep(left, left)
    return out[:, :longest]


def _greedy(processors, seqs: Tensor, lengths: Tensor, tokens: Tensor, logits: Tensor) -> Tensor:
    """Greedy's pick (N, T) at every query: the argmax of the processed scores, each query seeing
    the row's tokens so far plus the draft tokens before it."""
    n, t, vocab = logits.shape
    if not processors:
        return best(logits)
    width = int(lengths.max()) + t - 1
    grown = seqs[:, :width].clone()
    grown.scatter_(1, lengths[:, None] + torch.arange(t - 1, device=seqs.device), tokens[:, 1:])  # the drafts
    flat = grown.repeat_interleave(t, dim=0)
    flat_lengths = (lengths[:, None] + torch.arange(t, device=seqs.device)).reshape(-1)
    scores = apply(processors, flat, logits.reshape(n * t, vocab), lengths=flat_lengths)
    return best(scores).view(n, t)


def _accepted(chosen: Tensor, tokens: Tensor, count: Tensor, eos: Tensor, room: Tensor) -> Tensor:
    """How many of the pass's picks each row keeps: the drafts greedy agrees with, then greedy's
    own token; no further than the first EOS or the length limit."""
    t = chosen.shape[1]
    steps = torch.arange(t - 1, device=chosen.device)
    agree = (tokens[:, 1:] == chosen[:, :-1]) & (steps < count[:, None])
    n_new = agree.long().cumprod(dim=1).sum(dim=1) + 1
    if eos.numel():
        ends = torch.isin(chosen, eos)
        first_eos = torch.where(ends.any(dim=1), ends.int().argmax(dim=1) + 1, t)
        n_new = torch.minimum(n_new, first_eos)
    return torch.minimum(n_new, room)

