"""Training options users bring from Seq2SeqTrainer and fairseq: token-budget batches, freezing,
label smoothing, early stopping, hyper-parameter search."""

from __future__ import annotations

import functools
import json
import logging
import random
from itertools import islice

import pytest
import torch
from conftest import TINY, run_train
from lightning import Trainer

from encdec import BertConfig, EncoderDecoderConfig, EncoderDecoderModel
from encdec.data.batching import Columns, PairEncoder, ResumableBatches, token_budget_grouped
from encdec.data.datamodule import SampleSource, Seq2SeqDataModule
from encdec.tokenization.tokenizer import load_tokenizer
from encdec.training.module import Seq2SeqModule

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


# ---------------------------------------------------------------- token-budget batches (data.max_tokens)


def test_token_budget_groups_by_padded_tokens():
    sources, targets = [10, 2, 3, 9, 4], [2, 1, 1, 3, 2]
    # by total length: 1 (3), 2 (4), 4 (6), then 0 and 3 (12 each). Padded cost of [1, 2, 4] is
    # 3 x (4 + 2) = 18 <= 20; adding 0 would cost 4 x (10 + 2) = 48; 0 with 3: 2 x (10 + 3) = 26.
    batches = token_budget_grouped(sources, targets, 20, random.Random(0))
    assert sorted(sorted(b) for b in batches) == [[0], [1, 2, 4], [3]]


@pytest.fixture(scope="module")
def budget_stream_parts(tmp_path_factory):
    tokenizer = load_tokenizer(MINILM)
    sample = SampleSource(str(tmp_path_factory.mktemp("sample")), n_train=120, n_validation=4, n_test=0)
    encoder = PairEncoder(tokenizer, tokenizer, 64, 16, tokenizer.sep_token_id)
    return sample, encoder


def _budget_stream(parts, resume=None, max_tokens=400):
    sample, encoder = parts
    return ResumableBatches(lambda: sample.open("train"), encoder, Columns(), batch_size=4, buffer_size=32,
                            seed=3, resume=resume, max_tokens=max_tokens)


def test_token_budget_batches_stay_within_budget_and_resume_exactly(budget_stream_parts):
    batches = list(islice(iter(_budget_stream(budget_stream_parts)), 40))
    costs = [b["input_ids"].numel() + b["labels"].numel() for b in batches]
    sizes = {b["input_ids"].shape[0] for b in batches}
    assert max(costs) <= 400 and len(sizes) > 2, (costs, sizes)  # flat memory, varying batch sizes
    first_epoch = [i for b in batches for i in b["ids"]][:120]
    assert sorted(first_epoch) == sorted(f"train-{i:06d}" for i in range(120))  # nothing lost or repeated
    for cut in (0, 5, 17):
        resumed = _budget_stream(budget_stream_parts, resume={0: batches[cut]["position"]})
        assert [b["ids"] for b in islice(iter(resumed), 4)] == [b["ids"] for b in batches[cut + 1: cut + 5]]


def test_token_budget_below_the_longest_example_is_refused(budget_stream_parts):
    sample, encoder = budget_stream_parts
    with pytest.raises(ValueError, match="data.max_tokens=100 .*64 \\+ 40"):
        Seq2SeqDataModule(sample, encoder.tokenizer, max_source_length=64, max_target_length=40, max_tokens=100)

# ---------------------------------------------------------------- freezing (optim.freeze)


def _tiny_model(**top) -> EncoderDecoderModel:
    side = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24)
    config = EncoderDecoderConfig.from_encoder_decoder_configs(
        side, side, decoder_start_token_id=2, pad_token_id=0, eos_token_id=3, **top
    )
    torch.manual_seed(0)
    return EncoderDecoderModel(config)


def _batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(4, 60, (3, 9), generator=g),
            "attention_mask": torch.ones(3, 9, dtype=torch.long),
            "labels": torch.randint(4, 60, (3, 6), generator=g)}


def _fit(module: Seq2SeqModule, steps: int, tmp_path) -> None:
    trainer = Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      default_root_dir=tmp_path)
    trainer.fit(module,
                train_dataloaders=torch.utils.data.DataLoader([_batch(i) for i in range(steps)], batch_size=None))


def test_frozen_parameters_stay_bit_identical_and_get_no_state(tmp_path, caplog):
    model = _tiny_model()
    patterns = ["encoder.embeddings", "encoder.layers.0.*"]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with caplog.at_level(logging.INFO, logger="encdec"):
        module = Seq2SeqModule(model, tokenizer=None, optimizer=functools.partial(torch.optim.AdamW, lr=1e-2),
                               freeze=patterns)
    frozen = {n for n in before if n.startswith(("encoder.embeddings.", "encoder.layers.0."))}
    assert frozen and f"Frozen: {len(frozen)} parameter tensors" in caplog.text
    _fit(module, 3, tmp_path)
    optimizer = module.trainer.optimizers[0]
    with_state = {id(p) for p in optimizer.state}
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, before[name]) and param.grad is None and id(param) not in with_state, name
        elif param.requires_grad:  # (the encoder's pooler is never trained)
            assert not torch.equal(param, before[name]), name  # everything else trained


def test_freezing_a_shared_weight_through_either_name(tmp_path):
    """BERTShare: the encoder uses the decoder's Parameters; a pattern naming the decoder side
    freezes the weight the encoder uses too."""
    model = _tiny_model(tie_encoder_decoder=True)
    Seq2SeqModule(model, tokenizer=None, optimizer=torch.optim.AdamW, freeze=["decoder.*embeddings.*"])
    assert not model.encoder.embeddings.word.weight.requires_grad


