"""A ModernBERT encoder behind a BERT or Llama decoder: warm start from transformers' folders, training
(the packed fast path: local layers run packed too), greedy and beam search, exact save/load, and the
composed folder equal to transformers' EncoderDecoderModel where transformers can build it (BERT decoder)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import (
    TINY_BERT,
    check_trains_generates_round_trips,
    lm_batch,
    reference_lm,
    reference_modernbert,
    spread_weights,
)

import encdec

BERT_IDS = dict(decoder_start_token_id=2, pad_token_id=0, eos_token_id=3)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """transformers' tiny ModernBertForMaskedLM (as published), BertLMHeadModel and LlamaForCausalLM folders."""
    import transformers

    root = tmp_path_factory.mktemp("modernbert")
    reference_modernbert("biased", masked_lm=True).save_pretrained(root / "modernbert")
    torch.manual_seed(0)
    bert = transformers.BertLMHeadModel(transformers.BertConfig(**TINY_BERT, is_decoder=True))
    spread_weights(bert).save_pretrained(root / "bert")
    reference_lm("llama").save_pretrained(root / "llama")
    return root


def batch() -> dict[str, torch.Tensor]:
    """14-token sources (longer than the local window of 4), padding inside both sides."""
    ids, mask = lm_batch(length=14, seed=3)
    labels, label_mask = lm_batch(length=6, seed=4)
    return dict(input_ids=ids, attention_mask=mask, labels=labels.masked_fill(label_mask == 0, -100))


def compose(folders, decoder):
    kwargs = BERT_IDS if decoder == "bert" else {}
    return encdec.EncoderDecoderModel.from_encoder_decoder_pretrained(folders / "modernbert", folders / decoder,
                                                                      **kwargs)


@pytest.mark.parametrize("decoder", ["bert", "llama"])
def test_trains_generates_and_round_trips(folders, decoder, tmp_path):
    model = compose(folders, decoder)
    assert model.config.encoder.packable  # local layers run on packed tokens too
    check_trains_generates_round_trips(model, batch(), tmp_path, train_steps=4)


def test_composed_folders_equal_transformers_both_ways(folders, tmp_path):
    """transformers' EncoderDecoderModel loads our modernbert2bert folder and we load its own: logits,
    loss, greedy and beam ids equal."""
    import transformers

    ours = spread_weights(compose(folders, "bert"), seed=1).eval()  # fresh cross-attention spread too,
    ours.save_pretrained(tmp_path / "ours")  # so that what is generated depends on the source
    theirs = spread_weights(transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(
        folders / "modernbert", folders / "bert"), seed=2)
    for key, value in BERT_IDS.items():
        setattr(theirs.config, key, value)
    theirs.save_pretrained(tmp_path / "theirs")
    data = batch()
    src = dict(input_ids=data["input_ids"], attention_mask=data["attention_mask"])
    for ref, model in ((transformers.EncoderDecoderModel.from_pretrained(tmp_path / "ours"), ours),
                       (theirs, encdec.EncoderDecoderModel.from_pretrained(tmp_path / "theirs"))):
        ref.eval()
        with torch.no_grad():
            expected, got = ref(**data), model(**data)
        torch.testing.assert_close(got.logits, expected.logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got.loss, expected.loss, atol=1e-4, rtol=1e-4)
        for settings in (dict(num_beams=1), dict(num_beams=3)):
            expected = ref.generate(**src, max_new_tokens=6, do_sample=False, **BERT_IDS, **settings)
            assert len({tuple(row) for row in expected.tolist()}) == 3  # each source its own tokens
            assert torch.equal(model.generate(**src, max_new_tokens=6, **BERT_IDS, **settings), expected)
