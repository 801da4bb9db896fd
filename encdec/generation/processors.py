"""Next-token score rules (penalties, bans, sampling filters), each a vectorised function of the
sequences so far (N, T) and the scores (N, V). Applied in transformers' order so that results match.

They change `scores` in place (callers pass a fresh tensor): at a vocabulary of 30k and 32 beams
each copy would cost about as much as the rule itself. The rules that read the sequences also take
`lengths` (N,): row i is then seqs[i, :lengths[i]] (speculative search's rows differ in length).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import Tensor

from encdec.generation.settings import Plan

Processor = Callable[[Tensor, Tensor], Tensor]  # (sequences (N, T), scores (N, V)) -> scores
# transformers' options kept in GenerationConfig.extra, applied by `extra_processors`.
RULES = ("bad_words_ids", "forced_bos_token_id", "forced_eos_token_id")


def repetition_penalty(penalty: float, seqs: Tensor, scores: Tensor, lengths: Tensor | None = None) -> Tensor:
    """CTRL's penalty: scores of tokens already in the sequence are divided by `penalty` when
    positive and multiplied by it when negative (both make them less likely)."""
    if lengths is not None:  # past the end: the row's first token again, which changes nothing
        seqs = torch.where(_beyond(seqs, lengths), seqs[:, :1], seqs)
    seen = scores.gather(1, seqs)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return scores.scatter_(1, seqs, seen)


def repeated_ngram_tokens(n: int, seqs: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(rows, tokens): token `tokens[i]` would complete, in row `rows[i]`, an n-gram that row
    already holds."""
    length = seqs.shape[1]
    if length < n:
        empty = seqs.new_empty(0)
        return empty, empty
    grams = seqs.unfold(1, n, 1)  # (N, length - n + 1, n): every n-gram so far
    if lengths is None:
        tail = seqs[:, length - n + 1:]  # the last n - 1 tokens: the prefix of the next n-gram
        match = (grams[:, :, :-1] == tail[:, None, :]).all(dim=-1)
    else:
        at = (lengths[:, None] - n + 1 + torch.arange(n - 1, device=seqs.device)).clamp(min=0)
        match = (grams[:, :, :-1] == seqs.gather(1, at)[:, None, :]).all(dim=-1)
        match &= torch.arange(grams.shape[1], device=seqs.device) <= (lengths - n)[:, None]  # whole n-grams
    rows, starts = match.nonzero(as_tuple=True)
    return rows, grams[rows, starts, -1]


def no_repeat_ngram(n: int, seqs: Tensor, scores: Tensor, lengths: Tensor | None = None) -> Tensor:
    rows, tokens = repeated_ngram_tokens(n, seqs, lengths)
    scores[rows, tokens] = float("-inf")
    return scores


def min_length(length: int, eos_ids: Tensor, seqs: Tensor, scores: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Ban every EOS id while the sequence (start token included) is shorter than `length`."""
    if lengths is not None:
        short = (lengths < length)[:, None] & torch.isin(torch.arange(scores.shape[1], device=scores.device), eos_ids)
        return scores.masked_fill_(short, float("-inf"))
    if seqs.shape[1] >= length:
        return scores
    return scores.index_fill_(1, eos_ids, float("-inf"))


def temperature(value: float, seqs: Tensor, scores: Tensor) -> Tensor:
    return scores.div_(value)


def top_k(k: int, seqs: Tensor, scores: Tensor) -> Tensor:
    """Keep the k best tokens (ties with the k-th kept too)."""
    kth = torch.topk(scores, min(k, scores.shape[1])).values[:, -1:]
    return scores.masked_fill_(scores < kth, float("-inf"))


def top_p(p: float, keep: int, seqs: Tensor, scores: Tensor) -> Tensor:
    """Nucleus filter: drop the least likely tokens whose total probability is <= 1 - p, always
    keeping the `keep` most likely."""
    ascending, order = torch.sort(scores, dim=-1)
    drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - p
    drop[:, -keep:] = False
    return scores.masked_fill_(drop.scatter(1, order, drop), float("-inf"))


def build_processors(plan: Plan, device: torch.device) -> list[Processor]:
    """The rules this plan asks for, in transformers' order: penalties and bans first, then (when
    sampling) temperature, top-k and top-p."""
    out: list[Processor] = []
    if plan.repetition_penalty != 1.0:
        out.append(partial(repetition_penalty, plan.repetition_penalty))
    if plan.no_repeat_ngram_size > 0:
        out.append(partial(no_repeat_ngram, plan.no_repeat_ngram_size))
    if plan.min_length > 1 and plan.eos_ids:
        out.append(partial(min_length, plan.min_length, torch.tensor(plan.eos_ids, device=device)))
    out += extra_processors(plan)  # bad_words_ids, forced_bos/eos_token_id
    if plan.do_sample:
        out += _sampling_filters(plan)
    return out


def extra_processors(plan: Plan) -> list[Processor]:
    """Score rules for RULES in the plan's config (transformers' order: after the length rule)."""
    extra = plan.config.extra
    out = []
    if extra.get("bad_words_ids"):
        words = [list(w) for w in extra["bad_words_ids"] if not (len(w) == 1 and w[0] in plan.eos_ids)]
        out.append(partial(ban_words, words))
    if extra.get("forced_bos_token_id") is not None:
        out.append(partial(force_at, 1, [extra["forced_bos_token_id"]]))
    if extra.get("forced_eos_token_id") is not None:
        eos = extra["forced_eos_token_id"]
        out.append(partial(force_at, plan.max_length - 1, eos if isinstance(eos, list) else [eos]))
    return out


def ban_words(words: list[list[int]], seqs: Tensor, scores: Tensor) -> Tensor:
    """A word's last token is banned where the sequence ends with the word's other tokens."""
    for word in words:
        *prefix, last = word
        if not prefix:
            scores[:, last] = float("-inf")
        elif seqs.shape[1] >= len(prefix):
            hit = (seqs[:, seqs.shape[1] - len(prefix):] == torch.tensor(prefix, device=seqs.device)).all(1)
            scores[hit, last] = float("-inf")
    return scores


def force_at(length: int, tokens: list[int], seqs: Tensor, scores: Tensor) -> Tensor:
    """When the sequence (start token included) is `length` long, only `tokens` may come next."""
    if seqs.shape[1] == length:
        scores.fill_(float("-inf"))
        scores[:, tokens] = 0.0
    return scores


def _sampling_filters(plan: Plan) -> list[Processor]:
    # Beam sampling must keep a non-EOS candidate alive for each beam.
    keep = len(plan.eos_ids) + 1 if plan.num_beams > 1 else 1
    out: list[Processor] = []
    if plan.temperature != 1.0:
        out.append(partial(temperature, plan.temperature))
    if plan.top_k:
        out.append(partial(top_k, max(plan.top_k, keep)))
    if plan.top_p < 1.0:
        out.append(partial(top_p, plan.top_p, keep))
    return out


def apply(processors: list[Processor], seqs: Tensor, scores: Tensor, lengths: Tensor | None = None) -> Tensor:
    """The rules in order; with `lengths`, row i is seqs[i, :lengths[i]] (greedy rules only)."""
    for processor in processors:
        scores = processor(seqs, scores) if lengths is None else processor(seqs, scores, lengths=lengths)
    return scores


def _beyond(seqs: Tensor, lengths: Tensor) -> Tensor:
    return torch.arange(seqs.shape[1], device=seqs.device) >= lengths[:, None]

