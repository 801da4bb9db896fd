"""ROUGE over many (prediction, reference) pairs on top of Google's `rouge-score`, with bootstrap
intervals, optional process parallelism and a table against published numbers."""

from __future__ import annotations

import re
from concurrent.futures import ProcessPoolExecutor
from typing import Sequence

import numpy as np
from rouge_score import rouge_scorer, scoring
from rouge_score.scoring import Score

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# Lowercased words that end in "." without ending a sentence; kept short on purpose.
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc inc ltd co corp gen gov sen rep no u.s u.k u.n e.g i.e".split()
)
# A candidate boundary: terminal punctuation, optional closing quotes/brackets, then whitespace.
_BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+")
_OPENERS = "\"'\u201c\u2018([0123456789"


def _starts_sentence(char: str, lowercase_text: bool) -> bool:
    """Uppercase, digit or opening quote starts a sentence; in all-lowercase (uncased model)
    output there is no case signal, so any letter may."""
    return char.isupper() or char in _OPENERS or (lowercase_text and char.isalpha())


def _is_abbreviation(chunk: str, punctuation: str) -> bool:
    """True when the word before a "." is a known abbreviation or a one-letter initial ("J.")."""
    if not punctuation.startswith(".") or not chunk.split():
        return False
    word = chunk.split()[-1].lstrip("\"'\u201c\u2018([").lower()
    return word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def _split_line(line: str) -> list[str]:
    """Split one line at sentence boundaries that pass the start and abbreviation checks."""
    lowercase_text = line == line.lower()
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(line):
        following = line[match.end() : match.end() + 1]
        if not following or not _starts_sentence(following, lowercase_text):
            continue
        if _is_abbreviation(line[start : match.start()], match.group()):
            continue
        sentences.append(line[start : match.end()].strip())
        start = match.end()
    sentences.append(line[start:].strip())
    return [s for s in sentences if s]


def split_sentences(text: str) -> list[str]:
    """Rule-based sentence splitter that needs no downloaded model (unlike nltk punkt).

    Splits on newlines, and after `.`, `!` or `?` (plus any closing quotes/brackets) followed by
    whitespace and an uppercase letter, digit or opening quote/bracket (any letter when the text
    has no uppercase at all, as with uncased model output). Does not split after the short
    ABBREVIATIONS list ("Mr.", "U.S.", "e.g.") or after single-letter initials ("J. R. Smith").
    """
    return [s for line in text.splitlines() for s in _split_line(line)]


def _score_chunk(
    predictions: Sequence[str], references: Sequence[str], rouge_types: Sequence[str], use_stemmer: bool
) -> list[dict[str, Score]]:
    """Score a chunk serially; module level so worker processes can import it."""
    plain = [t for t in rouge_types if t != "rougeLsum"]
    plain_scorer = rouge_scorer.RougeScorer(plain, use_stemmer=use_stemmer) if plain else None
    lsum_scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=use_stemmer)
    results = []
    for prediction, reference in zip(predictions, references):
        scores = plain_scorer.score(reference, prediction) if plain_scorer else {}  # (target, pred)
        if "rougeLsum" in rouge_types:
            lines = ("\n".join(split_sentences(t)) for t in (reference, prediction))
            scores.update(lsum_scorer.score(*lines))
        results.append({t: scores[t] for t in rouge_types})
    return results


def score_pairs(
    predictions: list[str],
    references: list[str],
    rouge_types: Sequence[str] = ROUGE_TYPES,
    use_stemmer: bool = True,
    num_workers: int = 1,
) -> list[dict[str, Score]]:
    """Per-pair ROUGE scores, in input order.

    rougeLsum scores summary-level LCS over sentences: both sides are rewritten one sentence per
    line with `split_sentences`, which is how the published CNN/DailyMail numbers are computed.
    With num_workers > 1 the pairs are scored in chunks across processes; results equal serial.
    """
    if len(predictions) != len(references):
        n_pred, n_ref = len(predictions), len(references)
        raise ValueError(f"got {n_pred} predictions but {n_ref} references; pass one reference per prediction")
    rouge_types = tuple(rouge_types)
    if num_workers <= 1 or len(predictions) < 2:
        return _score_chunk(predictions, references, rouge_types, use_stemmer)
    size = -(-len(predictions) // (num_workers * 4))  # a few chunks per worker to balance load
    starts = range(0, len(predictions), size)
    chunks = [(predictions[i : i + size], references[i : i + size]) for i in starts]
    with ProcessPoolExecutor(max_workers=num_workers) as pool:
        futures = [pool.submit(_score_chunk, p, r, rouge_types, use_stemmer) for p, r in chunks]
        return [score for future in futures for score in future.result()]


def aggregate(
    scores: list[dict[str, Score]], confidence: float = 0.95, n_samples: int = 1000, seed: int = 0
) -> dict[str, dict[str, dict[str, float]]]:
    """Bootstrap low/mid/high (fractions 0..1) per ROUGE type and measure, as a JSON-friendly dict.

    BootstrapAggregator resamples with numpy's global RNG (np.random.choice), so we seed it for
    reproducible intervals and restore the caller's RNG state afterwards. Its "mid" is the median
    of the bootstrap means, close to (not exactly) the plain mean.
    """
    if not scores:
        raise ValueError("no scores to aggregate; score at least one prediction first")
    aggregator = scoring.BootstrapAggregator(confidence_interval=confidence, n_samples=n_samples)
    for pair in scores:
        aggregator.add_scores(pair)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        result = aggregator.aggregate()
    finally:
        np.random.set_state(state)
    return {
        rouge_type: {
            measure: {bound: float(getattr(getattr(agg, bound), measure)) for bound in ("low", "mid", "high")}
            for measure in Score._fields
        }
        for rouge_type, agg in result.items()
    }


def rouge(
    predictions: list[str],
    references: list[str],
    confidence: float = 0.95,
    n_samples: int = 1000,
    seed: int = 0,
    **score_kwargs,
) -> dict:
    """Score and aggregate in one call; score_kwargs (rouge_types, use_stemmer, num_workers)
    go to score_pairs."""
    return aggregate(score_pairs(predictions, references, **score_kwargs), confidence, n_samples, seed)


def format_table(aggregated: dict, published: dict[str, float] | None = None) -> str:
    """Readable F-measure table in percent: mid [low, high], plus published and difference."""
    header = f"{'metric':<10} {'F1 (%)':>8} {'[low, high]':>16}"
    if published:
        header += f" {'published':>10} {'diff':>7}"
    rows = [header, "-" * len(header)]
    for rouge_type, measures in aggregated.items():
        f = {bound: 100 * value for bound, value in measures["fmeasure"].items()}
        interval = f"[{f['low']:.2f}, {f['high']:.2f}]"
        row = f"{rouge_type:<10} {f['mid']:>8.2f} {interval:>16}"
        if published:
            if rouge_type in published:
                ref = published[rouge_type]
                row += f" {ref:>10.2f} {f['mid'] - ref:>+7.2f}"
            else:
                row += f" {'-':>10} {'-':>7}"
        rows.append(row)
    return "\n".join(rows)
