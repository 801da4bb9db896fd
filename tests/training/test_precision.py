"""Mixed precision and loss normalisation: the training fast path under bf16/fp16 autocast, and
gradients that equal one big batch's under gradient accumulation and DDP."""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY, run_train
from lightning import Trainer
from safetensors.torch import load_file
from tiny_models import PAIRS, encdec_config, padded_batch

from encdec import BertConfig, EncoderDecoderConfig, EncoderDecoderModel
from encdec.training.module import Seq2SeqModule


def _loss_and_grads(model, batch, dtype, loss_scale=1.0, **kwargs):
    """Loss and parameter gradients under autocast (none for float32). fp16 needs a loss scale,
    as GradScaler gives it, or small gradients underflow."""
    model.zero_grad()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        loss = model(**batch, **kwargs).loss
    (loss * loss_scale).backward()
    return loss.detach(), {n: p.grad / loss_scale for n, p in model.named_parameters() if p.grad is not None}


def _worst_relative_error(grads, reference):
    return max(float(torch.linalg.vector_norm(grads[k] - reference[k]) / torch.linalg.vector_norm(reference[k]))
               for k in reference)


@pytest.mark.parametrize("dtype, loss_scale, tolerance", [(torch.bfloat16, 1.0, 0.04), (torch.float16, 1024.0, 0.01)])
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_fast_path_under_autocast_matches_plain_path(name, dtype, loss_scale, tolerance):
    """Same loss and gradients as the plain path under the same autocast (each within the
    precision's tolerance of the fp32 gradients too); fp32 loss, gradients in the fp32 params' dtype."""
    torch.manual_seed(0)
    model = EncoderDecoderModel(encdec_config(name)).eval()
    batch = padded_batch(name, batch=4, tgt_len=9)
    model.loss_chunk_size = 5  # several chunks, with boundaries inside rows
    plain_loss, plain = _loss_and_grads(model, batch, dtype, loss_scale)
    fast_loss, fast = _loss_and_grads(model, batch, dtype, loss_scale, return_logits=False)
    _, exact = _loss_and_grads(model, batch, torch.float32)
    assert fast_loss.dtype == torch.float32 and torch.isfinite(fast_loss)
    torch.testing.assert_close(fast_loss, plain_loss, atol=1e-3, rtol=0)
    assert fast.keys() == plain.keys()
    assert all(g.dtype == torch.float32 for g in fast.values())
    assert _worst_relative_error(fast, plain) < tolerance
    assert _worst_relative_error(fast, exact) < tolerance and _worst_relative_error(plain, exact) < tolerance


def test_fast_path_with_dropout_and_checkpointing_runs_under_bf16():
    torch.manual_seed(0)
    model = EncoderDecoderModel(encdec_config("bert2bert")).train()
    model.gradient_checkpointing_enable()
    loss, grads = _loss_and_grads(model, padded_batch("bert2bert"), torch.bfloat16, return_logits=False)
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads.values())


# ---------------------------------------------------------------- through Lightning


def _no_dropout_model() -> EncoderDecoderModel:
    side = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=24, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config = EncoderDecoderConfig.from_encoder_decoder_configs(
        side, side, decoder_start_token_id=2, pad_token_id=0, eos_token_id=3
    )
    torch.manual_seed(0)
    return EncoderDecoderModel(config)


