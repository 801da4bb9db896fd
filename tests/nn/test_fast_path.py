"""The training fast paths (packed tokens, labelled-positions-only chunked loss, activation
checkpointing) give the same loss and gradients as the plain path on padded batches."""

import pytest
import torch
from tiny_models import PAIRS, encdec_config, padded_batch, train_losses

from encdec import EncoderDecoderModel


def _loss_and_grads(model, batch, **kwargs):
    model.zero_grad()
    loss = model(**batch, **kwargs).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_fast_path_matches_plain(model, batch, **kwargs) -> None:
    """Loss and every gradient of the fast path equal the plain path's."""
    plain_loss, plain_grads = _loss_and_grads(model, batch, **kwargs)
    fast_loss, fast_grads = _loss_and_grads(model, batch, return_logits=False, **kwargs)
    torch.testing.assert_close(fast_loss, plain_loss, atol=1e-5, rtol=0)
    assert fast_grads.keys() == plain_grads.keys()
    for key in plain_grads:
        torch.testing.assert_close(fast_grads[key], plain_grads[key], atol=1e-5, rtol=0, msg=key)


@pytest.mark.parametrize("name", ["bert2bert", "bert2gpt2", "roberta2roberta", "bertshare"])
def test_labelled_loss_equals_full_logits_loss(name):
    torch.manual_seed(0)
    model = EncoderDecoderModel(encdec_config(name)).eval()
    batch = padded_batch(name, batch=4, tgt_len=9)
    for chunk in (None, 5):  # the default (one chunk here), and many (boundaries inside rows)
        model.loss_chunk_size = chunk
        assert_fast_path_matches_plain(model, batch)


def test_fast_path_returns_no_logits():
    model = EncoderDecoderModel(encdec_config("bert2bert"))
    out = model(**padded_batch("bert2bert"), return_logits=False)
    assert out.logits is None and out.loss is not None


def test_activation_checkpointing_same_gradients_with_dropout():
    torch.manual_seed(0)
    model = EncoderDecoderModel(encdec_config("bert2bert")).train()
    batch = padded_batch("bert2bert")
    torch.manual_seed(1)
    plain_loss, plain_grads = _loss_and_grads(model, batch)
    model.gradient_checkpointing_enable()
    torch.manual_seed(1)
    ckpt_loss, ckpt_grads = _loss_and_grads(model, batch)
    torch.testing.assert_close(ckpt_loss, plain_loss, atol=1e-6, rtol=0)
    for key in plain_grads:
        torch.testing.assert_close(ckpt_grads[key], plain_grads[key], atol=1e-5, rtol=0, msg=key)


def _ragged_batch(name):
    """Harder padding: a source with one real token, one with none, labels of one token, and (for
    GPT-2, whose pad is its start and EOS) pad ids inside the decoder inputs."""
    batch = padded_batch(name, batch=4, src_len=13, tgt_len=10, seed=2)
    pad = PAIRS[name][4]["pad_token_id"] if name != "bert2gpt2" else 0
    batch["attention_mask"][3, 1:] = 0
    batch["attention_mask"][2] = 0
    batch["input_ids"][batch["attention_mask"] == 0] = pad
    batch["labels"][3, 1:] = -100
    if name == "bert2gpt2":
        batch["labels"][0, 4] = 98  # EOS = pad: the next decoder input is masked as a key
    return batch


@pytest.mark.parametrize("name", ["bert2bert", "bert2gpt2", "roberta2roberta", "bertshare"])
def test_packed_fast_path_on_ragged_batch(name):
    torch.manual_seed(0)
    model = EncoderDecoderModel(encdec_config(name)).eval()
    batch = _ragged_batch(name)
    plain = model(**batch)
    fast = model(**batch, return_logits=False)
    real = batch["attention_mask"].bool()
    fast_hidden, plain_hidden = fast.encoder_last_hidden_state[real], plain.encoder_last_hidden_state[real]
    torch.testing.assert_close(fast_hidden, plain_hidden, atol=1e-5, rtol=0)
    assert_fast_path_matches_plain(model, batch)


def test_packed_fast_path_with_given_decoder_inputs_and_encoder_outputs():
    """Explicit decoder_input_ids without a mask (every position a key) and precomputed encoder outputs."""
    torch.manual_seed(0)
    model = EncoderDecoderModel(encdec_config("bert2bert")).eval()
    batch = padded_batch("bert2bert")
    decoder_input_ids = torch.randint(3, 98, batch["labels"].shape)
    encoder_outputs = model.encode(batch["input_ids"], batch["attention_mask"])
    kwargs = dict(batch, decoder_input_ids=decoder_input_ids, encoder_outputs=(encoder_outputs,))
    del kwargs["input_ids"]
    torch.testing.assert_close(model(**kwargs, return_logits=False).loss, model(**kwargs).loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_training_with_dropout_lowers_the_loss(checkpointing):
    torch.manual_seed(0)
    config = encdec_config("bert2bert")
    for side in (config.encoder, config.decoder):
        side.attention_probs_dropout_prob = side.hidden_dropout_prob = 0.2
    model = EncoderDecoderModel(config)
    model.gradient_checkpointing_enable(checkpointing)
    losses = train_losses(model, padded_batch("bert2bert", batch=4), steps=30, lr=3e-3, return_logits=False)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