def test_freeze_pattern_that_matches_nothing_is_refused():
    with pytest.raises(ValueError, match="optim.freeze pattern 'encoder.embedings' matches no parameter"):
        Seq2SeqModule(_tiny_model(), tokenizer=None, optimizer=torch.optim.AdamW, freeze=["encoder.embedings"])


# ---------------------------------------------------------------- early stopping (callbacks=early_stopping)


@pytest.mark.slow
def test_early_stopping_ends_the_run_and_exports_the_best_checkpoint(tmp_path, cache_dir):
    """At an LR of ~0 the monitored ROUGE never improves: with patience 1 the run stops after its
    second validation (step 4 of 12) and exports the first (best) checkpoint."""
    run = tmp_path / "run"
    result = run_train([*TINY, "callbacks=early_stopping", "callbacks.early_stopping.patience=1",
                        "trainer.max_steps=12", "optim.lr=1e-12", f"hydra.run.dir={run}"], tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 4 and [row["step"] for row in metrics["validation"]] == [2, 4]
    assert metrics["best_checkpoint"].endswith("best-step0000002.ckpt")
    assert (run / "best_model" / "model.safetensors").is_file()


# ---------------------------------------------------------------- compile switch (compile=true)


@pytest.mark.slow
def test_compile_switch_runs_the_training_loss_through_dynamo():
    """compile="eager" (dynamo without code generation, fast to build) stands in for true: the loss
    is traced by dynamo and equals the uncompiled one; parameter names are unchanged."""
    import torch._dynamo

    model = _tiny_model().eval()  # no dropout: the two losses must match
    batch = _batch(0)
    expected = model(**batch, return_logits=False).loss
    names = [n for n, _ in model.named_parameters()]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    module = Seq2SeqModule(model, tokenizer=None, optimizer=torch.optim.AdamW, compile="eager")
    module.model.eval()
    got = module(batch).loss
    assert torch._dynamo.utils.counters["stats"]["calls_captured"] > 0
    torch.testing.assert_close(got, expected)
    assert [n for n, _ in module.model.named_parameters()] == names


# ---------------------------------------------------------------- label smoothing (module.label_smoothing)


@pytest.mark.parametrize("name", ["bert2bert", "bert2gpt2", "bertshare"])
def test_label_smoothing_equals_torch_on_the_plain_path_and_the_fast_path_equals_plain(name):
    from test_fast_path import assert_fast_path_matches_plain
    from tiny_models import encdec_config, padded_batch, spread_weights

    torch.manual_seed(0)
    model = spread_weights(EncoderDecoderModel(encdec_config(name)), std=0.1).eval()  # not uniform: smoothing shows
    batch = padded_batch(name, batch=4, tgt_len=9)
    with torch.no_grad():
        logits = model(**batch).logits
        smoothed = model(**batch, label_smoothing=0.1).loss
    expected = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100, label_smoothing=0.1
    )
    plain = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
    torch.testing.assert_close(smoothed, expected, atol=1e-6, rtol=0)
    assert abs(float(smoothed - plain)) > 1e-3  # the setting changes the loss
    for chunk in (None, 5):
        model.loss_chunk_size = chunk
        assert_fast_path_matches_plain(model, batch, label_smoothing=0.1)


def test_module_label_smoothing_reaches_the_training_loss(compose):
    import train

    cfg = compose(*TINY, "module.label_smoothing=0.2")
    parts, datamodule, module, _ = train.build(cfg)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    model_batch = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    parts.model.eval()  # no dropout: the two losses see the same network
    with torch.no_grad():
        logits = parts.model(**model_batch).logits
        ours = module(batch).loss
    expected = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100, label_smoothing=0.2
    )
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("value", ["1.0", "-0.1"])
def test_label_smoothing_out_of_range_is_one_line(compose, value):
    from encdec.apps.preflight import check_train_config
    from encdec.base.errors import UsageError

    with pytest.raises(UsageError, match=rf"module.label_smoothing={value}: must be"):
        check_train_config(compose(*TINY, f"module.label_smoothing={value}"))


# ---------------------------------------------------------------- hyper-parameter search (hparams_search=optuna)


@pytest.mark.slow
def test_optuna_sweep_runs_trials_and_reports_the_best(cache_dir, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import yaml

    sweep = tmp_path / "sweep"
    result = run_train(
        ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
         f"hydra.sweep.dir={sweep}", *(o for o in TINY if not o.startswith("optim.lr=")),  # lr is searched
         "trainer.max_steps=2", "monitor=val/loss", "monitor_mode=min", "hydra.sweeper.direction=minimize"],
        tmp_path, cache_dir, timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(trials) == 2
    best = [json.loads((t / "metrics.json").read_text())["best"] for t in trials]
    configs = [yaml.safe_load((t / "config.yaml").read_text()) for t in trials]
    assert configs[0]["optim"]["lr"] != configs[1]["optim"]["lr"]  # the sampler's values reached the runs
    for config in configs:
        assert 1e-5 <= config["optim"]["lr"] <= 1e-3 and config["module"]["label_smoothing"] in (0.0, 0.1, 0.2)
    report = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best[0] != best[1] and report["best_value"] == pytest.approx(min(best))
    assert report["best_params"]["optim.lr"] == pytest.approx(configs[best.index(min(best))]["optim"]["lr"])
