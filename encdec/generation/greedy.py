"""Greedy search, and sampling (do_sample=True), on the cached decoder state."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from encdec.generation.processors import apply, build_processors
from encdec.generation.settings import Plan
from encdec.generation.state import Decoding


def greedy_search(decoding: Decoding, plan: Plan, generator: torch.Generator | None = None,
                  streamer: Any = None) -> Tensor:
    """Greedy search, or sampling with do_sample=True: (B * num_return_sequences, L) ids. A row
    that emits EOS leaves the batch; its remaining positions hold the pad id."""
    if plan.num_return_sequences > 1:
        decoding.repeat_sources(plan.num_return_sequences)
    device = decoding.caches[0].k.device
    rows = decoding.sources
    out = torch.full((rows, plan.max_length), pad_id(plan), dtype=torch.long, device=device)
    out[:, 0] = plan.start_id
    alive = torch.arange(rows, device=device)  # rows of `out` still generating
    eos = torch.tensor(plan.eos_ids, dtype=torch.long, device=device)
    processors = build_processors(plan, device)
    tokens, length = out[:, :1], 1
    if streamer is not None:
        streamer.put(out[:, :1].cpu())
    while length < plan.max_length:
        scores = apply(processors, out[alive, :length], decoding.step(tokens))
        chosen = _sample(scores, generator) if plan.do_sample else best(scores)
        out[alive, length] = chosen
        if streamer is not None:
            streamer.put(out[:, length].cpu())
        length += 1
        if eos.numel():
            left = torch.isin(chosen, eos).logical_not_().nonzero().squeeze(1)
            if left.numel() == 0:
                break
            if left.numel() < alive.numel():
                alive, chosen = alive[left], chosen[left]
                decoding.keep(left, left)
        tokens = chosen[:, None]
    if streamer is not None:
        streamer.end()
    return out[:, :length]


def best(scores: Tensor) -> Tensor:
    """The first highest-scoring id of each row, as argmax picks it; `max` finds it about 3x faster
    over a 30k vocabulary on CPU."""
    return scores.max(dim=-1).indices


def _sample(scores: Tensor, generator: torch.Generator | None) -> Tensor:
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def pad_id(plan: Plan) -> int:
    """Finished rows hold the pad id, or 0 when the model has none (as transformers pads)."""
    return plan.pad_id if plan.pad_id is not None else 0
