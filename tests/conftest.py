"""Shared fixtures: the real Hydra configs composed with overrides, and fast tiny-run settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # train.py and tests.train_probes import from the repo root
# tests/ mirrors encdec/ (tests/nn, tests/generation, ...); test modules that share helpers import
# each other by bare name, wherever pytest collects them from.
for _package in sorted(p for p in Path(__file__).resolve().parent.iterdir() if p.is_dir() and p.name != "__pycache__"):
    if str(_package) not in sys.path:
        sys.path.append(str(_package))

# No test may touch the network; wandb goes offline by itself when it finds no credentials.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

# A tiny random model on a small sample set: a training step takes milliseconds.
TINY = [
    "model=tiny", "logger=csv", "~experiment", "trainer.max_steps=4", "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1",
    "data.source.n_train=96", "data.source.n_validation=8", "data.source.n_test=0",
    "data.batch_size=4", "data.eval_batch_size=4", "data.buffer_size=16", "data.val_examples=4",
    "data.max_source_length=64", "data.max_target_length=24", "generation.max_length=8",
    "validate_before_training=false", "optim.warmup_steps=1", "optim.lr=1e-3",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """ENCDEC_CACHE for the session (the sample set is written once, not into ~/.cache)."""
    path = tmp_path_factory.mktemp("encdec_cache")
    os.environ["ENCDEC_CACHE"] = str(path)
    return path


@pytest.fixture
def compose(cache_dir, tmp_path):
    """compose(*overrides) -> the train config as `python train.py overrides...` would see it,
    writing into tmp_path/run."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    def make(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra_compose("train", overrides=[f"run_dir={tmp_path / 'run'}", *overrides])

    yield make
    GlobalHydra.instance().clear()


def run_train(args: list[str], cwd: Path, cache: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """`python train.py args...` in a subprocess (Hydra and DDP launch as on the command line)."""
    env = dict(os.environ, ENCDEC_CACHE=str(cache), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )
