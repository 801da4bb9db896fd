"""Checkpoints and configs written by the flat layout (before the layer packages) still load,
evaluate and resume. tests/fixtures/flat_layout/last.ckpt is a real run of that layout (commit
f626faf): `python train.py` with FLAT_RUN below, a 16-wide model and a 155-token WordPiece
vocabulary (tokenizer/ beside it) so that the file stays small. Its embedded run config names
`encdec.parts.build_seq2seq`, `encdec.data.Seq2SeqDataModule`, `encdec.lightning.Seq2SeqModule`, ..."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_train
from hydra import compose, initialize_config_dir

import evaluate as evaluate_script
from encdec.base.renames import OLD_MODULES, current_target, upgrade_targets
from encdec.serving.loading import summarizer_from_checkpoint

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "flat_layout"
SIDES = [f"model.{side}.config.{key}={value}" for side in ("encoder", "decoder")
         for key, value in (("hidden_size", 16), ("intermediate_size", 32), ("max_position_embeddings", 80))]
FLAT_RUN = [
    "model=tiny", *SIDES, "logger=csv", "~experiment", "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "data.source.n_train=96",
    "data.source.n_validation=8", "data.source.n_test=0", "data.batch_size=4", "data.eval_batch_size=4",
    "data.buffer_size=16", "data.val_examples=4", "data.max_source_length=64", "data.max_target_length=24",
    "generation.max_length=8", "validate_before_training=false", "optim.warmup_steps=1",
]


def old_targets() -> list[str]:
    config = torch.load(FIXTURE / "last.ckpt", map_location="cpu", weights_only=False)["encdec_config"]
    found: list[str] = []

    def walk(tree):
        if isinstance(tree, dict):
            if isinstance(tree.get("_target_"), str) and tree["_target_"].startswith("encdec."):
                found.append(tree["_target_"])
            for value in tree.values():
                walk(value)

    walk(config)
    return sorted(set(found))


def flat_checkpoint(tmp_path: Path) -> tuple[Path, dict]:
    """The fixture's last.ckpt with its tokenizer paths pointed at the copy beside it (the run
    recorded the absolute path of the folder it used); nothing else changes."""
    ckpt = torch.load(FIXTURE / "last.ckpt", map_location="cpu", weights_only=False)
    for side in ("encoder", "decoder"):
        ckpt["encdec_config"]["model"][side]["tokenizer"] = str(FIXTURE / "tokenizer")
    path = tmp_path / "flat" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    return path, ckpt


def test_every_flat_target_is_gone_and_the_rename_table_finds_it():
    targets = old_targets()
    assert {t.rpartition(".")[0] for t in targets} >= {"encdec.parts", "encdec.data", "encdec.lightning",
                                                      "encdec.callbacks", "encdec.schedules"}
    for target in targets:
        with pytest.raises(ImportError):  # the flat module is gone: without the table this fails
            _locate(target)
        assert _locate(current_target(target)) is not None
    tree = {"a": {"_target_": targets[0]}, "b": [{"_target_": "torch.optim.AdamW"}]}
    assert upgrade_targets(tree) == [targets[0]] and tree["a"]["_target_"] == current_target(targets[0])
    assert set(OLD_MODULES) >= {t.rpartition(".")[0] for t in targets}


def _locate(path: str):
    from hydra._internal.utils import _locate as locate

    return locate(path)


def test_a_flat_checkpoint_serves_with_its_own_weights_and_evaluates(tmp_path):
    path, ckpt = flat_checkpoint(tmp_path)
    summarizer = summarizer_from_checkpoint(path)
    weights = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    state = summarizer.model.state_dict()
    assert set(state) == set(weights)
    for key, value in weights.items():
        assert torch.equal(state[key], value), key
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"output_dir={tmp_path / 'out'}", f"model_path={path}", "limit=4",
                                            "batch_size=4", "generation.max_length=8", "bootstrap_samples=20"])
    metrics = evaluate_script.evaluate(cfg)
    assert metrics["examples"] == 4
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4


@pytest.mark.slow
def test_a_flat_checkpoint_resumes_and_an_old_target_in_the_config_still_runs(tmp_path, cache_dir):
    path, _ = flat_checkpoint(tmp_path)
    tokenizers = [f"model.{side}.tokenizer={FIXTURE / 'tokenizer'}" for side in ("encoder", "decoder")]
    run = run_train([*FLAT_RUN, *tokenizers, "trainer.max_steps=6", f"ckpt_path={path}", f"run_dir={tmp_path / 'run'}",
                     "module._target_=encdec.lightning.Seq2SeqModule"], cwd=tmp_path, cache=cache_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "encdec.lightning.Seq2SeqModule moved; using encdec.training.module.Seq2SeqModule" in run.stderr + run.stdout
    resumed = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert resumed["global_step"] == 6  # steps 5 and 6 on top of the flat run's 4
    assert resumed["encdec_config"]["module"]["_target_"] == "encdec.training.module.Seq2SeqModule"
