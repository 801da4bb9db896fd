"""evaluate.py devices=N: N processes (gloo on CPU) share the split, each writing its own fsynced
shard; rank 0 merges and scores. The same metrics.json as one process; a kill of any rank resumes
with what was written, on any number of processes."""

import json
import os
import signal
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import evaluate as evaluate_script
from encdec.base.errors import UsageError
from encdec.evaluation.distributed import launch

CONF = str(Path(__file__).resolve().parents[2] / "conf")
ARGS = ("baseline=lead3", "limit=40", "batch_size=4", "bootstrap_samples=50")


def config(out: Path, *overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("evaluate", overrides=[f"output_dir={out}", *ARGS, *overrides])


def without_timing(metrics):
    return {k: v for k, v in metrics.items() if k != "examples_per_s"}


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def evaluate_killing_rank1(cfg):
    """evaluate.py, except that rank 1 is SIGKILLed right after its first fsynced batch."""
    from encdec.evaluation import evaluate as evaluation
    from encdec.evaluation.distributed import rank_and_world

    append = evaluation.PredictionStore.append

    def append_then_die(self, rows):
        append(self, rows)
        if rank_and_world()[0] == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    evaluation.PredictionStore.append = append_then_die
    return evaluate_script.evaluate(cfg)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process on the sample set's test split; every test shares its cache (and so its data)."""
    out = tmp_path_factory.mktemp("single")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENCDEC_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield out, evaluate_script.evaluate(config(out))


def test_two_processes_give_the_metrics_of_one(single, tmp_path):
    one_dir, one = single
    two = evaluate_script.evaluate(config(tmp_path, "devices=2"))
    assert without_timing(two) == without_timing(one)
    assert sorted(lines(tmp_path), key=lambda r: r["id"]) == sorted(lines(one_dir), key=lambda r: r["id"])
    assert not list(tmp_path.glob("predictions.rank*.jsonl"))  # merged, then removed


def test_a_killed_rank_stops_the_run_and_the_next_run_resumes(single, tmp_path):
    _, one = single
    with pytest.raises(RuntimeError, match=r"rank 1 died .*Run the same command again"):
        launch(config(tmp_path, "devices=2"), evaluate_killing_rank1)
    rank1 = [json.loads(line)["id"] for line in (tmp_path / "predictions.rank1.jsonl").read_text().splitlines()]
    split = [r["id"] for r in sorted(lines(single[0]), key=lambda r: r["id"])]
    assert len(rank1) == 4 and set(rank1) <= set(split[1::2])  # its fsynced batch, from its own share
    assert not (tmp_path / "metrics.json").exists()
    resumed = evaluate_script.evaluate(config(tmp_path, "devices=2"))
    assert without_timing(resumed) == without_timing(one)


def test_shards_of_an_interrupted_run_are_kept_and_skipped_on_one_process(single, tmp_path):
    one_dir, one = single
    rows = lines(one_dir)
    (tmp_path / "run.json").write_text((one_dir / "run.json").read_text())
    planted = dict(rows[0], prediction="planted, not generated again")
    shard0 = "".join(json.dumps(r) + "\n" for r in [planted, *rows[1:7]]) + '{"id": "torn'
    (tmp_path / "predictions.rank0.jsonl").write_text(shard0)
    (tmp_path / "predictions.rank1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[7:12]))
    evaluate_script.evaluate(config(tmp_path))
    merged = {r["id"]: r["prediction"] for r in lines(tmp_path)}
    assert merged == {r["id"]: r["prediction"] for r in [planted, *rows[1:]]}
    assert not list(tmp_path.glob("predictions.rank*.jsonl"))


def test_rank_errors_come_back_as_one_line(single, tmp_path):
    one_dir, _ = single
    evaluate_script.evaluate(config(tmp_path, "limit=8"))
    with pytest.raises(UsageError, match="refusing to mix them"):
        evaluate_script.evaluate(config(tmp_path, "limit=8", "baseline=reference", "devices=2"))
    with pytest.raises(UsageError, match=r"devices=0: must be >= 1"):
        evaluate_script.evaluate(config(tmp_path, "devices=0"))
