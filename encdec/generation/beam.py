"""Beam search with transformers' rules, vectorised over the batch.

Per step and source: the 2 x num_beams best continuations over all beams (more with several EOS
ids); the best num_beams that do not end become the new beams; those among the top num_beams
that end (EOS, or the length limit) are finished hypotheses scored sum_logprobs / length **
length_penalty, length counting generated tokens with the EOS. A source is done when
`early_stopping=True`: num_beams hypotheses are finished; otherwise when no running beam can beat
the worst finished one, estimated at the current length (False) or at max_length ("never", for a
positive length_penalty). Done sources leave the batch, unless a `SearchRecord` asks for
transformers' per-step scores: those have a row for every source at every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from encdec.generation.processors import apply, build_processors
from encdec.generation.settings import Plan
from encdec.generation.state import Decoding

NEG = -1.0e9  # the "never pick this" offset transformers adds; kept identical so ties break alike


@dataclass
class Beams:
    """State of the sources still searching; tensors are (b, K, ...) for b sources, K beams."""

    ids: Tensor  # (b,) which input each source is
    seqs: Tensor  # (b, K, L) running sequences
    scores: Tensor  # (b, K) their summed log-probs
    done_seqs: Tensor  # (b, K) best finished hypotheses, best first
    done_scores: Tensor
    done_flags: Tensor  # (b, K) whether that slot holds a real hypothesis
    done_lengths: Tensor  # (b, K) generated tokens of each finished hypothesis
    improvable: Tensor  # (b, 1) a running beam may still beat a finished one
    paths: Tensor | None = None  # (b, K, L - 1) with a SearchRecord: each token's parent row, -1 unset
    done_paths: Tensor | None = None

    @classmethod
    def start(cls, batch: int, plan: Plan, fill: int, device: torch.device, paths: bool = False) -> Beams:
        k, length = plan.num_beams, plan.max_length
        seqs = torch.full((batch, k, length), fill, dtype=torch.long, device=device)
        seqs[:, :, 0] = plan.start_id
        scores = torch.zeros(batch, k, device=device)
        scores[:, 1:] = NEG  # only beam 0 is live at the first step
        return cls(
            ids=torch.arange(batch, device=device), seqs=seqs, scores=scores, done_seqs=seqs.clone(),
            done_scores=torch.full((batch, k), NEG, device=device),
            done_flags=torch.zeros(batch, k, dtype=torch.bool, device=device),
            done_lengths=torch.zeros(batch, k, dtype=torch.long, device=device),
            improvable=torch.ones(batch, 1, dtype=torch.bool, device=device),
            paths=torch.full((batch, k, length - 1), -1, dtype=torch.int32, device=device) if paths else None,
            done_paths=torch.full((batch, k, length - 1), -1, dtype=torch.int32, device=device) if paths else None,
        )

    def select(self, keep: Tensor) -> None:
        for f in fields(self):
            if getattr(self, f.name) is not None:
                setattr(self, f.name, getattr(self, f.name)[keep])


@dataclass
class SearchRecord:
    """What generate() reports besides sequences (return_dict_in_generate): the settings the search
    ran with and, from beam search, each step's processed log-probs (rows for every source and beam),
    each returned hypothesis's score, and the row (source * num_beams + beam) each of its tokens came
    from, -1 after its end."""

    plan: Any = None
    scores: list[Tensor] = field(default_factory=list)
    sequences_scores: Tensor | None = None
    beam_indices: Tensor | None = None


def beam_search(decoding: Decoding, plan: Plan, generator: torch.Generator | None = None,
                record: SearchRecord | None = None) -> Tensor:
    """(B * num_return_sequences, L) ids: each source's best hypotheses, best first."""
    device = decoding.caches[0].k.device
    beams = Beams.start(decoding.sources, plan, _fill_value(plan), device, paths=record is not None)
    results = Beams.start(decoding.sources, plan, _fill_value(plan), device, paths=record is not None)
    eos = torch.tensor(plan.eos_ids, dtype=torch.long, device=device)
    processors = build_processors(plan, device)
    length = 1
    while beams.ids.numel():
        b, k = beams.ids.numel(), plan.num_beams
        log_probs = torch.log_softmax(decoding.step(beams.seqs[:, :, length - 1].reshape(b * k, 1)), dim=-1)
        log_probs = apply(processors, beams.seqs[:, :, :length].reshape(b * k, length), log_probs)
        if record is not None:
            record.scores.append(log_probs.clone())
        parents = _advance(beams, log_probs, length, eos, plan, generator)
        length += 1
        _update_improvable(beams, length, plan)
        done = _done(beams, plan) if length < plan.max_length else torch.ones_like(beams.ids, dtype=torch.bool)
        if record is not None and not done.all():
            done = torch.zeros_like(done)  # every source steps until all are done, as in transformers
        if done.any():
            _retire(beams, done, results)
        _follow(decoding, beams, parents, done)
    return _output(results, plan, record)


def _done(beams: Beams, plan: Plan) -> Tensor:
    """(b,) sources whose finished hypotheses can no longer change."""
    full = beams.done_flags.all(dim=1) & (plan.early_stopping is True)
    return ~beams.improvable[:, 0] | full


def _follow(decoding: Decoding, beams: Beams, parents: Tensor, done: Tensor) -> None:
    """Give each new beam its parent's cache; sources that are done leave the batch."""
    b, k = parents.shape
    rows = (torch.arange(b, device=parents.device)[:, None] * k + parents).reshape(-1)
    if not done.any():
        decoding.reorder(rows)
        return
    keep = done.logical_not().nonzero().squeeze(1)
    beams.select(keep)
    if keep.numel():
        decoding.keep(rows.view(b, k)[keep].reshape(-1), keep)


