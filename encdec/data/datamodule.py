"""Seq2SeqDataModule: text pairs from the Hub (streamed), local files or the bundled sample set,
tokenised into length-grouped batches, split across DDP ranks, resumable mid-epoch.

Training data is an endless stream (one pass per epoch), so runs are sized in steps
(`trainer.max_steps`) and ranks never wait on each other at an epoch end. Validation is a fixed
number of records per rank, the same on every rank, so DDP cannot hang in validation either.
"""

from __future__ import annotations

import copy
import logging
import os
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader

from encdec.base.errors import UsageError
from encdec.base.ranks import rank_and_world
from encdec.data.batching import (
    Columns,
    EmptyExamples,
    FixedBatches,
    PairEncoder,
    ResumableBatches,
    count_evaluation_batches,
    evaluation_batches,
    rotate_rounds,
    take_usable,
)
from encdec.data.files import ROW_COLUMN, expand_patterns, file_format, find_bad_json_line, record_place
from encdec.tokenization.tokenizer import Tokenizer

logger = logging.getLogger("encdec")


class HubSource:
    """A dataset on the Hugging Face Hub, streamed by default (nothing is downloaded up front);
    `path` may also be a local copy in the Hub's layout or a repo id with a registered mirror."""

    def __init__(self, path: str, name: str | None = None, streaming: bool = True, num_shards: int = 8) -> None:
        self.path, self.name, self.streaming, self.num_shards = path, name, streaming, num_shards

    def open(self, split: str) -> Any:
        import datasets

        from encdec.base.hub import dataset_location

        try:
            ds = datasets.load_dataset(dataset_location(self.path), self.name, split=split, streaming=self.streaming)
        except ConnectionError as exc:
            raise ConnectionError(self._offline_help(exc)) from exc
        return ds if self.streaming else ds.to_iterable_dataset(num_shards=self.num_shards)

    def _offline_help(self, exc: Exception) -> str:
        return (
            f"Cannot reach the Hugging Face Hub for dataset {self.path!r} ({exc}). Streaming needs network "
            "access; offline mode (HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1) or no network rules it out. "
            "Train on local files instead: data=local data.source.files.train=PATH "
            "data.source.files.validation=PATH (json, jsonl, csv or parquet), or on the bundled synthetic "
            "set: data=sample. If the dataset is already in your datasets cache, data.source.streaming=false "
            "reads it from there."
        )

    def __repr__(self) -> str:
        return f"hub:{self.path}" + (f"/{self.name}" if self.name else "")


class LocalSource:
    """json/jsonl/csv/parquet files per split, read through `datasets` (Arrow, memory-mapped) and
    cut into `num_shards` shards so ranks and workers can share them out."""

    def __init__(self, files: dict[str, Any], num_shards: int = 8) -> None:
        self.files = {split: _as_list(paths) for split, paths in dict(files).items() if paths}
        self.num_shards = num_shards

    def open(self, split: str) -> Any:
        """The split as a stream of records, each with its index over the split's files (ROW_COLUMN)."""
        import datasets
        import numpy as np

        paths = expand_patterns(self._paths(split))
        if not paths:
            raise UsageError(f"data.source.files.{split}: {self.files[split]} matches no file.")
        builder = file_format(paths)
        try:
            ds = datasets.load_dataset(builder, data_files={split: paths}, split=split)
        except Exception as exc:  # name the file and line `datasets` could not read
            if builder == "json":
                find_bad_json_line(paths)
            raise UsageError(
                f"Cannot read the {split!r} files {paths} as one table: {root_cause(exc)}. Every record needs "
                "the same kind of value in a column (text in the text and summary columns)."
            ) from exc
        ds = ds.add_column(ROW_COLUMN, np.arange(len(ds)))
        return ds.to_iterable_dataset(num_shards=max(1, min(self.num_shards, len(ds))))

    def locate(self, split: str, record: dict[str, Any]) -> str | None:
        """Where a record of `split` is ("FILE line N"), for messages about it."""
        row = record.get(ROW_COLUMN)
        return None if row is None else record_place(expand_patterns(self._paths(split)), int(row))

    def _paths(self, split: str) -> list[str]:
        if split not in self.files:
            raise UsageError(f"No files for split {split!r}: set data.source.files.{split}=PATH "
                             f"(it has {sorted(self.files)}).")
        paths = [str(Path(p).expanduser()) for p in self.files[split]]
        missing = [p for p in paths if not any(c in p for c in "*?[") and not os.path.exists(p)]
        if missing:
            raise UsageError(f"data.source.files.{split}: {', '.join(missing)} does not exist.")
        if all(os.path.isfile(p) and os.path.getsize(p) == 0 for p in paths):
            raise UsageError(f"Split {split!r} has no examples: its files {paths} are empty.")
        return paths

    def __repr__(self) -> str:
        return f"local:{self.files}"


