"""Evaluate a model (or a baseline) on a data split: generate in length-sorted batches, append each
batch to predictions.jsonl as it finishes, score with ROUGE and write metrics.json.

An interrupted evaluation resumes: predictions already in the output folder are kept and skipped,
provided they came from the same model, settings and data (otherwise it refuses, never mixes).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from encdec.base.errors import UsageError, not_text
from encdec.data.files import ROW_COLUMN
from encdec.evaluation.rouge import aggregate, format_table, score_pairs, split_sentences
from encdec.serving.progress import Progress

logger = logging.getLogger("encdec")

# patrickvonplaten/bert2bert_cnn_daily_mail model card, CNN/DailyMail 3.0.0 test (F-measure, %).
PUBLISHED_CNN_DAILYMAIL = {"rouge1": 41.28, "rouge2": 18.69, "rougeL": 28.19, "rougeLsum": 38.09}
BASELINES = ("lead3", "reference")


@dataclass
class Example:
    id: str
    article: str
    reference: str


def read_examples(
    records: Iterable[dict], text_column: str, summary_column: str, id_column: str | None, limit: int | None,
    locate: Callable[[dict], str | None] | None = None,
) -> list[Example]:
    """The split's first `limit` records in order; ids are the id column or the record index. A
    refused record is named by file and line when `locate(record)` knows them."""
    examples = []
    for i, record in enumerate(records):
        if limit is not None and i >= limit:
            break
        missing = [c for c in (text_column, summary_column, id_column) if c is not None and c not in record]
        if missing:
            raise UsageError(
                f"Records have no column {missing}; columns present: {sorted(set(record) - {ROW_COLUMN})}. Set "
                "data.text_column / data.summary_column / data.id_column (null for none)."
            )
        ident = str(record[id_column]) if id_column else str(i)
        place = locate(record) if locate is not None else None
        where = f"Record {ident!r}" if place is None else f"{place} (id {ident!r})" if id_column else place
        examples.append(Example(ident, text_value(record, text_column, where),
                                text_value(record, summary_column, where)))
    if not examples:
        raise UsageError("The split has no examples to evaluate; check the split name and the data files.")
    return examples


def text_value(record: dict, column: str, where: str) -> str:
    """The record's text in `column`; None counts as empty, anything else but a string is refused."""
    value = record[column]
    if not_text(column, value):
        raise UsageError(
            f"{where}: {not_text(column, value)}; fix the record or name the right column "
            "(data.text_column / data.summary_column)."
        )
    return value or ""


def lead3(article: str) -> str:
    """The first three sentences of the article, one per line: the classic extractive baseline."""
    return "\n".join(split_sentences(article)[:3])


def baseline(name: str) -> Callable[[list[Example]], list[str]]:
    """lead3, or `reference` (predictions = references; scores 100, a check of the scoring path)."""
    if name == "lead3":
        return lambda batch: [lead3(e.article) for e in batch]
    if name == "reference":
        return lambda batch: [e.reference for e in batch]
    raise ValueError(f"baseline={name!r} is not one of {BASELINES} (or null to evaluate model_path).")


class PredictionStore:
    """predictions.jsonl in an output folder, appended batch by batch, plus run.json naming what
    produced them so a resume never mixes predictions of different models or settings. With
    several ranks (encdec.evaluation.distributed) each appends to its own shard, predictions.rankR.jsonl;
    every rank reads them all, and `merge` folds them into predictions.jsonl."""

    def __init__(self, folder: Path, identity: dict[str, Any], overwrite: bool = False) -> None:
        from encdec.evaluation.distributed import barrier, rank_and_world, share_problem

        self.folder = folder
        self.path = folder / "predictions.jsonl"
        self.rank, self.world = rank_and_world()
        self.own = self.path if self.world == 1 else folder / f"predictions.rank{self.rank}.jsonl"
        problem = self._check(identity, overwrite) if self.rank == 0 else None
        share_problem(problem)
        barrier()  # the files are settled before any rank reads them

    def _check(self, identity: dict[str, Any], overwrite: bool) -> str | None:
        self.folder.mkdir(parents=True, exist_ok=True)
        run_file = self.folder / "run.json"
        if run_file.exists() and self.files() and not overwrite:
            previous = json.loads(run_file.read_text())
            if previous != identity:
                changed = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
                return (
                    f"{self.path} holds predictions made with different {', '.join(changed)} "
                    f"({ {k: previous.get(k) for k in changed} }); refusing to mix them. Use another "
                    "output_dir, or overwrite=true to discard them."
                )
        elif overwrite:
            for path in self.files():
                path.unlink()
        run_file.write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n")
        return None

    def files(self) -> list[Path]:
        return [p for p in (self.path, *sorted(self.folder.glob("predictions.rank*.jsonl"))) if p.exists()]

    def done(self) -> dict[str, str]:
        """id -> prediction of the complete lines of every file; a line cut off by a kill is
        dropped (and cut from this rank's own file, so appends start on a clean line)."""
        done: dict[str, str] = {}
        for path in self.files():
            done.update(_complete_lines(path, truncate=path == self.own))
        return done

    def append(self, rows: list[dict[str, str]]) -> None:
        with self.own.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())

    def merge(self, examples: list[Example]) -> None:
        """predictions.jsonl in split order from every file, written whole before the shards go
        (a kill in between leaves duplicates, which read the same)."""
        shards = [p for p in self.files() if p != self.path]
        if not shards:
            return
        done = self.done()
        rows = [{"id": e.id, "reference": e.reference, "prediction": done[e.id]} for e in examples if e.id in done]
        partial = self.folder / ".predictions.jsonl.tmp"
        with partial.open("w", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())
        partial.replace(self.path)
        for shard in shards:
            shard.unlink()


