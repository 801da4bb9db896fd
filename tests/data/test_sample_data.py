"""Synthetic corpus: deterministic, CNN/DailyMail-shaped, a copying task, cached on disk."""

import json
import re

import datasets
import pytest

from encdec.data.sample_data import SPLITS, make_sample_dataset, write_sample_dataset

SMALL = dict(n_train=40, n_validation=8, n_test=8)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def test_same_seed_same_records_different_seed_different():
    assert make_sample_dataset(**SMALL, seed=1) == make_sample_dataset(**SMALL, seed=1)
    assert make_sample_dataset(**SMALL, seed=1)["train"] != make_sample_dataset(**SMALL, seed=2)["train"]


def test_sizes_columns_and_unique_ids():
    data = make_sample_dataset(**SMALL)
    assert {split: len(records) for split, records in data.items()} == {"train": 40, "validation": 8, "test": 8}
    records = [r for split in SPLITS for r in data[split]]
    assert all(set(r) == {"id", "article", "highlights"} for r in records)
    assert len({r["id"] for r in records}) == len(records)
    assert len({r["article"] for r in records}) == len(records)


def test_lengths_are_news_like():
    for record in make_sample_dataset(**SMALL)["train"]:
        assert 50 <= len(record["article"].split()) <= 150
        assert 10 <= len(record["highlights"].split()) <= 30


def test_summary_is_copied_from_article():
    for record in make_sample_dataset(**SMALL)["train"]:
        article = set(_words(record["article"]))
        summary = _words(record["highlights"])
        assert sum(w in article for w in summary) / len(summary) >= 0.8


def test_articles_carry_distractor_numbers():
    """The key number is in the article, but often beside others, so the model must pick it."""
    records = make_sample_dataset(**SMALL)["train"]
    for record in records:
        assert re.search(r"\b\d+\b", record["highlights"]).group() in _words(record["article"])
    with_distractors = [r for r in records if len(set(re.findall(r"\b\d+\b", r["article"]))) > 1]
    assert len(with_distractors) >= len(records) // 3


def test_write_loads_with_datasets_and_skips_unchanged(tmp_path):
    paths = write_sample_dataset(tmp_path, **SMALL)
    assert set(paths) == set(SPLITS) and all(p.exists() for p in paths.values())
    loaded = datasets.load_dataset("json", data_files={s: str(p) for s, p in paths.items()},
                                   cache_dir=str(tmp_path / "cache"))
    assert loaded["train"].num_rows == 40 and loaded["test"][0] == make_sample_dataset(**SMALL)["test"][0]

    mtimes = {s: p.stat().st_mtime_ns for s, p in paths.items()}
    params = (tmp_path / "params.json").read_text()
    assert write_sample_dataset(tmp_path, **SMALL) == paths
    assert {s: p.stat().st_mtime_ns for s, p in paths.items()} == mtimes
    assert json.loads(params)["params"]["seed"] == 0  # defaults are recorded too


def test_write_is_byte_identical_and_regenerates_when_changed(tmp_path):
    first = write_sample_dataset(tmp_path / "a", **SMALL)
    second = write_sample_dataset(tmp_path / "b", **SMALL)
    assert all(first[s].read_bytes() == second[s].read_bytes() for s in SPLITS)

    first["test"].write_text("corrupted\n")
    write_sample_dataset(tmp_path / "a", **SMALL)
    assert first["test"].read_bytes() == second["test"].read_bytes()

    write_sample_dataset(tmp_path / "a", **{**SMALL, "seed": 5})
    assert first["train"].read_bytes() != second["train"].read_bytes()
    assert not list((tmp_path / "a").glob(".*.tmp"))


def test_unknown_argument_is_rejected(tmp_path):
    with pytest.raises(TypeError, match="n_trian"):
        write_sample_dataset(tmp_path, n_trian=3)
