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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from encdec.errors import UsageError, not_text
from encdec.rouge import aggregate, format_table, score_pairs, split_sentences

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
    records: Iterable[dict], text_column: str, summary_column: str, id_column: str | None, limit: int | None
) -> list[Example]:
    """The split's first `limit` records in order; ids are the id column or the record index."""
    examples = []
    for i, record in enumerate(records):
        if limit is not None and i >= limit:
            break
        missing = [c for c in (text_column, summary_column, id_column) if c is not None and c not in record]
        if missing:
            raise UsageError(
                f"Records have no column {missing}; columns present: {sorted(record)}. Set "
                "data.text_column / data.summary_column / data.id_column (null for none)."
            )
        ident = str(record[id_column]) if id_column else str(i)
        examples.append(Example(ident, text_value(record, text_column, ident), text_value(record, summary_column, ident)))
    if not examples:
        raise UsageError("The split has no examples to evaluate; check the split name and the data files.")
    return examples


def text_value(record: dict, column: str, ident: str) -> str:
    """The record's text in `column`; None counts as empty, anything else but a string is refused."""
    value = record[column]
    if not_text(column, value):
        raise UsageError(
            f"Record {ident!r}: {not_text(column, value)}; fix the record or name the right column "
            "(data.text_column / data.summary_column)."
        )
    return value or ""


def lead3(article: str) -> str:
    """The first three sentences of the article, one per line: the classic extractive baseline."""
    return "\n".join(split_sentences(article)[:3])


def load_summarizer(model_path: str | os.PathLike, **kwargs: Any) -> Any:
    """A Summarizer for an HF folder or Hub id, or for a train.py Lightning checkpoint (.ckpt)."""
    from encdec.parts import summarizer_from_checkpoint
    from encdec.summarize import Summarizer

    if str(model_path).endswith(".ckpt"):
        return summarizer_from_checkpoint(Path(model_path), **kwargs)
    return Summarizer.from_pretrained(model_path, **kwargs)


def baseline(name: str) -> Callable[[list[Example]], list[str]]:
    """lead3, or `reference` (predictions = references; scores 100, a check of the scoring path)."""
    if name == "lead3":
        return lambda batch: [lead3(e.article) for e in batch]
    if name == "reference":
        return lambda batch: [e.reference for e in batch]
    raise ValueError(f"baseline={name!r} is not one of {BASELINES} (or null to evaluate model_path).")


class PredictionStore:
    """predictions.jsonl in an output folder, appended batch by batch, plus run.json naming what
    produced them so a resume never mixes predictions of different models or settings."""

    def __init__(self, folder: Path, identity: dict[str, Any], overwrite: bool = False) -> None:
        self.folder = folder
        self.path = folder / "predictions.jsonl"
        folder.mkdir(parents=True, exist_ok=True)
        run_file = folder / "run.json"
        if run_file.exists() and self.path.exists() and not overwrite:
            previous = json.loads(run_file.read_text())
            if previous != identity:
                changed = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
                raise ValueError(
                    f"{self.path} holds predictions made with different {', '.join(changed)} "
                    f"({ {k: previous.get(k) for k in changed} }); refusing to mix them. Use another "
                    "output_dir, or overwrite=true to discard them."
                )
        elif overwrite:
            self.path.unlink(missing_ok=True)
        run_file.write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n")

    def done(self) -> dict[str, str]:
        """id -> prediction of the complete lines; a line cut off by a kill is dropped."""
        if not self.path.exists():
            return {}
        done, keep = {}, 0
        with self.path.open("rb") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    break
                done[row["id"]] = row["prediction"]
                keep += len(line)
        if keep < self.path.stat().st_size:  # drop the torn tail so appends start on a clean line
            with self.path.open("r+b") as f:
                f.truncate(keep)
        return done

    def append(self, rows: list[dict[str, str]]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())


def length_sorted_batches(examples: list[Example], batch_size: int) -> list[list[Example]]:
    """Longest first, so the first batch shows the worst-case memory and padding stays small."""
    ordered = sorted(examples, key=lambda e: len(e.article), reverse=True)
    return [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]


class Progress:
    """One status line on stderr: done/total, examples/s, ETA."""

    def __init__(self, total: int, already: int) -> None:
        self.total, self.count, self.start_count = total, already, already
        self.start = time.perf_counter()

    def update(self, n: int) -> None:
        self.count += n
        rate = (self.count - self.start_count) / max(time.perf_counter() - self.start, 1e-9)
        eta = (self.total - self.count) / rate if rate else float("inf")
        sys.stderr.write(f"\r{self.count}/{self.total} examples | {rate:.2f} ex/s | ETA {eta:.0f}s ")
        sys.stderr.flush()

    def rate(self) -> float | None:
        done = self.count - self.start_count
        return done / (time.perf_counter() - self.start) if done else None


def predict(
    examples: list[Example],
    store: PredictionStore,
    summarize_batch: Callable[[list[Example]], list[str]],
    batch_size: int,
) -> tuple[dict[str, str], float | None]:
    """Generate for every example not yet in the store; returns all predictions and examples/s."""
    done = store.done()
    pending = [e for e in examples if e.id not in done]
    if done:
        logger.info("Resuming: %d of %d predictions already in %s", len(examples) - len(pending), len(examples), store.path)
    progress = Progress(len(examples), len(examples) - len(pending))
    for batch in length_sorted_batches(pending, batch_size):
        outputs = summarize_batch(batch)
        rows = [{"id": e.id, "reference": e.reference, "prediction": p} for e, p in zip(batch, outputs)]
        store.append(rows)
        done.update((r["id"], r["prediction"]) for r in rows)
        progress.update(len(batch))
    if pending:
        sys.stderr.write("\n")
    return done, progress.rate()


def score(
    examples: list[Example], predictions: dict[str, str], num_workers: int = 1, bootstrap_samples: int = 1000
) -> dict[str, Any]:
    """ROUGE in split order, so a resumed run scores exactly like an uninterrupted one."""
    preds = [predictions[e.id] for e in examples]
    refs = [e.reference for e in examples]
    return aggregate(score_pairs(preds, refs, num_workers=num_workers), n_samples=bootstrap_samples)


def is_cnn_dailymail(data_description: str) -> bool:
    return "cnn_dailymail" in data_description.lower()


def report(scores: dict[str, Any], data_description: str) -> str:
    published = PUBLISHED_CNN_DAILYMAIL if is_cnn_dailymail(data_description) else None
    return format_table(scores, published)