class SampleSource(LocalSource):
    """The synthetic news set of `encdec.data.sample_data`, generated once into a cache folder."""

    def __init__(self, cache_dir: str, n_train: int = 2000, n_validation: int = 100, n_test: int = 100,
                 seed: int = 0, num_shards: int = 8) -> None:
        from encdec.data.sample_data import write_sample_dataset

        paths = write_sample_dataset(
            Path(cache_dir).expanduser(), n_train=n_train, n_validation=n_validation, n_test=n_test, seed=seed
        )
        super().__init__({split: [str(p)] for split, p in paths.items()}, num_shards)


def root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return f"{type(exc).__name__}: {exc}"


def _as_list(paths: Any) -> list[str]:
    return [str(paths)] if isinstance(paths, (str, os.PathLike)) else [str(p) for p in paths]


def check_columns(ds: Any, columns: Columns, where: str) -> None:
    """Fail before training when a named column is absent, listing the columns that exist."""
    present = ds.column_names
    if present is None:  # streamed without declared features: look at the first record
        present = list(next(iter(ds)).keys())
    present = [c for c in present if c != ROW_COLUMN]
    wanted = {"text_column": columns.text, "summary_column": columns.summary, "id_column": columns.id}
    missing = {k: v for k, v in wanted.items() if v is not None and v not in present}
    if missing:
        fix = " ".join(f"data.{k}=<column>" for k in missing)
        raise UsageError(
            f"{where} has no column {', '.join(map(repr, missing.values()))}; its columns are {present}. "
            f"Name the right ones with {fix}" + (" (id_column may be null)." if "id_column" in missing else ".")
        )


class ResumableLoader(DataLoader):
    """A DataLoader whose worker round-robin starts at `first_worker`, so that with several
    workers a resumed run takes batches in the order the interrupted run would have."""

    first_worker = 0

    def __iter__(self) -> Any:
        batches = super().__iter__()
        if self.num_workers <= 1 or self.first_worker == 0:
            return batches
        return rotate_rounds(batches, self.num_workers, self.first_worker)


