"""Seq2SeqDataModule and batching: tokenisation, padding, length grouping, exact stream resume,
rank sharding, and the errors bad input gets."""

from __future__ import annotations

import json
import random
from itertools import islice

import pytest
import torch

from encdec.data import datamodule as data_mod
from encdec.data.batching import LABEL_PAD, Columns, PairEncoder, ResumableBatches, collate, length_grouped
from encdec.data.datamodule import HubSource, LocalSource, SampleSource, Seq2SeqDataModule
from encdec.tokenization.tokenizer import load_tokenizer

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MINILM)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return SampleSource(str(tmp_path_factory.mktemp("sample")), n_train=120, n_validation=12, n_test=0)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def datamodule(source, tokenizer, **kw) -> Seq2SeqDataModule:
    settings = dict(max_source_length=64, max_target_length=16, batch_size=4, buffer_size=16, val_examples=6)
    return Seq2SeqDataModule(source, tokenizer, **{**settings, **kw})


def test_labels_are_summary_tokens_plus_eos_without_start_token(tokenizer):
    enc = PairEncoder(tokenizer, tokenizer, max_source_length=8, max_target_length=5, eos_token_id=102)
    sources, labels = enc.encode(["a long article " * 10], ["one two three four five six"])
    assert len(sources[0]) == 8 and sources[0][0] == tokenizer.cls_token_id and sources[0][-1] == 102
    assert len(labels[0]) == 5 and labels[0][-1] == 102 and tokenizer.cls_token_id not in labels[0]