def _complete_lines(path: Path, truncate: bool) -> dict[str, str]:
    done, keep = {}, 0
    with path.open("rb") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            done[row["id"]] = row["prediction"]
            keep += len(line)
    if truncate and keep < path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(keep)
    return done


def length_sorted_batches(examples: list[Example], batch_size: int) -> list[list[Example]]:
    """Longest first, so the first batch shows the worst-case memory and padding stays small."""
    ordered = sorted(examples, key=lambda e: len(e.article), reverse=True)
    return [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]


def predict(
    examples: list[Example],
    store: PredictionStore,
    summarize_batch: Callable[[list[Example]], list[str]],
    batch_size: int,
) -> tuple[dict[str, str], float | None]:
    """Generate for every example not yet in the store (this rank's every N-th of them); returns
    all predictions and this rank's examples/s."""
    from encdec.evaluation.distributed import barrier

    done = store.done()
    barrier()  # every rank has read the same files before any appends
    pending = [e for e in examples if e.id not in done][store.rank::store.world]
    already = sum(e.id in done for e in examples)
    if already:
        logger.info("Resuming: %d of %d predictions already in %s", already, len(examples), store.folder)
    progress = Progress(already + len(pending), already)
    for batch in length_sorted_batches(pending, batch_size):
        outputs = summarize_batch(batch)
        rows = [{"id": e.id, "reference": e.reference, "prediction": p} for e, p in zip(batch, outputs)]
        store.append(rows)
        done.update((r["id"], r["prediction"]) for r in rows)
        progress.update(len(batch))
    if pending:
        sys.stderr.write("\n")
    barrier()  # every shard is complete
    if store.rank == 0:
        store.merge(examples)
        done = store.done()
    return done, progress.rate()


def score(
    examples: list[Example], predictions: dict[str, str], num_workers: int = 1, bootstrap_samples: int = 1000
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """ROUGE in split order, so a resumed run scores exactly like an uninterrupted one: the
    bootstrap aggregate, and the per-example scores it was made from."""
    preds = [predictions[e.id] for e in examples]
    refs = [e.reference for e in examples]
    pairs = score_pairs(preds, refs, num_workers=num_workers)
    return aggregate(pairs, n_samples=bootstrap_samples), pairs


def write_plots(examples: list[Example], predictions: dict[str, str], pairs: list[dict[str, Any]],
                folder: Path) -> Path:
    """plots.png: the per-example ROUGE-2 spread and predicted vs reference lengths."""
    from encdec.evaluation.plots import evaluation_figure, save

    rouge2 = [100 * pair["rouge2"].fmeasure for pair in pairs]
    predicted = [len(predictions[e.id].split()) for e in examples]
    reference = [len(e.reference.split()) for e in examples]
    return save(evaluation_figure(rouge2, predicted, reference), folder / "plots.png")


def is_cnn_dailymail(data_description: str) -> bool:
    return "cnn_dailymail" in data_description.lower()


def report(scores: dict[str, Any], data_description: str) -> str:
    published = PUBLISHED_CNN_DAILYMAIL if is_cnn_dailymail(data_description) else None
    return format_table(scores, published)
