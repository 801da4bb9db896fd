"""ROUGE wrapper: agrees with rouge-score, splits sentences for Lsum, parallel == serial."""

from fractions import Fraction

import numpy as np
import pytest
from rouge_score import rouge_scorer

from encdec.evaluation.rouge import aggregate, format_table, rouge, score_pairs, split_sentences

PAIRS = [  # (prediction, reference)
    ("the cat lay on the mat", "the cat sat on the mat"),
    ("Police said the man was arrested on Friday.", "The man was arrested by police on Friday night."),
    ("Stocks rallied as investors cheered the news", "Stocks fell sharply after the announcement."),
    ("", "an empty prediction scores zero"),
    ("Running runners ran quickly.", "The runner runs quickly."),
]


def test_per_pair_scores_equal_rouge_score_directly():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    ours = score_pairs([p for p, _ in PAIRS], [r for _, r in PAIRS], rouge_types=("rouge1", "rouge2", "rougeL"))
    for (prediction, reference), score in zip(PAIRS, ours):
        assert score == scorer.score(reference, prediction)  # rouge-score takes (target, prediction)


def test_rouge1_by_hand():
    # tokens: ref the cat sat on the mat / pred the cat lay on the mat: 6 each; clipped overlap
    # the x2 + cat + on + mat = 5, so precision = recall = 5/6 and F = 5/6.
    (score,) = score_pairs(["the cat lay on the mat"], ["the cat sat on the mat"], rouge_types=["rouge1"])
    assert Fraction(score["rouge1"].fmeasure).limit_denominator(100) == Fraction(5, 6)
    assert score["rouge1"].precision == pytest.approx(5 / 6) and score["rouge1"].recall == pytest.approx(5 / 6)


def test_precision_and_recall_are_not_swapped():
    (score,) = score_pairs(["the cat"], ["the cat sat on the mat"], rouge_types=["rouge1"])
    assert score["rouge1"].precision == 1.0 and score["rouge1"].recall == pytest.approx(2 / 6)


def test_rouge_lsum_scores_sentences_separately():
    reference = "The cat sat on the mat. The dog ran in the park."
    prediction = "The dog ran in the park. The cat sat on the mat."
    (score,) = score_pairs([prediction], [reference])
    assert score["rougeLsum"].fmeasure == 1.0  # each reference sentence is matched by one prediction sentence
    assert score["rougeL"].fmeasure < 0.6  # one LCS over the whole text only gets one sentence
    direct = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True).score(
        "The cat sat on the mat.\nThe dog ran in the park.", "The dog ran in the park.\nThe cat sat on the mat."
    )
    assert score["rougeLsum"] == direct["rougeLsum"]


def test_parallel_equals_serial():
    predictions = [f"{p} number {i}" for i in range(12) for p, _ in PAIRS]
    references = [f"{r}. Item {i % 3}." for i in range(12) for _, r in PAIRS]
    assert score_pairs(predictions, references, num_workers=2) == score_pairs(predictions, references)


def test_mismatched_lengths_raise_with_both_lengths():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score_pairs(["a", "b"], ["a"])


def test_bootstrap_interval_contains_mean_and_is_reproducible():
    scores = score_pairs([p for p, _ in PAIRS] * 4, [r for _, r in PAIRS] * 4)
    state = np.random.get_state()[1].copy()
    result = aggregate(scores, n_samples=200, seed=3)
    assert (np.random.get_state()[1] == state).all()  # the caller's global RNG is left as it was
    assert result == aggregate(scores, n_samples=200, seed=3)
    for rouge_type in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        f = result[rouge_type]["fmeasure"]
        mean = float(np.mean([s[rouge_type].fmeasure for s in scores]))
        # "mid" is the median of bootstrap means: near the plain mean, inside the interval.
        assert f["low"] <= f["mid"] <= f["high"]
        assert f["low"] <= mean <= f["high"]
        assert f["mid"] == pytest.approx(mean, abs=0.05)
        assert 0.0 <= f["low"] and f["high"] <= 1.0
    assert set(result["rouge1"]) == {"precision", "recall", "fmeasure"}


def test_rouge_convenience_and_single_pair():
    result = rouge(["the cat lay on the mat"], ["the cat sat on the mat"], rouge_types=["rouge1"], n_samples=10)
    assert result["rouge1"]["fmeasure"] == pytest.approx({"low": 5 / 6, "mid": 5 / 6, "high": 5 / 6})


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Mr. Smith went to Washington. He left.", ["Mr. Smith went to Washington.", "He left."]),
        ("The U.S. Army met Dr. Who. E.g. this one.", ["The U.S. Army met Dr. Who.", "E.g. this one."]),
        ("J. R. R. Tolkien wrote it. It sold well.", ["J. R. R. Tolkien wrote it.", "It sold well."]),
        ('He said "Stop." Then he ran! Did he? 5 did.', ['He said "Stop."', "Then he ran!", "Did he?", "5 did."]),
        ("first bullet\nsecond bullet\n\n", ["first bullet", "second bullet"]),
        ("It rose 3.5 percent. it was lower than 4.", ["It rose 3.5 percent. it was lower than 4."]),
        ("all lowercase. uncased output. mr. smith too.", ["all lowercase.", "uncased output.", "mr. smith too."]),
        ("(It ended.) Next one.", ["(It ended.)", "Next one."]),
        ("", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_format_table_has_percent_and_published_column():
    result = rouge(["the cat lay on the mat"], ["the cat sat on the mat"], n_samples=10)
    table = format_table(result, published={"rouge1": 41.28, "rouge2": 18.69})
    assert "published" in table and "41.28" in table and "83.33" in table
    assert "+42.05" in table  # 83.33 - 41.28
    assert "published" not in format_table(result)