def test_collate_pads_labels_with_minus_100_and_masks_decoder_inputs():
    batch = collate([[101, 5, 102], [101, 102]], [[7, 8, 102], [102]], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[101, 5, 102], [101, 102, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[7, 8, 102], [102, LABEL_PAD, LABEL_PAD]]
    # decoder inputs are [start, labels[:-1]]: real while the label before is real
    assert batch["decoder_attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


def test_length_grouping_cuts_padding_and_is_seeded():
    rng = random.Random(0)
    lengths = [rng.randint(10, 200) for _ in range(256)]

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    grouped = length_grouped(lengths, 8, random.Random(1))
    unsorted = [list(range(i, i + 8)) for i in range(0, 256, 8)]
    assert padding(grouped) < padding(unsorted) / 5
    assert grouped == length_grouped(lengths, 8, random.Random(1))
    assert sorted(i for b in grouped for i in b) == list(range(256))


def _stream(sample, tokenizer, resume=None, batch_size=4):
    enc = PairEncoder(tokenizer, tokenizer, 64, 16, tokenizer.sep_token_id)
    open_stream = lambda: sample.open("train")  # noqa: E731
    return ResumableBatches(open_stream, enc, Columns(), batch_size, buffer_size=16, seed=3, resume=resume)


def test_stream_resumes_with_the_next_unseen_batch_across_buffers_and_epochs(sample, tokenizer):
    full = list(islice(iter(_stream(sample, tokenizer)), 75))  # 120 records = 30 batches an epoch
    ids = [tuple(b["ids"]) for b in full]
    epoch = sorted(f"train-{i:06d}" for i in range(120))
    assert sorted(i for b in ids[:30] for i in b) == sorted(i for b in ids[30:60] for i in b) == epoch
    assert ids[:30] != ids[30:60]  # each epoch groups and orders differently
    for cut in (0, 3, 4, 29, 41):
        resumed = _stream(sample, tokenizer, resume={0: full[cut]["position"]})
        after = [tuple(b["ids"]) for b in islice(iter(resumed), 6)]
        assert after == ids[cut + 1 : cut + 7], cut
        again = next(iter(_stream(sample, tokenizer, resume={0: full[cut]["position"]})))
        assert torch.equal(again["labels"], full[cut + 1]["labels"])


def test_ranks_get_disjoint_training_records_and_equal_validation(sample, tokenizer, monkeypatch):
    seen, val = [], []
    for rank in (0, 1):
        monkeypatch.setattr(data_mod, "rank_and_world", lambda rank=rank: (rank, 2))
        dm = datamodule(sample, tokenizer, val_examples=7)
        dm.setup("fit")
        batches = islice(iter(dm.train_dataloader()), 15)  # one epoch of this rank's 60 records
        seen.append({i for b in batches for i in b["ids"]})
        val.append([i for b in dm.val_dataloader() for i in b["ids"]])
    assert seen[0].isdisjoint(seen[1]) and len(seen[0]) == len(seen[1]) == 60
    assert len(val[0]) == len(val[1]) == 3 and set(val[0]).isdisjoint(val[1])


def test_validation_batches_keep_references_and_ids(sample, tokenizer):
    dm = datamodule(sample, tokenizer, eval_batch_size=4)
    dm.setup("validate")
    batches = list(dm.val_dataloader())
    assert sum(len(b["ids"]) for b in batches) == 6
    assert all(len(b["references"]) == len(b["ids"]) == b["input_ids"].shape[0] for b in batches)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_local_files_in_each_format(tmp_path, tokenizer, suffix):
    import datasets

    rows = [{"document": f"text number {i} is here.", "summary": f"summary {i}"} for i in range(10)]
    path = tmp_path / f"train{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, rows)
    else:
        getattr(datasets.Dataset.from_list(rows), "to_" + suffix[1:])(str(path))
    source = LocalSource({"train": str(path), "validation": str(path)})
    dm = datamodule(source, tokenizer, text_column="document", summary_column="summary", id_column=None)
    dm.setup("fit")
    assert sum(len(b["ids"]) for b in islice(iter(dm.train_dataloader()), 3)) == 10


def test_missing_column_names_the_columns_present(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "train.jsonl", [{"document": "x", "summary": "y", "id": "1"}])
    dm = datamodule(LocalSource({"train": str(path), "validation": str(path)}), tokenizer)
    with pytest.raises(ValueError, match=r"no column 'article', 'highlights'.*\['document', 'summary', 'id'\]"):
        dm.setup("fit")


def _with_empties(tmp_path):
    rows = [{"id": str(i), "article": f"article {i}.", "highlights": f"summary {i}."} for i in range(12)]
    rows[2]["article"], rows[5]["article"], rows[7]["highlights"] = None, "   ", ""
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    return LocalSource({"train": str(path), "validation": str(path)})


def test_empty_records_are_skipped_and_counted(tmp_path, tokenizer):
    dm = datamodule(_with_empties(tmp_path), tokenizer, buffer_size=64)
    dm.setup("fit")
    batches = list(islice(iter(dm.train_dataloader()), 3))  # 9 usable records: batches of 4, 4, 1
    assert sorted(int(i) for b in batches for i in b["ids"]) == [0, 1, 3, 4, 6, 8, 9, 10, 11]
    assert batches[-1]["position"]["skipped"] == 3


def test_batches_count_the_sources_cut_at_max_source_length(tmp_path, tokenizer):
    """Each training batch says how many of its sources lost tokens to max_source_length (logged as
    data/truncated): those whose full tokenisation is longer, by an independent count; a source of
    exactly the limit is not cut."""
    exact = next(n for n in range(1, 80) if len(tokenizer("word " * n)["input_ids"]) == 64)
    rows = [{"id": str(i), "article": "word " * n, "highlights": "a summary."}
            for i, n in enumerate([5, exact, exact + 1, 200, 30, 90, exact - 1, 400])]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    dm = datamodule(LocalSource({"train": str(path), "validation": str(path)}), tokenizer, buffer_size=8)
    dm.setup("fit")
    batches = list(islice(iter(dm.train_dataloader()), 2))
    longer = {r["id"] for r in rows if len(tokenizer(r["article"])["input_ids"]) > 64}
    assert longer == {"2", "3", "5", "7"}
    assert [b["truncated"] for b in batches] == [len(longer & set(b["ids"])) for b in batches]
    assert sum(b["truncated"] for b in batches) == 4


def test_empty_records_raise_when_asked(tmp_path, tokenizer):
    dm = datamodule(_with_empties(tmp_path), tokenizer, on_empty="error")
    where = tmp_path / "train.jsonl"
    with pytest.raises(ValueError, match=rf"{where} line 3 \(id '2'\): column 'article' is empty or missing.*"
                                         "on_empty=skip"):
        dm.setup("fit")


def _without_summary(tmp_path) -> tuple[LocalSource, object]:
    """Ten records without an id column; the one on line 5 (after a blank line) has no summary."""
    rows = [json.dumps({"document": f"text number {i}.", "summary": f"summary {i}"}) for i in range(10)]
    rows[3] = json.dumps({"document": "text without its summary."})
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(rows[:2] + [""] + rows[2:]) + "\n")
    return LocalSource({"train": str(path), "validation": str(path)}), path


def test_a_skipped_record_is_named_by_file_and_line_and_counted_once(tmp_path, tokenizer, caplog):
    source, path = _without_summary(tmp_path)
    dm = datamodule(source, tokenizer, id_column=None, text_column="document", summary_column="summary",
                    batch_size=3, buffer_size=9)
    dm.setup("fit")
    caplog.clear()  # the validation split (the same file) logged it once already
    with caplog.at_level("WARNING", logger="encdec"):
        batches = list(islice(iter(dm.train_dataloader()), 9))  # 9 usable records: 3 batches an epoch, 3 epochs
    for batch in batches:
        dm.on_before_batch_transfer(batch, 0)
    assert [b["skipped"] for b in batches] == [1] * 9  # once, not once per pass
    named = [r.getMessage() for r in caplog.records if "Skipping records" in r.getMessage()]
    assert len(named) == 1 and f"first: {path} line 5: column 'summary' is empty or missing" in named[0]


def test_a_refused_record_is_named_by_file_and_line(tmp_path, tokenizer):
    source, path = _without_summary(tmp_path)
    dm = datamodule(source, tokenizer, id_column=None, text_column="document", summary_column="summary",
                    on_empty="error")
    with pytest.raises(ValueError, match=rf"^{path} line 5: column 'summary' is empty or missing\. Clean the data"):
        dm.setup("fit")


def test_record_places_in_each_format_and_across_files(tmp_path):
    import datasets

    from encdec.data.files import ROW_COLUMN, record_place

    (tmp_path / "a.csv").write_text('text,summary\n"two\nlines",s1\n\nt2,s2\n')
    (tmp_path / "b.json").write_text('[{"text": "t3", "summary": "s3"},\n {"text": "t4", "summary": "s4"}]')
    datasets.Dataset.from_list([{"text": "t5", "summary": "s5"}] * 3).to_parquet(str(tmp_path / "c.parquet"))
    (tmp_path / "d.jsonl").write_text('\n{"text": "t6", "summary": "s6"}\n{"text": "t7", "summary": "s7"}\n')
    paths = [str(tmp_path / name) for name in ("a.csv", "b.json", "c.parquet", "d.jsonl")]
    places = [record_place(paths, row) for row in range(9)]
    assert places == [f"{paths[0]} line 2", f"{paths[0]} line 5", f"{paths[1]} record 1", f"{paths[1]} record 2",
                      f"{paths[2]} row 1", f"{paths[2]} row 2", f"{paths[2]} row 3", f"{paths[3]} line 2",
                      f"{paths[3]} line 3"]
    assert record_place(paths, 9) is None
    source = LocalSource({"train": str(tmp_path / "d.jsonl")})
    records = list(source.open("train"))
    assert [r[ROW_COLUMN] for r in records] == [0, 1]
    assert source.locate("train", records[1]) == f"{paths[3]} line 3"


def test_hub_dataset_offline_explains_the_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ConnectionError, match=r"(?s)offline mode.*data=local.*data=sample"):
        HubSource("abisee/cnn_dailymail", "3.0.0").open("validation")


def test_unknown_file_format_is_named(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("x")
    with pytest.raises(ValueError, match=r"\.txt"):
        LocalSource({"train": str(path)}).open("train")


@pytest.mark.parametrize("trained", [3, 6])
def test_resume_with_two_workers_keeps_the_round_robin_order(sample, tokenizer, trained):
    def loader_ids(dm, n):
        ids = []
        for batch in islice(iter(dm.train_dataloader()), n):
            ids.append(tuple(dm.on_before_batch_transfer(batch, 0)["ids"]))  # as Lightning calls it
            if len(ids) == trained:
                state.update(dm.state_dict())
        return ids

    state: dict = {}
    straight = datamodule(sample, tokenizer, num_workers=2)
    straight.setup("fit")
    ids = loader_ids(straight, trained + 5)
    resumed = datamodule(sample, tokenizer, num_workers=2)
    resumed.load_state_dict(state)
    resumed.setup("fit")
    assert loader_ids(resumed, 5) == ids[trained:]
