"""A run folder belongs to one run (issue 25): a second run into a folder in use, or into one that
holds an earlier run, stops with one line and touches nothing there; `ckpt_path=` from the folder
continues it; default folder names differ below the second."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, ROOT, TINY, run_train

from encdec.apps.run_folder import claim_run_folder, launched_as_rank_zero, release
from encdec.base.errors import UsageError


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) with a digest of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr[-3000:]
    return done.stderr.strip()


def test_a_folder_another_process_holds_is_refused_until_it_ends(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from encdec.apps.run_folder import "
         f"claim_run_folder; claim_run_folder(Path({str(folder)!r})); print('held', flush=True); sys.stdin.read()"],
        env=dict(os.environ, PYTHONPATH=str(ROOT)), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError, match=rf"Run folder {folder} is in use by the run of pid {holder.pid} on "):
            claim_run_folder(folder)
    finally:
        holder.communicate(input="")
    claim_run_folder(folder)  # the lock went with the process
    release(folder)


def test_an_earlier_run_is_refused_untouched_unless_continued_from_its_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text("seed: 1\n")
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    before = tree(folder)
    with pytest.raises(UsageError, match=rf"Run folder {folder} already holds an earlier run: train into a new folder"
                                         rf" .*, or continue that run with ckpt_path={folder}/checkpoints/last.ckpt"):
        claim_run_folder(folder)
    assert tree(folder) == before  # nothing created, nothing changed
    claim_run_folder(folder, ckpt_path=str(folder / "checkpoints" / "last.ckpt"))
    release(folder)
    elsewhere = tmp_path / "other" / "last.ckpt"
    with pytest.raises(UsageError, match="already holds an earlier run"):
        claim_run_folder(folder, ckpt_path=str(elsewhere))
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP rank Lightning started shares rank 0's folder
    assert not launched_as_rank_zero()


def test_default_folder_names_differ_below_the_second(cache_dir):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        folders = [compose("train", return_hydra_config=True).hydra.run.dir for _ in range(2)]
        sweep = compose("train", return_hydra_config=True).hydra.sweep.dir
    GlobalHydra.instance().clear()
    assert all(re.fullmatch(r"outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-\d{6}", f) for f in folders), folders
    assert folders[0] != folders[1] and re.fullmatch(r"multirun/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-\d{6}", sweep)


@pytest.mark.slow
def test_two_runs_into_one_folder_exactly_one_runs_and_a_finished_run_is_kept(tmp_path, cache_dir):
    """Two train.py started together into one folder: one trains, the other stops with one line
    before anything heavy. A third run into the finished folder is refused the same way and leaves
    every file as it was; ckpt_path= from the folder continues the run in it."""
    run = tmp_path / "run"
    args = [sys.executable, str(ROOT / "train.py"), *TINY, "trainer.max_steps=2", f"hydra.run.dir={run}"]
    env = dict(os.environ, ENCDEC_CACHE=str(cache_dir), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    both = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in both]
    done = [subprocess.CompletedProcess(args, p.returncode, *out) for p, out in zip(both, outputs)]
    assert sorted(d.returncode for d in done) == [0, 2], [d.stderr[-2000:] for d in done]
    refused = one_error_line(next(d for d in done if d.returncode == 2))
    assert refused.startswith(f"train.py: error: Run folder {run} ")
    assert "is in use by the run of pid" in refused or "already holds" in refused
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best-step0000002.ckpt", "last.ckpt"]
    assert (run / "train.log").read_text().count("Seed set to") == 1  # one run's log, not two interleaved
    before = tree(run)

    again = one_error_line(run_train([*TINY, "trainer.max_steps=2", f"hydra.run.dir={run}"], tmp_path, cache_dir))
    assert again == (f"train.py: error: Run folder {run} already holds a finished run: train into a new folder "
                     "(leave hydra.run.dir at its default, or set hydra.run.dir=NEW), or continue that run with "
                     f"ckpt_path={run}/checkpoints/last.ckpt.")
    assert tree(run) == before

    last = run / "checkpoints" / "last.ckpt"
    continued = run_train([*TINY, "trainer.max_steps=4", f"ckpt_path={last}", f"hydra.run.dir={run}"], tmp_path,
                          cache_dir)
    assert continued.returncode == 0, continued.stderr[-3000:]
    assert [row["step"] for row in json.loads((run / "metrics.json").read_text())["validation"]] == [2, 4]
