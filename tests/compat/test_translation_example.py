"""The translation example of transformers' EncoderDecoderModel documentation and of the
google/bert2bert_L-24_wmt_en_de card, with only the import changed, on a tiny random bert-generation
folder with a SentencePiece tokenizer saved by transformers: the same tokens and text."""

import pytest
import torch
from tiny_models import BERT_GENERATION_IDS, TINY_BERT_GENERATION, spread_weights, train_sentencepiece

import encdec

transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """bert2bert_L-24_wmt_en_de's layout: spiece.model + BertGenerationTokenizer config, and a
    bert-generation EncoderDecoderModel (pad 0, eos 1, start at bos 2)."""
    path = tmp_path_factory.mktemp("bert2bert_wmt")
    (path / "spiece.model").write_bytes(train_sentencepiece(**BERT_GENERATION_IDS))
    tokenizer = transformers.BertGenerationTokenizer(str(path / "spiece.model"))
    tokenizer.save_pretrained(path)
    sides = [transformers.BertGenerationConfig(**{**TINY_BERT_GENERATION, "vocab_size": len(tokenizer)}) for _ in "ed"]
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(*sides)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 0, 1
    torch.manual_seed(0)
    spread_weights(transformers.EncoderDecoderModel(config=config), std=0.3).save_pretrained(path)
    return path


def documentation_example(library, path, **call):
    """The example's code; `library` is transformers or encdec (the only change)."""
    tokenizer = library.AutoTokenizer.from_pretrained(path, pad_token="<pad>", eos_token="</s>", bos_token="<s>")
    model = library.EncoderDecoderModel.from_pretrained(path)

    sentence = "Would you like to grab a coffee with me this week?"

    input_ids = tokenizer(sentence, return_tensors="pt", **call).input_ids
    output_ids = model.generate(input_ids)[0]
    return input_ids, output_ids, tokenizer.decode(output_ids, skip_special_tokens=True)


@pytest.mark.parametrize("call", [{}, {"add_special_tokens": False}], ids=["docs", "model-card"])
def test_translation_example_gives_transformers_tokens(folder, call):
    with torch.no_grad():
        expected = documentation_example(transformers, folder, **call)
    got = documentation_example(encdec, folder, **call)
    assert torch.equal(got[0], expected[0])
    assert torch.equal(got[1], expected[1]), f"\n{expected[1]}\n{got[1]}"
    assert got[2] == expected[2] and len(expected[1]) > 5 and expected[2].strip()
