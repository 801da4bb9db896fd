"""Training knobs on decoder-only LM decoders: `optim.freeze=[decoder.lm]` trains only the added
cross-attention (its norms and gates), gradient checkpointing gives the same gradients, bf16-mixed
training steps run, and an LM decoder without start or pad id fails in one line naming the keys."""

from __future__ import annotations

import functools

import pytest
import torch
from lightning import Trainer
from tiny_models import TINY_BERT, lm_batch, reference_lm

import encdec
from encdec.training.module import Seq2SeqModule


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    import transformers

    root = tmp_path_factory.mktemp("lm_train")
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(**TINY_BERT)).save_pretrained(root / "bert")
    reference_lm("llama").save_pretrained(root / "llama")
    return root


def model_of(folders, kind="gated"):
    model = encdec.EncoderDecoderModel.from_encoder_decoder_pretrained(
        folders / "bert", folders / "llama", cross_attention_init=kind, encoder_hidden_dropout_prob=0.0,
        encoder_attention_probs_dropout_prob=0.0)
    return model.train()


def batches(n: int) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(n):
        ids, mask = lm_batch(seed=10 + i)
        labels, label_mask = lm_batch(length=6, seed=20 + i)
        out.append(dict(input_ids=ids, attention_mask=mask, labels=labels.masked_fill(label_mask == 0, -100)))
    return out


def fit(module, steps, tmp_path, precision="32-true"):
    trainer = Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      default_root_dir=tmp_path, precision=precision)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches(steps), batch_size=None))


def test_freezing_the_lm_trains_only_the_cross_attention(folders, tmp_path):
    model = model_of(folders)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    module = Seq2SeqModule(model, tokenizer=None, optimizer=functools.partial(torch.optim.AdamW, lr=1e-2),
                           freeze=["decoder.lm"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("decoder.")}
    assert trainable and all(".cross_attn" in n for n in trainable)
    assert any(n.endswith("cross_attn_gate") for n in trainable) and any("cross_attn_norm" in n for n in trainable)
    fit(module, 3, tmp_path)
    for name, param in model.named_parameters():
        changed = not torch.equal(param, before[name])
        if name.startswith("decoder.") and ".cross_attn" not in name:
            assert not changed, name
    assert not torch.equal(model.decoder.layers[0].cross_attn_gate, before["decoder.layers.0.cross_attn_gate"])


def test_gradient_checkpointing_gives_the_same_gradients(folders):
    model = model_of(folders, "copy")
    data = batches(1)[0]

    def grads():
        model.zero_grad()
        model(**data, return_logits=False).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.gradient_checkpointing_enable()
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["gated", "merged"])
def test_bf16_mixed_steps_train(folders, tmp_path, kind):
    model = model_of(folders, kind)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    module = Seq2SeqModule(model, tokenizer=None, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3))
    fit(module, 2, tmp_path, precision="bf16-mixed")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n.startswith("decoder.layers"))


def test_an_lm_without_start_or_pad_id_names_the_keys(folders, tmp_path):
    import transformers

    config = transformers.Qwen2Config(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2)  # no bos, eos or pad
    transformers.Qwen2ForCausalLM(config).save_pretrained(tmp_path / "qwen")
    model = encdec.EncoderDecoderModel.from_encoder_decoder_pretrained(folders / "bert", tmp_path / "qwen")
    with pytest.raises(ValueError, match=r"model\.config\.decoder_start_token_id and model\.config\.pad_token_id "
                                         r"must be set"):
        model(**batches(1)[0])