def _micro_batch(rows: int, src_len: int, labelled: int, tgt_len: int, seed: int) -> dict[str, torch.Tensor]:
    """`rows` examples whose labels carry `labelled` tokens each (the rest -100)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(4, 60, (rows, tgt_len), generator=g)
    labels[:, labelled:] = -100
    return {"input_ids": torch.randint(4, 60, (rows, src_len), generator=g),
            "attention_mask": torch.ones(rows, src_len, dtype=torch.long), "labels": labels}


MICRO_BATCHES = [_micro_batch(3, 9, 12, 12, seed=1), _micro_batch(1, 5, 2, 12, seed=2)]  # 36 vs 2 label tokens


def token_mean_gradients(model: EncoderDecoderModel, batches: list[dict]) -> dict[str, torch.Tensor]:
    """The gradient of sum(token losses) / (label tokens) over all batches: one big batch."""
    model = copy.deepcopy(model).train()
    tokens = sum(int(b["labels"].ne(-100).sum()) for b in batches)
    total = sum(model(**b).loss * int(b["labels"].ne(-100).sum()) for b in batches) / tokens
    total.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def sgd_module(model: EncoderDecoderModel) -> Seq2SeqModule:
    """With plain SGD at lr 1 and no weight decay, one step moves each parameter by -gradient."""
    return Seq2SeqModule(model, tokenizer=None, optimizer=functools.partial(torch.optim.SGD, lr=1.0), weight_decay=0.0)


def test_accumulation_weighs_every_label_token_equally(tmp_path):
    """Two micro-batches with 36 and 2 label tokens, accumulated: the step is the gradient of the
    token mean over both (the mean of the two means would weigh the 2 tokens 18x more)."""
    model = _no_dropout_model()
    expected = token_mean_gradients(model, MICRO_BATCHES)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = Trainer(
        accelerator="cpu", max_steps=1, accumulate_grad_batches=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
    )
    trainer.fit(sgd_module(model), train_dataloaders=torch.utils.data.DataLoader(MICRO_BATCHES, batch_size=None))
    for name, grad in expected.items():
        step = before[name] - dict(model.named_parameters())[name].detach()
        torch.testing.assert_close(step, grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.slow
def test_ddp_step_weighs_every_label_token_equally(tmp_path):
    """2 gloo ranks x 2 accumulated micro-batches of different sizes: the same step as the token
    mean over all four (tests/training/ddp_accumulation_probe.py runs the ranks)."""
    batches = [_micro_batch(3, 9, 12, 12, seed=1), _micro_batch(1, 5, 2, 12, seed=2),
               _micro_batch(2, 7, 5, 12, seed=3), _micro_batch(1, 6, 11, 12, seed=4)]
    torch.save(batches, tmp_path / "batches.pt")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "training" / "ddp_accumulation_probe.py"), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    expected = token_mean_gradients(_no_dropout_model(), batches)
    step = torch.load(tmp_path / "step.pt")
    for name, grad in expected.items():
        torch.testing.assert_close(step[name], grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("name, precision", [(n, "bf16-mixed") for n in sorted(PAIRS)] + [("bert2bert", "16-mixed")])
def test_mixed_precision_training_lowers_the_loss_and_keeps_fp32_weights(name, precision, tmp_path):
    torch.manual_seed(0)
    model = EncoderDecoderModel(encdec_config(name))
    batch = padded_batch(name, batch=4, tgt_len=9)
    with torch.no_grad():
        loss_before = float(model.eval()(**batch).loss)
    module = Seq2SeqModule(model, tokenizer=None, optimizer=functools.partial(torch.optim.AdamW, lr=3e-3, fused=True))
    trainer = Trainer(
        accelerator="cpu", precision=precision, max_steps=6, gradient_clip_val=1.0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader([batch] * 6, batch_size=None))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        loss_after = float(model.eval()(**batch).loss)
    assert torch.isfinite(torch.tensor(loss_after)) and loss_after < loss_before - 0.2, (loss_before, loss_after)


@pytest.mark.slow
def test_gpu_recipe_settings_run_on_cpu_and_export_fp32(tmp_path, cache_dir):
    """trainer=gpu (bf16-mixed, clipping, fused AdamW) with the accelerator switched to cpu and 2
    accumulated micro-batches: bf16 validation generation, an fp32 export that transformers loads
    with the same logits, and evaluate.py with dtype=bfloat16 on it."""
    run = tmp_path / "run"
    result = run_train([*TINY, "trainer=gpu", "trainer.accelerator=cpu", "trainer.accumulate_grad_batches=2",
                        f"hydra.run.dir={run}"], tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-4000:]
    folder = run / "best_model"
    assert {t.dtype for t in load_file(folder / "model.safetensors").values()} == {torch.float32}
    import transformers

    ours = EncoderDecoderModel.from_pretrained(folder)
    theirs = transformers.EncoderDecoderModel.from_pretrained(folder).eval()
    ids = torch.tensor([[101, 7592, 2088, 102]])
    labels = torch.tensor([[7592, 2088, 102]])
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids, labels=labels).logits,
                                   theirs(input_ids=ids, labels=labels).logits, atol=1e-4, rtol=0)
    out = tmp_path / "eval"
    env = dict(os.environ, ENCDEC_CACHE=str(cache_dir), OMP_NUM_THREADS="1")
    evaluation = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), f"model_path={folder}", "dtype=bfloat16", "limit=4",
         "data.source.n_train=96", "data.source.n_validation=8", "data.source.n_test=8",
         "generation.max_length=8", "bootstrap_samples=20", f"output_dir={out}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert evaluation.returncode == 0, evaluation.stderr[-4000:]
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 4
