"""From text records to padded batches: tokenisation, length grouping and a resumable stream.

Training reads a (possibly endless) stream. To cut padding, `buffer_size` records are read at a
time, sorted by length with random tie-breaks and cut into batches whose order is shuffled. Every
batch carries the stream `position` after it: where its buffer started in the source (the
`datasets` state dict), which buffer and how many of its batches are done. Re-reading that one
buffer from its start reproduces the same batches, so a resumed run continues with exactly the
next unseen batch; buffers are not saved, only where they started.
"""

from __future__ import annotations

import logging
import random
import signal
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from encdec.base.errors import UsageError, not_text
from encdec.tokenization.tokenizer import Tokenizer

logger = logging.getLogger("encdec")
LABEL_PAD = -100  # ignored by the loss; never a real token id


@dataclass
class Columns:
    """Names of the text, summary and id columns of a source (id may be None: row number)."""

    text: str = "article"
    summary: str = "highlights"
    id: str | None = "id"


@dataclass
class PairEncoder:
    """Tokenise (source, summary) pairs the way the model is trained: sources with the encoder
    tokenizer's special tokens; labels are the summary's tokens plus the decoder's EOS, with no
    start token (the model prepends decoder_start_token_id when it shifts labels right)."""

    tokenizer: Tokenizer
    decoder_tokenizer: Tokenizer
    max_source_length: int
    max_target_length: int
    eos_token_id: int

    def __post_init__(self) -> None:
        if self.max_target_length < 2:
            raise ValueError(f"max_target_length={self.max_target_length}: need room for a token and EOS.")

    def encode(self, texts: list[str], summaries: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        sources = self.tokenizer(
            texts, max_length=self.max_source_length, truncation=True, padding=False, return_tensors=None
        )["input_ids"]
        targets = self.decoder_tokenizer(
            summaries, max_length=self.max_target_length - 1, truncation=True, padding=False,
            add_special_tokens=False, return_tensors=None,
        )["input_ids"]
        return sources, [t + [self.eos_token_id] for t in targets]

    def cut(self, texts: list[str], sources: list[list[int]]) -> list[bool]:
        """Which of `encode`'s sources lost tokens to max_source_length: only those that fill it are
        tokenised again, one token longer."""
        full = [i for i, source in enumerate(sources) if len(source) >= self.max_source_length]
        flags = [False] * len(sources)
        if full:
            longer = self.tokenizer([texts[i] for i in full], max_length=self.max_source_length + 1, truncation=True,
                                    padding=False, return_tensors=None)["input_ids"]
            for i, ids in zip(full, longer):
                flags[i] = len(ids) > self.max_source_length
        return flags


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def _mask(rows: list[list[int]]) -> torch.Tensor:
    """1 over each row's tokens, 0 over its padding (from lengths, not from the pad id)."""
    return _pad([[1] * len(r) for r in rows], 0)


def collate(sources: list[list[int]], labels: list[list[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest row of this batch (dynamic padding); labels with -100, never pad."""
    input_ids = _pad(sources, pad_token_id)
    label_ids = _pad(labels, LABEL_PAD)
    # Decoder position t sees labels[t-1]: real while that label is real; position 0 is the start
    # token. Built here because GPT-2's pad == start would hide the start token from the model.
    decoder_mask = torch.ones_like(label_ids)
    decoder_mask[:, 1:] = label_ids[:, :-1].ne(LABEL_PAD)
    return {
        "input_ids": input_ids,
        "attention_mask": _mask(sources),
        "labels": label_ids,
        "decoder_attention_mask": decoder_mask,
    }


def _by_length(lengths: list[int], rng: random.Random) -> list[int]:
    """Indices sorted by length; equal lengths in random order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order.sort(key=lambda i: lengths[i])  # stable: the shuffle decides among equal lengths
    return order


def length_grouped(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Indices cut into batches of similar length, in random order; equal lengths tie randomly."""
    order = _by_length(lengths, rng)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def cut_by_budget(order: list[int], source_lengths: list[int], target_lengths: list[int], max_tokens: int | None,
                  max_rows: int | None = None) -> list[list[int]]:
    """`order` cut into consecutive batches of at most max_rows rows and, with max_tokens, at most
    rows x (longest source + longest target) padded tokens; one row always fits."""
    batches: list[list[int]] = []
    batch: list[int] = []
    longest_source = longest_target = 0
    for i in order:
        source, target = max(longest_source, source_lengths[i]), max(longest_target, target_lengths[i])
        over_budget = max_tokens is not None and (len(batch) + 1) * (source + target) > max_tokens
        if batch and (len(batch) == max_rows or over_budget):
            batches.append(batch)
            batch, source, target = [], source_lengths[i], target_lengths[i]
        batch.append(i)
        longest_source, longest_target = source, target
    if batch:
        batches.append(batch)
    return batches


def token_budget_grouped(
    source_lengths: list[int], target_lengths: list[int], max_tokens: int, rng: random.Random
) -> list[list[int]]:
    """Like `length_grouped`, but each batch takes examples (in length order) while its padded
    source + target tokens, rows x (longest source + longest target), stay within max_tokens
    (fairseq's --max-tokens): short examples make big batches, long ones small, memory stays flat."""
    order = _by_length([s + t for s, t in zip(source_lengths, target_lengths)], rng)
    batches = cut_by_budget(order, source_lengths, target_lengths, max_tokens)
    rng.shuffle(batches)
    return batches


class EmptyExamples:
    """Counts records whose text or summary is empty, missing or not text (a number, a list);
    skips them or raises. Messages name the record by file and line when `locate(record)` knows
    them, and by id where there is an id column. While `counting` is off (passes after the first
    over the same records) skipped records are not counted again."""

    def __init__(self, columns: Columns, on_empty: str = "skip",
                 locate: Callable[[dict[str, Any]], str | None] | None = None) -> None:
        if on_empty not in ("skip", "error"):
            raise UsageError(f"data.on_empty={on_empty!r}: use skip or error.")
        self.columns, self.on_empty, self.locate = columns, on_empty, locate
        self.count, self.counting, self._logged = 0, True, False

    def usable(self, record: dict[str, Any]) -> bool:
        problems = [p for p in (self._problem(record, c) for c in (self.columns.text, self.columns.summary)) if p]
        if not problems:
            return True
        if self.on_empty == "error":
            raise UsageError(
                f"{self.describe(record)}: {' and '.join(problems)}. Clean the data, or set data.on_empty=skip to "
                "skip such records (they are counted and logged)."
            )
        if self.counting:
            self.count += 1
        if not self._logged:
            self._logged = True
            logger.warning("Skipping records whose text or summary is empty or not text (first: %s: %s); "
                           "counted in data/skipped.", self.describe(record), " and ".join(problems))
        return False

    def describe(self, record: dict[str, Any]) -> str:
        """'FILE line N', 'FILE line N (id 'x')', "Record 'x'", or what is known without either."""
        place = self.locate(record) if self.locate is not None else None
        rid = record.get(self.columns.id) if self.columns.id else None
        if place is not None:
            return place if rid is None else f"{place} (id {rid!r})"
        if rid is not None:
            return f"Record {rid!r}"
        return "A record (no id column, no file position; set data.id_column to name records)"

    @staticmethod
    def _problem(record: dict[str, Any], column: str) -> str | None:
        value = record.get(column)
        if not_text(column, value):
            return not_text(column, value)
        return None if value and value.strip() else f"column {column!r} is empty or missing"


def take_usable(records: Iterator[dict], n: int, empties: EmptyExamples) -> list[dict]:
    """The next n records that have text and summary (fewer at the end of the stream)."""
    out = []
    for record in records:
        if empties.usable(record):
            out.append(record)
            if len(out) == n:
                break
    return out


def record_ids(records: list[dict], columns: Columns, offset: int) -> list[str]:
    if columns.id is None:
        return [str(offset + i) for i in range(len(records))]
    return [str(r[columns.id]) for r in records]


class ResumableBatches(IterableDataset):
    """Endless training batches over a `datasets.IterableDataset` (one pass per epoch), each with
    its stream position; `resume` (positions keyed by worker id) restarts right after them."""

    def __init__(
        self,
        open_stream: Callable[[], Any],
        encoder: PairEncoder,
        columns: Columns,
        batch_size: int,
        buffer_size: int,
        seed: int = 0,
        on_empty: str = "skip",
        resume: dict[int, dict] | None = None,
        max_tokens: int | None = None,
        locate: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> None:
        self.open_stream, self.encoder, self.columns, self.locate = open_stream, encoder, columns, locate
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.buffer_size = max(batch_size, buffer_size // batch_size * batch_size)  # whole batches
        self.seed, self.on_empty, self.resume = seed, on_empty, resume or {}

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None:  # Ctrl-C reaches the whole process group: the main process decides
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)
        stream = self.open_stream()
        if info is not None and info.num_workers > stream.n_shards:
            raise ValueError(
                f"data.num_workers={info.num_workers} but the training source has {stream.n_shards} shards; "
                "each worker reads whole shards, so use at most that many workers."
            )
        fresh = stream.state_dict()
        empties = EmptyExamples(self.columns, self.on_empty, self.locate)
        position = self.resume.get(worker)
        empties.count = position["skipped"] if position else 0
        epoch = position["epoch"] if position else 0
        while True:
            produced = yield from self._epoch(stream, fresh, epoch, position, empties, worker)
            if not produced and position is None:
                raise ValueError(
                    f"The training stream gave no usable records ({empties.count} skipped as empty or not text); "
                    "check the data files and the text/summary column names."
                )
            position, epoch = None, epoch + 1

    def _epoch(self, stream: Any, fresh: dict, epoch: int, position: dict | None, empties: EmptyExamples,
               worker: int) -> Iterator[dict]:
        """One pass over the stream; returns whether it produced any batch. Records skipped in the
        first pass are skipped again in later ones but counted once."""
        empties.counting = epoch == 0
        stream.load_state_dict(position["source"] if position else fresh)
        records = iter(stream)
        buffer, done = (position["buffer"], position["batches"]) if position else (0, 0)
        produced = False
        while True:
            source_state = stream.state_dict()
            chunk = take_usable(records, self.buffer_size, empties)
            if not chunk:
                return produced
            where = {"epoch": epoch, "buffer": buffer, "source": source_state, "worker": worker}
            for i, batch in enumerate(self._buffer_batches(chunk, epoch, buffer)):
                if i >= done:
                    produced = True
                    yield {**batch, "position": {**where, "batches": i + 1, "skipped": empties.count}}
            buffer, done = buffer + 1, 0

    def _buffer_batches(self, chunk: list[dict], epoch: int, buffer: int) -> Iterator[dict]:
        """The same chunk, epoch and buffer number always give the same batches in the same order."""
        cols = self.columns
        texts = [r[cols.text] for r in chunk]
        sources, labels = self.encoder.encode(texts, [r[cols.summary] for r in chunk])
        cut = self.encoder.cut(texts, sources)
        ids = record_ids(chunk, cols, offset=buffer * self.buffer_size)
        rng = random.Random(f"{self.seed}-{epoch}-{buffer}")
        if self.max_tokens:
            groups = token_budget_grouped([len(s) for s in sources], [len(t) for t in labels], self.max_tokens, rng)
        else:
            groups = length_grouped([len(s) + len(t) for s, t in zip(sources, labels)], self.batch_size, rng)
        pad = self.encoder.tokenizer.pad_token_id
        for group in groups:
            batch = collate([sources[i] for i in group], [labels[i] for i in group], pad)
            yield {**batch, "ids": [ids[i] for i in group], "truncated": sum(cut[i] for i in group)}


def rotate_rounds(batches: Iterator[dict], num_workers: int, first: int) -> Iterator[dict]:
    """Reorder a DataLoader's round-robin (worker 0, 1, ..., n-1, 0, ...) to start at worker
    `first`, as the interrupted run would have continued: each round's batches from workers
    before `first` move to the end of that round."""
    held: list[dict] = []
    for batch in batches:
        worker = batch["position"]["worker"]
        if worker < first:
            held.append(batch)
        else:
            yield batch
        if worker == num_workers - 1:
            yield from held
            held = []
    yield from held


class FixedBatches(IterableDataset):
    """Validation batches built once; iterable so that Lightning adds no distributed sampler (each
    rank already holds its own, equally long share)."""

    def __init__(self, batches: list[dict]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[dict]:
        return iter(self.batches)

    def __len__(self) -> int:  # progress bars show "3/6", not "3/--"
        return len(self.batches)


def evaluation_batches(
    records: list[dict], encoder: PairEncoder, columns: Columns, batch_size: int, max_tokens: int | None = None,
    min_batches: int = 0,
) -> list[dict]:
    """Batches sorted by source length (generation wastes least on padding), with raw references.
    At most `batch_size` rows each and, with `max_tokens`, at most that many padded source + target
    tokens (as training batches): long documents make small batches, so generating over 8k-token
    sources fits where training did, and short ones still fill `batch_size` rows. `min_batches`:
    the largest batches are halved until there are that many (every DDP rank validates as many
    batches, so no rank waits on another's collective)."""
    sources, labels = encoder.encode([r[columns.text] for r in records], [r[columns.summary] for r in records])
    ids = record_ids(records, columns, offset=0)
    groups = _evaluation_groups(sources, labels, batch_size, max_tokens)
    while len(groups) < min(min_batches, len(records)):
        big = max(range(len(groups)), key=lambda g: len(groups[g]))
        half = len(groups[big]) // 2
        groups[big : big + 1] = [groups[big][:half], groups[big][half:]]
    batches = []
    for group in groups:
        batch = collate([sources[i] for i in group], [labels[i] for i in group], encoder.tokenizer.pad_token_id)
        batch["ids"] = [ids[i] for i in group]
        batch["references"] = [records[i][columns.summary] for i in group]
        batches.append(batch)
    return batches


def count_evaluation_batches(records: list[dict], encoder: PairEncoder, columns: Columns, batch_size: int,
                             max_tokens: int | None = None) -> int:
    """How many batches `evaluation_batches` cuts these records into (before `min_batches`)."""
    sources, labels = encoder.encode([r[columns.text] for r in records], [r[columns.summary] for r in records])
    return len(_evaluation_groups(sources, labels, batch_size, max_tokens))


def _evaluation_groups(sources: list[list[int]], labels: list[list[int]], batch_size: int,
                       max_tokens: int | None) -> list[list[int]]:
    """Indices by source length, cut into consecutive groups of at most batch_size rows and, with
    max_tokens, at most rows x (longest source + longest target) tokens; one row always fits."""
    source_lengths, target_lengths = [len(s) for s in sources], [len(t) for t in labels]
    order = sorted(range(len(sources)), key=lambda i: source_lengths[i])
    return cut_by_budget(order, source_lengths, target_lengths, max_tokens, batch_size)
