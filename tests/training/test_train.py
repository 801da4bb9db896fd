"""train.py end to end through the real Hydra configs: the quickstart, a multirun sweep, DDP on
two CPU processes, exact resume after SIGKILL, the exported Hugging Face folder."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CONF, ROOT, TINY, run_train
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
    before = {p: p.read_bytes() for p in sorted(sweep.rglob("*")) if p.is_file()}
    again = run_train(["-m", *TINY, "optim.lr=1e-3,5e-4", f"hydra.sweep.dir={sweep}"], tmp_path, cache_dir)
    assert again.returncode == 2 and again.stderr.strip() == (
        f"train.py: error: Sweep folder {sweep} already holds an earlier sweep: sweep into a new folder (leave "
        "hydra.sweep.dir at its default, or set hydra.sweep.dir=NEW).")
    assert {p: p.read_bytes() for p in sorted(sweep.rglob("*")) if p.is_file()} == before


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path, cache_dir):
    run = tmp_path / "ddp"
    args = [*TINY, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", PROBE, f"hydra.run.dir={run}"]
    check(run_train(args, tmp_path, cache_dir))
    seen = [{i for row in read_jsonl(run / f"batches_rank{r}.jsonl") for i in row["ids"]} for r in (0, 1)]
    assert seen[0] and seen[1] and seen[0].isdisjoint(seen[1])
    params = [read_jsonl(run / f"params_rank{r}.jsonl")[-1] for r in (0, 1)]
    assert params[0]["step"] == 4 and params[0]["sha256"] == params[1]["sha256"]


# ---------------------------------------------------------------------- exact resume: kills and interrupts

COMMON = [*TINY, "trainer.max_steps=8", "trainer.val_check_interval=3", PROBE]  # validations at 3, 6 and 8


@pytest.fixture(scope="module")
def straight(tmp_path_factory, cache_dir) -> Path:
    """The uninterrupted run that killed and interrupted ones must equal once resumed."""
    run = tmp_path_factory.mktemp("straight") / "run"
    check(run_train([*COMMON, f"hydra.run.dir={run}"], run.parent, cache_dir))
    return run


def assert_resumes_as_if_never_stopped(resumed: Path, straight: Path, first_step: int) -> None:
    """From `first_step` on, the resumed run sees the same examples and logs the same losses as
    the straight run, and ends with its weights and validations."""
    straight_steps = {row["step"]: row for row in read_jsonl(straight / "batches_rank0.jsonl")}
    rows = read_jsonl(resumed / "batches_rank0.jsonl")
    assert [row["step"] for row in rows] == list(range(first_step, 9))
    for row in rows:
        assert row["ids"] == straight_steps[row["step"]]["ids"], row["step"]
        assert row["loss"] == pytest.approx(straight_steps[row["step"]]["loss"], rel=1e-5), row["step"]
    assert read_jsonl(resumed / "params_rank0.jsonl") == read_jsonl(straight / "params_rank0.jsonl")
    history = [json.loads((run / "metrics.json").read_text())["validation"] for run in (resumed, straight)]
    assert [row["step"] for row in history[0]] == [3, 6, 8] and history[0] == history[1]


@pytest.mark.slow
def test_resume_after_sigkill_continues_exactly(straight, tmp_path, cache_dir):
    """Killed at step 5; resumed from step 3's last.ckpt: steps 4..8 see the same examples and
    log the same losses as an uninterrupted run."""
    kill = ["+callbacks.kill._target_=tests.train_probes.KillAtStep", "+callbacks.kill.step=5"]
    killed = run_train([*COMMON, *kill, f"hydra.run.dir={tmp_path / 'killed'}"], tmp_path, cache_dir)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 3
    check(run_train([*COMMON, f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'resumed'}"], tmp_path, cache_dir))
    assert_resumes_as_if_never_stopped(tmp_path / "resumed", straight, first_step=4)


def start_train(args: list[str], run: Path, cache: Path, **env: str) -> subprocess.Popen:
    environ = dict(os.environ, ENCDEC_CACHE=str(cache), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **env)
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={run}"], cwd=run.parent,
                            env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(process: subprocess.Popen, run: Path, step: int) -> None:
    """Until the run has logged `step` training steps (the RecordBatches probe)."""
    steps, deadline = run / "batches_rank0.jsonl", time.monotonic() + 240
    while not (steps.exists() and len(steps.read_text().splitlines()) >= step):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.02)


def interrupted_line(stderr: str) -> str:
    told = [line for line in stderr.splitlines() if line.startswith("train.py: interrupted:")]
    assert len(told) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return told[0]


SLOW = ["+callbacks.slow._target_=tests.train_probes.SlowSteps", "+callbacks.slow.seconds=1"]


def stop_with(signum: int, run: Path, cache: Path) -> tuple[str, dict]:
    """A run signalled after step 1 of 8 (validations at 3, 6, 8): the line it printed, and its last.ckpt."""
    process = start_train([*COMMON, *SLOW], run, cache)
    wait_for_step(process, run, 1)
    process.send_signal(signum)
    _, err = process.communicate(timeout=240)
    assert process.returncode == 128 + signum, err[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    told = interrupted_line(err)
    assert f"{signal.Signals(signum).name} at step 1: wrote {last}; resume with: " in told
    assert not (run / "metrics.json").exists()
    return told, torch.load(last, weights_only=False)


SAME_STATE = ("global_step", "state_dict", "optimizer_states", "lr_schedulers", "loops", "Seq2SeqDataModule",
              "rng_states", "encdec_history")


@pytest.mark.slow
def test_sigint_and_sigterm_before_the_first_validation_write_last_ckpt_that_resumes_exactly(
        straight, tmp_path, cache_dir):
    """Either signal after step 1: last.ckpt of step 1 (the same state for both), one line with the
    resume command, the signal's exit status; the printed command finishes the run as if it had
    never stopped."""
    told, by_sigint = stop_with(signal.SIGINT, tmp_path / "sigint", cache_dir)
    by_sigterm = stop_with(signal.SIGTERM, tmp_path / "sigterm", cache_dir)[1]
    assert by_sigint["global_step"] == 1
    for key in SAME_STATE:
        assert_same(by_sigint[key], by_sigterm[key], key)
    command = shlex.split(told.split("resume with: ", 1)[1])
    last = tmp_path / "sigint" / "checkpoints" / "last.ckpt"
    assert command[:2] == ["python", "train.py"] and command[-1] == f"ckpt_path={last}"
    args = [a for a in command[2:] if not a.startswith("+callbacks.slow")]  # the test's sleeps, not needed now
    check(run_train([*args, f"hydra.run.dir={tmp_path / 'resumed'}"], tmp_path, cache_dir))
    assert_resumes_as_if_never_stopped(tmp_path / "resumed", straight, first_step=2)


def assert_same(a, b, where: str) -> None:
    """Equal nested checkpoint contents, tensors element for element."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow
def test_slurm_requeue_signal_mid_step_before_a_validation_stops_after_it_and_requeues(tmp_path, cache_dir):
    """SLURM's SIGUSR1 (sbatch --signal) while step 3 trains: a checkpoint from before the
    validation due at step 3 would resume past it, so the run validates, stops with last.ckpt of
    step 3 holding that validation, and asks SLURM to requeue the job as Lightning does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    scontrol.chmod(0o755)
    slurm = dict(SLURM_NTASKS="1", SLURM_JOB_NAME="train", SLURM_JOB_ID="4242", SLURM_PROCID="0",
                 SLURM_LOCALID="0", SLURM_NODEID="0", PATH=f"{bin_dir}:{os.environ['PATH']}")
    at_three = ["+callbacks.signal._target_=tests.train_probes.SignalAtStep", "+callbacks.signal.step=3",
                f"+callbacks.signal.signum={int(signal.SIGUSR1)}"]
    process = start_train([*COMMON, *at_three], tmp_path / "run", cache_dir, **slurm)
    _, err = process.communicate(timeout=240)
    assert process.returncode == 128 + signal.SIGUSR1, err[-3000:]
    assert "SIGUSR1 at step 3" in interrupted_line(err) and "requeued SLURM job 4242" in interrupted_line(err)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 3 and [row["step"] for row in last["encdec_history"]] == [3]
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_and_leaves_no_broken_checkpoint(tmp_path, cache_dir):
    run = tmp_path / "run"
    process = start_train([*COMMON, *SLOW[:1], "+callbacks.slow.seconds=3"], run, cache_dir)
    wait_for_step(process, run, 1)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGINT and time.monotonic() - sent < 2, err[-3000:]
    assert "stopping after this step" in err and "Traceback" not in err
    assert not (run / "checkpoints").exists()  # stopped inside step 1: nothing was due, nothing half-written