class Seq2SeqDataModule(LightningDataModule):
    """Batches for `Seq2SeqModule`; `position` bookkeeping makes mid-epoch checkpoints resumable."""

    def __init__(
        self,
        source: Any,
        tokenizer: Tokenizer,
        decoder_tokenizer: Tokenizer | None = None,
        eos_token_id: int | None = None,
        text_column: str = "article",
        summary_column: str = "highlights",
        id_column: str | None = "id",
        train_split: str = "train",
        val_split: str = "validation",
        max_source_length: int = 512,
        max_target_length: int = 128,
        batch_size: int = 16,
        max_tokens: int | None = None,
        eval_batch_size: int | None = None,
        buffer_size: int = 1024,
        val_examples: int = 64,
        num_workers: int = 0,
        on_empty: str = "skip",
        seed: int = 0,
    ) -> None:
        super().__init__()
        decoder_tokenizer = decoder_tokenizer or tokenizer
        eos = next((i for i in (eos_token_id, decoder_tokenizer.eos_token_id, decoder_tokenizer.sep_token_id)
                    if i is not None), None)  # BERT vocabularies end sequences with [SEP]
        if eos is None:
            raise ValueError("The decoder tokenizer has no EOS or SEP token; pass eos_token_id (model.config's).")
        self.source = source
        self.encoder = PairEncoder(tokenizer, decoder_tokenizer, max_source_length, max_target_length, int(eos))
        self.columns = Columns(text_column, summary_column, id_column)
        self.splits = {"train": train_split, "validation": val_split}
        if max_tokens is not None and max_tokens < max_source_length + max_target_length:
            raise ValueError(
                f"data.max_tokens={max_tokens} is below max_source_length + max_target_length "
                f"({max_source_length} + {max_target_length}): the longest example would not fit in a batch. "
                "Raise data.max_tokens or lower the lengths."
            )
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.eval_batch_size = eval_batch_size or batch_size
        self.buffer_size, self.val_examples = buffer_size, val_examples
        self.num_workers, self.on_empty, self.seed = num_workers, on_empty, seed
        EmptyExamples(self.columns, on_empty)  # validates on_empty now, not mid-run
        self.positions: dict[int, dict] = {}  # worker id -> position after the last trained batch
        self.last_worker = 0  # the worker that made the last trained batch
        self._resume: dict[int, dict] = {}
        self._val_batches: list[dict] | None = None

    def check_lengths(self, config: Any) -> None:
        """data.max_source_length / max_target_length within the model's positions (config: an
        EncoderDecoderConfig): past them a learned position table fails mid-step with an index error
        and a rotary one runs on positions it was never trained at. Documents longer than a valid
        max_source_length are cut to it, as always."""
        sides = (("max_source_length", self.encoder.max_source_length, config.encoder, "encoder", "an"),
                 ("max_target_length", self.encoder.max_target_length, config.decoder, "decoder", "a"))
        for key, length, side, name, article in sides:
            if length > side.max_positions:
                raise UsageError(
                    f"data.{key}={length} exceeds the {name}'s {side.max_positions} positions "
                    f"({side.model_type}): set data.{key}={side.max_positions} (longer texts are cut there) "
                    f"or choose {article} {name} with more positions."
                )

    # ------------------------------------------------------------------ sources

    def _open(self, split: str) -> Any:
        ds = self.source.open(self.splits[split])
        check_columns(ds, self.columns, f"{self.source!r} split {self.splits[split]!r}")
        return ds

    def check_sources(self) -> None:
        """Open both splits (files, JSON, columns) and build nothing: call it before a trainer
        exists, so bad data fails before the model is loaded onto devices or validated."""
        for split in ("train", "validation"):
            self._open(split)

    def setup(self, stage: str | None = None) -> None:
        """Open both splits now so a wrong column, path or offline Hub fails before training."""
        if stage in (None, "fit"):
            self._open("train")
        if self._val_batches is None and stage in (None, "fit", "validate"):
            self._val_batches = self._build_val_batches()

    def _locator(self, split: str) -> Callable[[dict[str, Any]], str | None] | None:
        """locate(record) -> "FILE line N" for a source that knows where its records are."""
        locate = getattr(self.source, "locate", None)
        return None if locate is None else partial(locate, self.splits[split])

    def _train_stream(self) -> Any:
        from datasets.distributed import split_dataset_by_node

        rank, world = rank_and_world()
        ds = self._open("train")
        return split_dataset_by_node(ds, rank=rank, world_size=world) if world > 1 else ds

    def _build_val_batches(self) -> list[dict]:
        """The first val_examples usable records, dealt round-robin; every rank gets as many."""
        rank, world = rank_and_world()
        per_rank = max(1, self.val_examples // world)
        empties = EmptyExamples(self.columns, self.on_empty, self._locator("validation"))
        records = take_usable(iter(self._open("validation")), per_rank * world, empties)
        per_rank = len(records) // world
        if per_rank == 0:
            raise UsageError(f"The validation split has {len(records)} usable records, fewer than {world} ranks.")
        shares = [records[r : per_rank * world : world] for r in range(world)]
        least = 0
        if self.max_tokens and world > 1:  # token budgets cut shares unequally: every rank as many batches
            least = max(count_evaluation_batches(share, self.encoder, self.columns, self.eval_batch_size,
                                                 self.max_tokens) for share in shares)
        return evaluation_batches(shares[rank], self.encoder, self.columns, self.eval_batch_size, self.max_tokens,
                                  min_batches=least)

    # ------------------------------------------------------------------ loaders

    def train_dataloader(self) -> DataLoader:
        batches = ResumableBatches(
            self._train_stream, self.encoder, self.columns, self.batch_size, self.buffer_size,
            seed=self.seed, on_empty=self.on_empty, resume=self._resume, max_tokens=self.max_tokens,
            locate=self._locator("train"),
        )
        loader = ResumableLoader(batches, batch_size=None, num_workers=self.num_workers, generator=torch.Generator())
        if self._resume and self.num_workers > 1:
            loader.first_worker = (self.last_worker + 1) % self.num_workers
        return loader

    def val_dataloader(self) -> DataLoader:
        if self._val_batches is None:
            self._val_batches = self._build_val_batches()
        return DataLoader(FixedBatches(self._val_batches), batch_size=None, generator=torch.Generator())

    # ------------------------------------------------------------------ exact resume

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Note where the stream stands after the batch about to be trained on (not after the
        batches Lightning already prefetched), for the next checkpoint."""
        position = batch.pop("position", None) if isinstance(batch, dict) else None
        if position is not None:
            self.positions[position["worker"]] = position
            self.last_worker = position["worker"]
            batch["skipped"] = sum(p["skipped"] for p in self.positions.values())  # every worker's share
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Every rank's stream positions (gathered: only rank 0 writes the checkpoint)."""
        rank, world = rank_and_world()
        mine = {"num_workers": self.num_workers, "positions": copy.deepcopy(self.positions),
                "last_worker": self.last_worker}
        if world == 1:
            return {"ranks": {0: mine}, "world_size": 1}
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, mine)
        return {"ranks": dict(enumerate(gathered)), "world_size": world}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rank, world = rank_and_world()
        if state.get("world_size") != world:
            logger.warning(
                "The checkpoint's data positions are for %s ranks, this run has %s: the stream restarts "
                "from its beginning.", state.get("world_size"), world,
            )
            return
        mine = state["ranks"][rank]
        if mine["num_workers"] != self.num_workers:
            logger.warning("Checkpoint used data.num_workers=%s, now %s: the stream restarts from its beginning.",
                           mine["num_workers"], self.num_workers)
            return
        self._resume = {int(k): v for k, v in mine["positions"].items()}
        self.positions, self.last_worker = dict(self._resume), mine["last_worker"]
