"""GPU checks of the training fast path; skipped without CUDA. Run them all, with the GPU
benchmark, in one go: `bash tests/gpu/run.sh` (under 10 minutes on one GPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: tiny_models

from tiny_models import PAIRS, encdec_config, padded_batch  # noqa: E402

from encdec import EncoderDecoderModel  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _loss_and_grads(model, batch, dtype, **kwargs):
    model.zero_grad()
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        loss = model(**batch, **kwargs).loss
    loss.backward()
    return loss.detach().float(), {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}


def _worst(grads, reference):
    return max(float(torch.linalg.vector_norm(grads[k] - reference[k]) / torch.linalg.vector_norm(reference[k]))
               for k in reference)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 0.04)])
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_fast_path_matches_plain_path_on_cuda(name, dtype, tolerance):
    torch.manual_seed(0)
    model = EncoderDecoderModel(encdec_config(name)).cuda().eval()
    batch = {k: v.cuda() for k, v in padded_batch(name, batch=4, tgt_len=9).items()}
    plain_loss, plain = _loss_and_grads(model, batch, dtype)
    fast_loss, fast = _loss_and_grads(model, batch, dtype, return_logits=False)
    torch.testing.assert_close(fast_loss, plain_loss, atol=tolerance * 10, rtol=0)
    assert fast.keys() == plain.keys() and _worst(fast, plain) < tolerance


def _bert2bert_of_width(head_dim: int) -> EncoderDecoderModel:
    from encdec import BertConfig, EncoderDecoderConfig

    side = BertConfig(vocab_size=200, hidden_size=4 * head_dim, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config = EncoderDecoderConfig.from_encoder_decoder_configs(
        side, side, decoder_start_token_id=2, pad_token_id=0, eos_token_id=3
    )
    return EncoderDecoderModel(config).cuda().train()


def test_one_attention_kernel_per_layer_and_direction():
    """bf16, no attention dropout: the varlen kernel, one forward and one backward call per
    attention layer (encoder self, decoder self, decoder cross), never one per sequence."""
    from torch.profiler import ProfilerActivity, profile

    model = _bert2bert_of_width(16)
    batch = {k: v.cuda() for k, v in padded_batch("bert2bert", batch=8, tgt_len=9).items()}
    layers = 2 + 2 * 2
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**batch, return_logits=False).loss
        loss.backward()
    names = [e.name for e in prof.events()]
    forward = [n for n in names if "attention" in n and "backward" not in n and n.startswith("aten::_")]
    backward = [n for n in names if "attention" in n and "backward" in n and n.startswith("aten::_")]
    assert 0 < len(forward) <= layers and 0 < len(backward) <= layers, (forward, backward)


@pytest.mark.parametrize("kind", ["gated", "copy", "merged"])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 0.05)])
def test_lm_decoders_fast_path_matches_plain_path_on_cuda(tmp_path, kind, dtype, tolerance):
    """A tiny Llama decoder (grouped-query attention, RoPE) behind a tiny BERT, on CUDA: the packed
    training path (varlen kernel in bf16; padded for merged) gives the plain path's loss and
    gradients, and greedy and beam generation run."""
    import transformers
    from tiny_models import TINY_BERT, reference_lm

    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(**TINY_BERT)).save_pretrained(tmp_path / "bert")
    reference_lm("llama").save_pretrained(tmp_path / "llama")
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(
        tmp_path / "bert", tmp_path / "llama", cross_attention_init=kind, encoder_hidden_dropout_prob=0.0,
        encoder_attention_probs_dropout_prob=0.0).cuda()
    if kind == "gated":
        with torch.no_grad():
            for layer in model.decoder.layers:
                layer.cross_attn_gate.fill_(0.5)
    batch = {k: v.cuda() for k, v in padded_batch("bert2bert", batch=4, tgt_len=9).items()}
    batch["labels"] = batch["labels"].clamp(max=98)
    plain_loss, plain = _loss_and_grads(model, batch, dtype)
    fast_loss, fast = _loss_and_grads(model, batch, dtype, return_logits=False)
    torch.testing.assert_close(fast_loss, plain_loss, atol=tolerance * 10, rtol=0)
    assert fast.keys() == plain.keys() and _worst(fast, plain) < tolerance
    model.eval()
    src = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert model.generate(**src, max_new_tokens=4).shape[0] == 4
    assert model.generate(**src, max_new_tokens=4, num_beams=3).shape[0] == 4
