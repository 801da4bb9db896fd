"""Seq2SeqModule pieces and its guards, the run artefacts of encdec.training.run_records, and warm-start ids."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer as Backend
from tokenizers import models

from encdec import BertConfig, EncoderDecoderConfig, EncoderDecoderModel
from encdec.serving.parts import special_ids
from encdec.tokenization.tokenizer import Tokenizer
from encdec.training.module import (
    Seq2SeqModule,
    check_labels,
    collapsed,
    weight_decay_groups,
)
from encdec.training.run_records import AtomicCheckpointIO, replace_atomically, wandb_mode


def tiny_model(**ids) -> EncoderDecoderModel:
    side = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    return EncoderDecoderModel(EncoderDecoderConfig.from_encoder_decoder_configs(side, side, **ids))


def test_labels_padded_with_pad_id_are_refused():
    pad_padded = torch.tensor([[5, 6, 7, 102], [5, 102, 0, 0]])
    with pytest.raises(ValueError, match="-100"):
        check_labels(pad_padded, pad_token_id=0)
    check_labels(torch.tensor([[5, 6, 7, 102], [5, 102, -100, -100]]), pad_token_id=0)
    check_labels(torch.tensor([[5, 6, 7, 50256], [5, 6, 50256, -100]]), pad_token_id=50256)  # GPT-2: pad == eos


def test_collapsed_predictions_are_detected_and_warned(caplog):
    assert collapsed(["a b"] * 5, [1, 2, 3, 4, 5]) and not collapsed(["a", "b", "a", "a"], [1, 2, 3, 4])
    assert not collapsed(["a"] * 5, [1] * 5)  # identical inputs may share an output
    module = Seq2SeqModule(tiny_model(), tokenizer=None, optimizer=torch.optim.AdamW)
    module._trainer = type("T", (), {"global_step": 7})()  # noqa: SLF001 - the only state the guard reads
    with caplog.at_level(logging.WARNING, logger="encdec"):
        module._warn_if_collapsed([{"prediction": "same", "source": i} for i in range(6)])
    assert "ALL 6 VALIDATION PREDICTIONS ARE IDENTICAL" in caplog.text


def test_missing_decoder_start_token_fails_before_training():
    module = Seq2SeqModule(tiny_model(pad_token_id=0, eos_token_id=2), tokenizer=None, optimizer=torch.optim.AdamW)
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        module.on_fit_start()


def test_weight_decay_skips_biases_and_layernorm():
    model = tiny_model()
    no_decay, decay = weight_decay_groups(model, 0.01)
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim == 1 for p in no_decay["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    assert any("norm" in names[id(p)].lower() for p in no_decay["params"])
    assert decay["weight_decay"] == 0.01 and all(p.ndim >= 2 for p in decay["params"])


def test_lr_scale_gives_matching_parameters_their_own_learning_rate():
    model = tiny_model()
    groups = weight_decay_groups(model, 0.01, lr=1e-4, lr_scale={"cross_attn": 10})
    scaled = [g for g in groups if "lr" in g]
    names = {id(p): n for n, p in model.named_parameters()}
    assert scaled and all(g["lr"] == pytest.approx(1e-3) for g in scaled)
    assert all("cross_attn" in names[id(p)] for g in scaled for p in g["params"])
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())


def test_training_loss_takes_the_fast_path_with_the_plain_paths_value():
    torch.manual_seed(0)
    model = tiny_model(decoder_start_token_id=1, pad_token_id=0, eos_token_id=2)
    module = Seq2SeqModule(model, tokenizer=None, optimizer=torch.optim.AdamW).eval()  # no dropout
    batch = dict(
        input_ids=torch.tensor([[5, 6, 7, 8, 2], [9, 10, 2, 0, 0]]),
        attention_mask=torch.tensor([[1] * 5, [1, 1, 1, 0, 0]]),
        labels=torch.tensor([[11, 12, 13, 2], [14, 2, -100, -100]]),
    )
    out = module(batch)
    assert out.logits is None  # no (B, T, V) logits: the packed, chunked loss ran
    assert out.loss.item() == pytest.approx(model(**batch).loss.item(), abs=1e-6)


@pytest.mark.parametrize("schedule, factors", [
    ("linear", {0: 0.5, 1: 1.0, 2: 1.0, 5: 5 / 8, 9: 1 / 8}),  # warmup 2, then (10 - s) / 8
    ("inverse_sqrt", {0: 0.5, 1: 1.0, 3: (2 / 4) ** 0.5, 8: (2 / 9) ** 0.5}),  # sqrt(2 / (s + 1))
])
def test_composed_module_builds_the_configured_optimizer_and_schedule(compose, schedule, factors):
    """conf/module through hydra: fused AdamW, decay on matrices only, optim.lr_scale, optim.freeze and
    the chosen schedule's LR at each step, as computed by hand for 10 steps."""
    from hydra.utils import instantiate

    cfg = compose("model=tiny", "~experiment", "optim.lr=1e-3", "optim.warmup_steps=2", f"optim/scheduler={schedule}",
                  "+optim.lr_scale={cross_attn: 10}", "optim.freeze=[encoder.embeddings]", "module.table_rows=3")
    parts = instantiate(cfg.model)
    module = instantiate(cfg.module, model=parts.model, tokenizer=parts.decoder_tokenizer)
    module._trainer = type("T", (), {"estimated_stepping_batches": 10})()  # noqa: SLF001 - what sizes the schedule
    setup = module.configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"] is True
    assert module.table_rows == 3 and module.generation == dict(cfg.generation)
    names = {id(p): n for n, p in parts.model.named_parameters()}
    grouped = [(names[id(p)], p, g) for g in optimizer.param_groups for p in g["params"]]
    trained = [n for n, p in parts.model.named_parameters() if p.requires_grad]
    assert (sorted(n for n, _, _ in grouped) == sorted(trained)
            and not any(n.startswith("encoder.embeddings") for n in trained))
    for name, param, group in grouped:
        assert group["weight_decay"] == (0.01 if param.ndim >= 2 else 0.0), name
        assert group["initial_lr"] == pytest.approx(1e-2 if "cross_attn" in name else 1e-3), name
    for step in range(10):
        if step in factors:
            assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(
                [g["initial_lr"] * factors[step] for g in optimizer.param_groups]), step
        optimizer.step()
        scheduler.step()


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)
    assert torch.load(path)["step"] == 1

    def crash(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        replace_atomically(crash, path)
    assert torch.load(path)["step"] == 1 and list(tmp_path.iterdir()) == [path]


def test_wandb_goes_offline_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode() == "online" and wandb_mode("disabled") == "disabled"


def gpt2_like_tokenizer() -> Tokenizer:
    vocab = {"<|endoftext|>": 0, "a": 1, "b": 2}
    return Tokenizer(Backend(models.BPE(vocab, [])), {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": None})


def test_gpt2_roles_start_end_and_pad_with_endoftext():
    ids = special_ids({"start_token": "bos", "eos_token": "eos", "pad_token": "eos"}, gpt2_like_tokenizer())
    assert ids == {"decoder_start_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    with pytest.raises(ValueError, match=r"no 'pad' token for pad_token.*model.decoder.pad_token"):
        special_ids({"start_token": "bos", "eos_token": "eos", "pad_token": "pad"}, gpt2_like_tokenizer())