def _advance(beams: Beams, log_probs: Tensor, length: int, eos: Tensor, plan: Plan, generator) -> Tensor:
    """One step: pick continuations, move the running beams, record finished hypotheses.
    Returns each new beam's parent beam (b, K)."""
    b, k, vocab = beams.ids.numel(), plan.num_beams, log_probs.shape[-1]
    total = log_probs.view(b, k, vocab).add_(beams.scores[:, :, None]).view(b, k * vocab)
    width = max(2, 1 + eos.numel()) * k
    values, index = _top_candidates(total, width, plan.do_sample, generator)
    parent, token = index // vocab, index % vocab
    sources = torch.arange(b, device=index.device)[:, None]
    candidates = beams.seqs[sources, parent]  # (b, width, L)
    candidates[:, :, length] = token
    paths = None
    if beams.paths is not None:
        paths = beams.paths[sources, parent]
        paths[:, :, length - 1] = (beams.ids[:, None] * k + parent).to(paths.dtype)
    ends = torch.isin(token, eos) | (length + 1 >= plan.max_length)
    running = values + ends.to(values.dtype) * NEG
    best = running.topk(k).indices
    beams.seqs = _take(candidates, best)
    beams.scores = running.gather(1, best)
    if paths is not None:
        beams.paths = _take(paths, best)
    _record_finished(beams, candidates, paths, values, ends, length, plan)
    return parent.gather(1, best)


def _take(rows: Tensor, index: Tensor) -> Tensor:
    """rows (b, n, L) -> (b, len(index), L): the rows `index` names, per source."""
    return rows.gather(1, index[:, :, None].expand(-1, -1, rows.shape[2]))


def _top_candidates(total: Tensor, width: int, sample: bool, generator) -> tuple[Tensor, Tensor]:
    """The `width` best (or sampled, then sorted) continuations: values and flat indices."""
    if not sample:
        return total.topk(width)
    index = torch.multinomial(total.softmax(dim=-1), width, generator=generator)
    values, order = total.gather(1, index).sort(dim=-1, descending=True)
    return values, index.gather(1, order)


def _record_finished(beams: Beams, candidates: Tensor, paths: Tensor | None, values: Tensor, ends: Tensor,
                     length: int, plan) -> None:
    """Merge this step's ending candidates (only those ranked in the top K) into the finished
    hypotheses, keeping the K best. Sources that cannot take more are masked with NEG."""
    k = plan.num_beams
    new = ends.clone()
    new[:, k:] = False
    scores = values / (length**plan.length_penalty)  # `length` generated tokens, the EOS included
    full = beams.done_flags.all(dim=1, keepdim=True) & (plan.early_stopping is True)
    scores = scores + full.to(scores.dtype) * NEG
    scores = scores + beams.improvable.logical_not().to(scores.dtype) * NEG
    scores = scores + new.logical_not() * NEG
    merged = torch.cat((beams.done_scores, scores), dim=1)
    best = merged.topk(k).indices
    lengths = torch.full_like(new, length, dtype=torch.long)
    beams.done_scores = merged.gather(1, best)
    beams.done_flags = torch.cat((beams.done_flags, new), dim=1).gather(1, best)
    beams.done_lengths = torch.cat((beams.done_lengths, lengths), dim=1).gather(1, best)
    beams.done_seqs = _take(torch.cat((beams.done_seqs, candidates), dim=1), best)
    if paths is not None:
        beams.done_paths = _take(torch.cat((beams.done_paths, paths), dim=1), best)


def _update_improvable(beams: Beams, length: int, plan: Plan) -> None:
    """Can the best running beam still beat the worst finished hypothesis? Its final length is
    guessed as the current one, or as max_length with early_stopping="never" and a positive
    length_penalty."""
    lp = plan.length_penalty
    guess = plan.max_length - 1 if plan.early_stopping == "never" and lp > 0.0 else length - 1
    best_running = beams.scores[:, :1] / (guess**lp)
    worst_done = torch.where(beams.done_flags, beams.done_scores.min(dim=1, keepdim=True).values, NEG)
    beams.improvable &= (best_running > worst_done).any(dim=-1, keepdim=True)


def _retire(beams: Beams, which: Tensor, results: Beams) -> None:
    """Copy the finished hypotheses of sources that are done into the results (`done_*` fields)."""
    rows = beams.ids[which]
    for name in ("done_seqs", "done_scores", "done_lengths", "done_paths"):
        if getattr(results, name) is not None:
            getattr(results, name)[rows] = getattr(beams, name)[which]


def _output(results: Beams, plan: Plan, record: SearchRecord | None) -> Tensor:
    """The num_return_sequences best of each source, cut to the longest one returned."""
    n = plan.num_return_sequences
    longest = int(results.done_lengths[:, :n].max())
    if record is not None:
        record.sequences_scores = results.done_scores[:, :n].reshape(-1)
        record.beam_indices = results.done_paths[:, :n].reshape(-1, results.done_paths.shape[2])[:, :longest]
    return results.done_seqs[:, :n].reshape(-1, results.done_seqs.shape[2])[:, : 1 + longest]


def _fill_value(plan: Plan) -> int:
    """What follows EOS in the output: transformers' beam search fills with the pad id, but with
    the first EOS id when the pad id is 0 (its `pad or eos` test reads 0 as unset), and -1 when
    there is no EOS id."""
    if not plan.eos_ids:
        return -1
    return plan.pad_id or plan.eos_ids[0]
