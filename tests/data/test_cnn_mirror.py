"""CNN/DailyMail read offline from a copy laid out exactly as the Hub repository abisee/cnn_dailymail
(3.0.0/train-0000{0,1,2}-of-00003.parquet, validation, test, README with `configs:`), through the
same streaming code path as the Hub: by folder, and by repo id with a registered mirror."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_train

from encdec import register_mirror
from encdec.base import hub
from encdec.data.datamodule import HubSource

README = """---
configs:
- config_name: 3.0.0
  data_files:
  - split: train
    path: 3.0.0/train-*
  - split: validation
    path: 3.0.0/validation-*
  - split: test
    path: 3.0.0/test-*
---
# CNN / DailyMail (a small offline copy in the Hub's layout)
"""
WORDS = "the council said on monday that a new bridge would open in the city next spring after repairs".split()


def _rows(split: str, start: int, count: int, words: tuple[int, int] | None = None) -> list[dict]:
    """Articles of four short sentences, or with `words=(least, most)` of that many words (sentences
    repeated), their lengths spread evenly over the range across the records."""
    rows = []
    for i in range(start, start + count):
        sentences = [" ".join(WORDS[(i + j) % 7:(i + j) % 7 + 8]).capitalize() + "." for j in range(4)]
        if words is not None:
            least, most = words
            target = least + (most - least) * ((i * 37) % count) // max(1, count - 1)
            tokens = " ".join(sentences * (target // 32 + 1)).split()
            sentences = [" ".join(tokens[:target])]
        bullets = [f"{split.title()} story {i} about the bridge .", "It opens next spring ."]
        rows.append({"article": " ".join(sentences), "highlights": "\n".join(bullets), "id": f"{split}-{i:05d}"})
    return rows


def write_mirror(root: Path, train_per_shard: int = 40, other: int = 12, words: tuple[int, int] | None = None) -> Path:
    """The Hub repository's layout (3 train shards, validation, test, README); `words=(least, most)`:
    articles of that many words instead of four sentences (long-document tests)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "3.0.0").mkdir(parents=True)
    for shard in range(3):
        table = pa.Table.from_pylist(_rows("train", shard * train_per_shard, train_per_shard, words))
        pq.write_table(table, root / "3.0.0" / f"train-{shard:05d}-of-00003.parquet")
    for split in ("validation", "test"):
        pq.write_table(pa.Table.from_pylist(_rows(split, 0, other, words)),
                       root / "3.0.0" / f"{split}-00000-of-00001.parquet")
    (root / "README.md").write_text(README)
    return root


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    return write_mirror(tmp_path_factory.mktemp("hub") / "cnn_dailymail")


def test_mirror_folder_streams_every_shard(mirror, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ds = HubSource(str(mirror), "3.0.0").open("train")
    assert ds.n_shards == 3
    ids = [row["id"] for row in ds]
    assert sorted(ids) == [f"train-{i:05d}" for i in range(120)]
    assert "\n" in next(iter(HubSource(str(mirror), "3.0.0").open("test")))["highlights"]


def test_repo_id_resolves_to_its_registered_mirror(mirror, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(hub, "_MIRRORS", {})  # this test's registration ends with it
    register_mirror("abisee/cnn_dailymail", mirror)
    assert len(list(HubSource("abisee/cnn_dailymail", "3.0.0").open("validation"))) == 12


def test_repo_id_reads_the_hugging_face_cache_offline(mirror, tmp_path, monkeypatch):
    """The layout huggingface_hub leaves after a download: refs/main names the snapshot folder."""
    import shutil

    repo = tmp_path / "hub" / "datasets--abisee--cnn_dailymail"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(mirror, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(hub, "_MIRRORS", {})
    ids = [row["id"] for row in HubSource("abisee/cnn_dailymail", "3.0.0").open("validation")]
    assert sorted(ids) == [f"validation-{i:05d}" for i in range(12)]


def test_missing_mirror_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="Dataset folder not found"):
        HubSource(str(tmp_path / "nowhere"), "3.0.0").open("train")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_recipe_shrunk_runs_ddp_with_workers_and_resumes_exactly(mirror, tmp_path, cache_dir):
    """The published recipe (experiment=bert2bert_cnn_dailymail: bf16-mixed, beam-4 validation)
    with a tiny model on the mirror, 2 gloo ranks x 2 dataloader workers over 3 shards (the uneven
    case): SIGKILL at step 5 and resume from step 3 gives the uninterrupted run's batches and losses,
    on both ranks, and no rank hangs at the end."""
    common = [
        "experiment=bert2bert_cnn_dailymail", "model=tiny", "logger=csv", f"data.source.path={mirror}",
        "trainer.accelerator=cpu", "trainer.devices=2", "+trainer.strategy=ddp",
        "+trainer.use_distributed_sampler=false",
        "trainer.max_steps=7", "trainer.val_check_interval=3", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1", "data.num_workers=2", "data.max_source_length=48", "data.max_target_length=16",
        "data.batch_size=4", "data.eval_batch_size=4", "data.buffer_size=8", "data.val_examples=4",
        "generation.max_length=8", "generation.min_length=0", "optim.warmup_steps=1",
        "+callbacks.probe._target_=tests.train_probes.RecordBatches",
    ]
    runs = {name: tmp_path / name for name in ("straight", "killed", "resumed")}
    straight = run_train([*common, f"hydra.run.dir={runs['straight']}"], tmp_path, cache_dir, timeout=400)
    assert straight.returncode == 0, straight.stderr[-4000:]
    kill = ["+callbacks.kill._target_=tests.train_probes.KillAtStep", "+callbacks.kill.step=5"]
    killed = run_train([*common, *kill, f"hydra.run.dir={runs['killed']}"], tmp_path, cache_dir, timeout=400)
    assert killed.returncode != 0
    last = runs["killed"] / "checkpoints" / "last.ckpt"
    resumed = run_train([*common, f"ckpt_path={last}", f"hydra.run.dir={runs['resumed']}"], tmp_path, cache_dir,
                        timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    for rank in (0, 1):
        before = {row["step"]: row for row in _read_jsonl(runs["straight"] / f"batches_rank{rank}.jsonl")}
        after = _read_jsonl(runs["resumed"] / f"batches_rank{rank}.jsonl")
        assert [row["step"] for row in after] == [4, 5, 6, 7]
        for row in after:
            assert row["ids"] == before[row["step"]]["ids"], (rank, row["step"])
            assert row["loss"] == pytest.approx(before[row["step"]]["loss"], rel=1e-4), (rank, row["step"])
    seen = [{i for row in _read_jsonl(runs["straight"] / f"batches_rank{r}.jsonl") for i in row["ids"]} for r in (0, 1)]
    assert seen[0] and seen[1] and seen[0].isdisjoint(seen[1])
