"""T5Gemma checkpoints (model_type t5gemma) load with EncoderDecoderModel.from_pretrained: logits,
greedy and beam ids equal transformers' T5GemmaForConditionalGeneration on a tiny random model with
padding, sliding windows and soft-capping; saved back, transformers loads the same model."""

from __future__ import annotations

import pytest
import torch
from tiny_models import lm_batch

import encdec

MODULE = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=12, sliding_window=3,
              attn_logit_softcapping=5.0, final_logit_softcapping=3.0, max_position_embeddings=64)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    import transformers

    path = tmp_path_factory.mktemp("t5gemma")
    config = transformers.T5GemmaConfig(encoder=MODULE, decoder=dict(MODULE, num_hidden_layers=2), vocab_size=99)
    torch.manual_seed(0)
    model = transformers.T5GemmaForConditionalGeneration(config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.save_pretrained(path)
    return path


def reference(folder):
    import transformers

    return transformers.T5GemmaForConditionalGeneration.from_pretrained(folder, attn_implementation="eager").eval()


def inputs():
    src, src_mask = lm_batch(seed=2)
    tgt, tgt_mask = lm_batch(length=6, seed=3)
    return dict(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask)


def test_logits_equal_transformers(folder):
    ours, theirs = encdec.EncoderDecoderModel.from_pretrained(folder), reference(folder)
    batch = inputs()
    with torch.no_grad():
        got, expected = ours(**batch).logits, theirs(**batch).logits
    keep = batch["decoder_attention_mask"].bool()
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-4, rtol=1e-4)
    assert ours.config.decoder_start_token_id == theirs.config.decoder.bos_token_id


@pytest.mark.parametrize("settings", [dict(), dict(num_beams=3, length_penalty=2.0, no_repeat_ngram_size=2)])
def test_generated_ids_equal_transformers(folder, settings):
    ours, theirs = encdec.EncoderDecoderModel.from_pretrained(folder), reference(folder)
    batch = inputs()
    src = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, **settings)
    expected = theirs.generate(**src, **kwargs)
    assert torch.equal(ours.generate(**src, **kwargs), expected)


def test_saves_back_in_the_t5gemma_layout(folder, tmp_path):
    import transformers

    encdec.EncoderDecoderModel.from_pretrained(folder).save_pretrained(tmp_path)
    config = transformers.AutoConfig.from_pretrained(tmp_path)
    assert config.model_type == "t5gemma"
    again = transformers.T5GemmaForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    batch = inputs()
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, reference(folder)(**batch).logits, atol=1e-5, rtol=1e-5)
