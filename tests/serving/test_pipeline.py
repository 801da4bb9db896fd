"""The first example of transformers' documentation with the import switched:
`pipeline("summarization", model=..., device=...)(documents, max_length=..., ...)`, checked against
transformers' EncoderDecoderModel generating from the same tiny folder, decoded as its pipeline did
(skip_special_tokens=True, no clean-up of spaces)."""

import pytest
import torch
from tiny_models import write_word_model

import encdec
from encdec import pipeline
from encdec.base.errors import UsageError

transformers = pytest.importorskip("transformers")

DOCUMENTS = ["w10 w11 w12 w13 w14", "w50 w60 w70", "w33 w7 w8 w9 w21 w22 w23 w40"]
SETTINGS = [dict(), dict(max_length=9, min_length=4, do_sample=False),
            dict(max_length=10, num_beams=3, length_penalty=2.0, no_repeat_ngram_size=2, early_stopping=True)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_word_model(tmp_path_factory.mktemp("pipeline"))


@pytest.fixture(scope="module")
def reference(folder):
    """transformers' model and tokenizer of the folder: summaries as its pipeline made them."""
    model = transformers.EncoderDecoderModel.from_pretrained(folder).eval()
    tokenizer = transformers.BertTokenizer.from_pretrained(folder)

    def summarize(document: str, **settings) -> tuple[list[int], str]:
        enc = tokenizer(document, return_tensors="pt")
        ids = model.generate(enc.input_ids, attention_mask=enc.attention_mask, **settings)[0]
        return ids.tolist(), tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    return summarize


@pytest.mark.parametrize("settings", SETTINGS, ids=["stored", "min_length", "beams"])
def test_summaries_equal_transformers(folder, reference, settings):
    summarizer = pipeline("summarization", model=str(folder), device=-1)
    expected = [reference(d, **settings)[1] for d in DOCUMENTS]
    assert summarizer(DOCUMENTS, **settings) == [{"summary_text": text} for text in expected]
    assert summarizer(DOCUMENTS[0], **settings) == [{"summary_text": expected[0]}]  # a string: a list of one
    assert len(set(expected)) > 1  # the tiny model's summaries depend on the document


def test_pipeline_keywords_are_defaults_and_tensors_are_the_ids(folder, reference):
    summarizer = pipeline("summarization", model=folder, tokenizer=str(folder), device="cpu", max_length=7,
                          num_beams=2)
    ids, text = reference(DOCUMENTS[2], max_length=7, num_beams=2)
    assert summarizer(DOCUMENTS[2]) == [{"summary_text": text}]
    got = summarizer(DOCUMENTS[2], return_tensors=True)
    assert list(got[0]) == ["summary_token_ids"] and got[0]["summary_token_ids"].tolist() == ids
    assert summarizer([DOCUMENTS[2]], max_length=5, truncation=True) == [
        {"summary_text": reference(DOCUMENTS[2], max_length=5, num_beams=2)[1]}]


def test_a_loaded_model_and_tokenizer(folder, reference):
    model = encdec.AutoModelForSeq2SeqLM.from_pretrained(folder)
    tokenizer = encdec.AutoTokenizer.from_pretrained(folder)
    summarizer = pipeline("summarization", model=model, tokenizer=tokenizer, batch_size=2)
    assert summarizer(DOCUMENTS, max_length=8) == [{"summary_text": reference(d, max_length=8)[1]} for d in DOCUMENTS]
    assert summarizer.model is model and summarizer.device == torch.device("cpu")


@pytest.mark.parametrize("call, message", [
    (lambda f: pipeline("sentiment-analysis", model=f), "Task 'sentiment-analysis' is not supported"),
    (lambda f: pipeline("summarization"), "needs model="),
    (lambda f: pipeline("summarization", model=f, max_lenght=5), r"Unknown pipeline argument\(s\) \['max_lenght'\]"),
    (lambda f: pipeline("summarization", model=encdec.AutoModelForSeq2SeqLM.from_pretrained(f)), "needs tokenizer="),
    (lambda f: pipeline("summarization", model=f)("w5", num_beam=2), r"\['num_beam'\]"),
    (lambda f: pipeline("summarization", model=f)(42), "a string or a list of strings"),
])
def test_bad_arguments_are_one_clear_error(folder, call, message):
    with pytest.raises(UsageError, match=message) as caught:
        call(folder)
    assert "\n" not in str(caught.value)


def test_cuda_device_without_cuda_is_refused_before_loading(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UsageError, match="device=0 \\(CUDA device cuda:0\\)"):
        pipeline("summarization", model=tmp_path / "not-even-a-model", device=0)
