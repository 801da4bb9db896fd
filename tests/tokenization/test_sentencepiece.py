"""SentencePiece folders (spiece.model, sentencepiece.bpe.model) give transformers' ids, special
tokens and decoded text, on real SentencePiece models trained here on a few hundred lines."""

import json

import pytest
from tiny_models import BERT_GENERATION_IDS, train_sentencepiece

from encdec import load_tokenizer
from encdec.tokenization.sentencepiece import CONTROL, read_spm_model

spm = pytest.importorskip("sentencepiece")
transformers = pytest.importorskip("transformers")

TEXTS = [
    "Would you like to grab a coffee with me this week?",
    "  Größe   der  straße, déjà vu!  ",  # extra spaces, accents
    "zoë\tand\nxylophone ♥ 漢字",  # tabs, newlines, characters the model never saw
    "<s> hello </s> world",  # special tokens written in the text
    "hello<mask> world <pad>",
    "",
    "UPPER case Fox",
]


@pytest.fixture(scope="module")
def models():
    # bert-generation checkpoints put pad, eos, bos at 0, 1, 2 (their config.json says so)
    return {(kind, ids): train_sentencepiece(kind, **(BERT_GENERATION_IDS if ids == "bertgen" else {}))
            for kind in ("unigram", "bpe") for ids in ("bertgen", "default")}


def folder_for(layout: str, kind: str, models, root):
    """A folder in the layout transformers' users meet on the Hub."""
    folder = root / f"{layout}-{kind}"
    folder.mkdir()
    if layout == "bert-generation":  # saved by transformers: spiece.model, tokenizer_config.json, added_tokens.json
        (root / "spiece.model").write_bytes(models[kind, "bertgen"])
        transformers.BertGenerationTokenizer(str(root / "spiece.model")).save_pretrained(folder)
    else:  # a bare sentencepiece.bpe.model beside the model's config.json
        (folder / "sentencepiece.bpe.model").write_bytes(models[kind, "default"])
        (folder / "config.json").write_text(json.dumps({"model_type": layout}))
    return folder


CASES = [("bert-generation", "unigram"), ("bert-generation", "bpe"), ("xlm-roberta", "unigram"),
         ("xlm-roberta", "bpe"), ("camembert", "unigram")]  # transformers itself cannot load a BPE camembert


def assert_same(ours, ref, texts=TEXTS):
    for role in ("bos", "eos", "unk", "sep", "pad", "cls", "mask"):
        expected = getattr(ref, f"{role}_token", None)
        assert getattr(ours, f"{role}_token") == (None if expected is None else str(expected)), role
        assert getattr(ours, f"{role}_token_id") == getattr(ref, f"{role}_token_id", None), role
    assert ours.vocab_size == len(ref)
    for text in texts:
        for add in (True, False):
            expected = ref(text, add_special_tokens=add)["input_ids"]
            assert ours(text, add_special_tokens=add, return_tensors=None)["input_ids"] == expected, (text, add)
        ids = ref(text)["input_ids"]
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip), (text, skip)


@pytest.mark.parametrize("layout, kind", CASES)
def test_ids_specials_and_text_match_transformers(layout, kind, models, tmp_path):
    folder = folder_for(layout, kind, models, tmp_path)
    assert_same(load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(folder))


def test_special_token_overrides_as_in_the_translation_example(models, tmp_path):
    """The bert2bert_L-24_wmt_en_de card loads its tokenizer with pad/eos/bos overrides."""
    folder = folder_for("bert-generation", "unigram", models, tmp_path)
    kwargs = dict(pad_token="<pad>", eos_token="</s>", bos_token="<s>", sep_token="</s>")
    ref = transformers.AutoTokenizer.from_pretrained(folder, **kwargs)
    assert_same(load_tokenizer(folder, **kwargs), ref)
    assert ref.sep_token == "</s>"  # the override took, so the comparison above tests it


def test_saved_folder_loads_in_both_libraries(models, tmp_path):
    for layout, kind in (("bert-generation", "unigram"), ("xlm-roberta", "unigram")):
        ours = load_tokenizer(folder_for(layout, kind, models, tmp_path))
        saved = ours.save_pretrained(tmp_path / f"saved-{layout}")
        assert_same(load_tokenizer(saved), transformers.AutoTokenizer.from_pretrained(saved))
        assert_same(ours, transformers.AutoTokenizer.from_pretrained(saved))


def test_model_file_reader_agrees_with_sentencepiece(models, tmp_path):
    path = tmp_path / "m.model"
    path.write_bytes(models["bpe", "bertgen"])
    ours, ref = read_spm_model(path), spm.SentencePieceProcessor(model_file=str(path))
    assert [p for p, _, _ in ours.pieces] == [ref.id_to_piece(i) for i in range(ref.get_piece_size())]
    assert [s for _, s, _ in ours.pieces] == pytest.approx([ref.get_score(i) for i in range(ref.get_piece_size())])
    assert [t == CONTROL for _, _, t in ours.pieces] == [ref.is_control(i) for i in range(ref.get_piece_size())]
    assert (ours.unk_id, ours.model_type, ours.add_dummy_prefix) == (ref.unk_id(), 2, True)
    assert ours.precompiled_charsmap  # nmt_nfkc


def test_unknown_sentencepiece_class_is_refused(models, tmp_path):
    (tmp_path / "spiece.model").write_bytes(models["unigram", "default"])
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer"}))
    with pytest.raises(ValueError, match="tokenizer_class 'T5Tokenizer'.*knows the layouts of BertGenerationTokenizer"):
        load_tokenizer(tmp_path)


def test_unknown_override_is_refused(models, tmp_path):
    folder = folder_for("xlm-roberta", "unigram", models, tmp_path)
    with pytest.raises(TypeError, match=r"Unknown tokenizer argument\(s\) \['pad_tokn'\]"):
        load_tokenizer(folder, pad_tokn="<pad>")
