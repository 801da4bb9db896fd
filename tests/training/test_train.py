"""train.py end to end through the real Hydra configs: the quickstart, a multirun sweep, DDP on
two CPU processes, exact resume after SIGKILL, the exported Hugging Face folder."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from conftest import CONF, TINY, run_train
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from encdec import EncoderDecoderModel

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
PROBE = "+callbacks.probe._target_=tests.train_probes.RecordBatches"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check(result) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


def test_default_is_the_quickstart_and_recipes_compose(compose):
    quick = compose()
    assert quick.model.encoder.pretrained == "sentence-transformers/all-MiniLM-L6-v2"
    assert quick.trainer.accelerator == "cpu" and quick.data.source._target_.endswith("SampleSource")
    paper = compose("experiment=bert2bert_cnn_dailymail")
    assert (paper.data.max_source_length, paper.data.max_target_length, paper.data.batch_size) == (512, 128, 16)
    assert (paper.optim.lr, paper.optim.warmup_steps, paper.trainer.precision) == (5e-5, 2000, "bf16-mixed")
    assert dict(paper.generation) == dict(num_beams=4, max_length=142, min_length=56, no_repeat_ngram_size=3,
                                          length_penalty=2.0, early_stopping=True)
    assert paper.data.source.path == "abisee/cnn_dailymail" and paper.data.source.name == "3.0.0"


def test_encoder_and_decoder_are_chosen_independently(compose):
    cfg = compose("model/encoder=roberta-base", "model/decoder=gpt2")
    assert cfg.model.encoder.pretrained == "FacebookAI/roberta-base"
    assert cfg.model.decoder.pretrained == "openai-community/gpt2" and cfg.model.decoder.pad_token == "eos"
    assert compose("model=bertshare").model.tie_encoder_decoder is True


def test_unknown_group_option_lists_the_valid_ones(compose):
    with pytest.raises(MissingConfigException) as error:
        compose("model=bert2bart")
    assert "model/bert2bart" in str(error.value)
    assert all(name in str(error.value) for name in ("bert2bert", "bert2gpt2", "minilm2minilm", "tiny"))


@pytest.mark.slow
def test_quickstart_for_a_few_steps_exports_a_reloadable_model(compose, tmp_path):
    import train

    cfg = compose(
        "trainer.max_steps=2", "trainer.val_check_interval=2", "data.val_examples=4", "data.batch_size=2",
        "data.max_source_length=48", "data.max_target_length=16", "generation.max_length=8",
        "trainer.enable_progress_bar=false", "data.source.n_train=32", "data.source.n_validation=4",
    )
    assert cfg.logger._target_ == "encdec.training.run_records.wandb_logger"  # the default logger, offline here
    best = train.train(cfg)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert best == metrics["best"] and [v["step"] for v in metrics["validation"]] == [0, 2]
    assert OmegaConf.load(run / "config.yaml").trainer.max_steps == 2
    assert (run / "checkpoints" / "last.ckpt").is_file() and list((run / "wandb").glob("offline-run-*"))
    folder = run / "best_model"
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json"):
        assert (folder / name).is_file(), name
    assert_reloads(folder)


def assert_reloads(folder: Path) -> None:
    """Our loader and transformers' read the folder and compute the same logits."""
    ours = EncoderDecoderModel.from_pretrained(folder).eval()
    assert ours.config.decoder_start_token_id == 101 and ours.config.pad_token_id == 0
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    labels = torch.tensor([[2023, 3231, 102]])
    with torch.no_grad():
        logits = ours(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).logits
    transformers = pytest.importorskip("transformers")
    theirs = transformers.EncoderDecoderModel.from_pretrained(folder).eval()
    with torch.no_grad():
        reference = theirs(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).logits
    torch.testing.assert_close(logits, reference, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_multirun_sweeps_two_tiny_runs_into_their_own_folders(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    check(run_train(["-m", *TINY, "optim.lr=1e-3,5e-4", f"hydra.sweep.dir={sweep}"], tmp_path, cache_dir))
    lrs = sorted(OmegaConf.load(sweep / str(i) / "config.yaml").optim.lr for i in (0, 1))
    assert lrs == [5e-4, 1e-3]
    for i in (0, 1):
        assert json.loads((sweep / str(i) / "metrics.json").read_text())["steps"] == 4
        assert (sweep / str(i) / "best_model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path, cache_dir):
    run = tmp_path / "ddp"
    args = [*TINY, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", PROBE, f"hydra.run.dir={run}"]
    check(run_train(args, tmp_path, cache_dir))
    seen = [{i for row in read_jsonl(run / f"batches_rank{r}.jsonl") for i in row["ids"]} for r in (0, 1)]
    assert seen[0] and seen[1] and seen[0].isdisjoint(seen[1])
    params = [read_jsonl(run / f"params_rank{r}.jsonl")[-1] for r in (0, 1)]
    assert params[0]["step"] == 4 and params[0]["sha256"] == params[1]["sha256"]


@pytest.mark.slow
def test_resume_after_sigkill_continues_exactly(tmp_path, cache_dir):
    """Checkpoints every 3 steps; killed at step 5; resumed from step 3's last.ckpt: steps 4..8
    see the same examples and log the same losses as an uninterrupted run."""
    common = [*TINY, "trainer.max_steps=8", "trainer.val_check_interval=3", PROBE]
    runs = {name: tmp_path / name for name in ("straight", "killed", "resumed")}
    check(run_train([*common, f"hydra.run.dir={runs['straight']}"], tmp_path, cache_dir))
    kill = ["+callbacks.kill._target_=tests.train_probes.KillAtStep", "+callbacks.kill.step=5"]
    killed = run_train([*common, *kill, f"hydra.run.dir={runs['killed']}"], tmp_path, cache_dir)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = runs["killed"] / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 3
    check(run_train([*common, f"ckpt_path={last}", f"hydra.run.dir={runs['resumed']}"], tmp_path, cache_dir))
    straight = {row["step"]: row for row in read_jsonl(runs["straight"] / "batches_rank0.jsonl")}
    resumed = read_jsonl(runs["resumed"] / "batches_rank0.jsonl")
    assert [row["step"] for row in resumed] == [4, 5, 6, 7, 8]
    for row in resumed:
        assert row["ids"] == straight[row["step"]]["ids"], row["step"]
        assert row["loss"] == pytest.approx(straight[row["step"]]["loss"], rel=1e-5), row["step"]
