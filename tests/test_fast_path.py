"""The training fast paths (labelled-positions-only chunked loss, activation checkpointing) give the
same loss and gradients as the plain path on padded batches."""

import pytest
import torch

from encdec import EncoderDecoderModel
from tiny_models import encdec_config, padded_batch


def _loss_and_grads(model, batch, **kwargs):
    model.zero_grad()
    loss = model(**batch, **kwargs).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["bert2bert", "bert2gpt2", "roberta2roberta"])
def test_labelled_loss_equals_full_logits_loss(name):
    torch.manual_seed(0)
    model = EncoderDecoderModel(encdec_config(name)).eval()
    batch = padded_batch(name, batch=4, tgt_len=9)
    plain_loss, plain_grads = _loss_and_grads(model, batch)
    for chunk in (1024, 5):  # one chunk, and many (chunk boundaries inside rows)
        model.loss_chunk_size = chunk
        fast_loss, fast_grads = _loss_and_grads(model, batch, return_logits=False)
        torch.testing.assert_close(fast_loss, plain_loss, atol=1e-5, rtol=0)
        assert fast_grads.keys() == plain_grads.keys()
        for key in plain_grads:
            torch.testing.assert_close(fast_grads[key], plain_grads[key], atol=1e-5, rtol=0, msg=key)


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
