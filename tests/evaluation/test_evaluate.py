"""evaluate.py through the real Hydra config: baselines, resume, refusal to mix, bad input."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import evaluate as evaluate_script
from encdec.evaluation.evaluate import PredictionStore

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def config(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("evaluate", overrides=[f"output_dir={tmp_path / 'out'}", *overrides])


@pytest.fixture(autouse=True)
def sample_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ENCDEC_CACHE", str(tmp_path / "cache"))


def tiny_local_set(tmp_path):
    path = tmp_path / "tiny.jsonl"
    rows = [{"id": "a", "article": "Alpha beta gamma. Delta epsilon zeta. Eta theta iota. Kappa lambda mu.",
             "highlights": "alpha beta omega"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return "data=local", f"data.source.files.test={path}"


def without_timing(metrics):
    return {k: v for k, v in metrics.items() if k != "examples_per_s"}


def test_lead3_matches_hand_computation(tmp_path):
    metrics = evaluate_script.evaluate(config(tmp_path, *tiny_local_set(tmp_path), "baseline=lead3",
                                              "bootstrap_samples=50"))
    # Lead-3 has 9 tokens (alpha .. iota), the reference 3 (alpha beta omega), 2 shared:
    # P = 2/9, R = 2/3, F = 2PR / (P + R) = 1/3. Bigrams: 1 shared ("alpha beta") of 8 and 2:
    # P = 1/8, R = 1/2, F = 1/5.
    rouge = metrics["rouge"]
    assert rouge["rouge1"]["precision"]["mid"] == pytest.approx(2 / 9)
    assert rouge["rouge1"]["recall"]["mid"] == pytest.approx(2 / 3)
    assert rouge["rouge1"]["fmeasure"]["mid"] == pytest.approx(1 / 3)
    assert rouge["rouge2"]["fmeasure"]["mid"] == pytest.approx(1 / 5)
    row = json.loads((tmp_path / "out" / "predictions.jsonl").read_text())
    assert row["prediction"] == "Alpha beta gamma.\nDelta epsilon zeta.\nEta theta iota."


def test_reference_baseline_scores_100(tmp_path):
    metrics = evaluate_script.evaluate(config(tmp_path, "baseline=reference", "limit=20"))
    assert metrics["examples"] == 20
    for kind in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert metrics["rouge"][kind]["fmeasure"]["mid"] == pytest.approx(1.0)


def test_resume_after_interruption_gives_same_metrics(tmp_path):
    full = evaluate_script.evaluate(config(tmp_path / "a", "baseline=lead3", "limit=40", "batch_size=8"))
    # An interrupted run: 16 complete lines and a torn one, as a kill mid-write leaves it.
    first = config(tmp_path / "b", "baseline=lead3", "limit=40", "batch_size=8")
    evaluate_script.evaluate(first)
    predictions = Path(first.output_dir) / "predictions.jsonl"
    lines = predictions.read_text().splitlines(keepends=True)
    predictions.write_text("".join(lines[:16]) + lines[16][:20])
    (Path(first.output_dir) / "metrics.json").unlink()
    resumed = evaluate_script.evaluate(first)
    assert without_timing(resumed) == {**without_timing(full), "data": resumed["data"]}
    assert len(predictions.read_text().splitlines()) == 40
    saved = json.loads((Path(first.output_dir) / "metrics.json").read_text())
    assert saved["rouge"] == full["rouge"]


def test_parallel_scoring_equals_serial(tmp_path):
    serial = evaluate_script.evaluate(config(tmp_path / "s", "baseline=lead3", "limit=30"))
    parallel = evaluate_script.evaluate(config(tmp_path / "p", "baseline=lead3", "limit=30", "rouge_workers=2"))
    assert parallel["rouge"] == serial["rouge"]


def test_refuses_to_mix_predictions_of_another_run(tmp_path):
    evaluate_script.evaluate(config(tmp_path, "baseline=lead3", "limit=5"))
    with pytest.raises(ValueError, match="different baseline.*refusing to mix.*overwrite=true"):
        evaluate_script.evaluate(config(tmp_path, "baseline=reference", "limit=5"))
    metrics = evaluate_script.evaluate(config(tmp_path, "baseline=reference", "limit=5", "overwrite=true"))
    assert metrics["rouge"]["rouge1"]["fmeasure"]["mid"] == pytest.approx(1.0)


def test_split_that_does_not_exist(tmp_path):
    with pytest.raises(ValueError, match="No files for split 'tset'.*\\['test', 'train', 'validation'\\]"):
        evaluate_script.evaluate(config(tmp_path, "baseline=lead3", "split=tset"))


def test_empty_split(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="has no examples.*empty"):
        evaluate_script.evaluate(config(tmp_path, "data=local", f"data.source.files.test={empty}", "baseline=lead3"))


def test_model_path_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        evaluate_script.evaluate(config(tmp_path, f"model_path={tmp_path / 'nope'}", "limit=2"))


def test_missing_model_and_baseline(tmp_path):
    with pytest.raises(ValueError, match="Set model_path="):
        evaluate_script.evaluate(config(tmp_path, "limit=2"))


def test_torn_line_is_dropped(tmp_path):
    store = PredictionStore(tmp_path, {"model": "m"})
    store.append([{"id": "1", "reference": "r", "prediction": "p"}])
    with store.path.open("a") as f:
        f.write('{"id": "2", "refer')
    assert store.done() == {"1": "p"}
    store.append([{"id": "3", "reference": "r", "prediction": "q"}])
    assert store.done() == {"1": "p", "3": "q"}


@pytest.mark.slow
def test_checkpoint_and_exported_folder_give_the_same_predictions(tmp_path, compose):
    from conftest import TINY

    import train

    cfg = compose(*TINY)
    train.train(cfg)
    summary = json.loads((Path(cfg.run_dir) / "metrics.json").read_text())
    results = {}
    for name, path in (("hf", summary["exported_model"]), ("ckpt", summary["best_checkpoint"])):
        overrides = [f"model_path={path}", "limit=6", "batch_size=4", "generation.max_length=8"]
        results[name] = evaluate_script.evaluate(config(tmp_path / name, *overrides))
        rows = (tmp_path / name / "out" / "predictions.jsonl").read_text().splitlines()
        results[name]["predictions"] = sorted(json.loads(r)["prediction"] for r in rows)
    assert results["ckpt"]["predictions"] == results["hf"]["predictions"]
    assert results["ckpt"]["rouge"] == results["hf"]["rouge"]
    assert results["hf"]["generation"]["max_length"] == 8


def test_a_second_evaluation_into_a_folder_in_use_is_refused_in_one_line(tmp_path):
    """While another process evaluates into output_dir, a second evaluation there stops before it
    reads or writes anything, naming the holder; the first one's predictions stay as they were."""
    import subprocess
    import sys

    from encdec.base.errors import UsageError

    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.jsonl").write_text('{"id": "a", "prediction": "kept"}\n')
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from encdec.apps.run_folder import claim_output_folder; claim_output_folder(Path(sys.argv[1])); "
         "print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError, match=r"Evaluation folder .*out is in use by the run of pid "
                                             rf"{holder.pid} .*set output_dir=NEW"):
            evaluate_script.evaluate(config(tmp_path, "baseline=lead3", "limit=5"))
    finally:
        holder.kill()
        holder.wait()
    assert (out / "predictions.jsonl").read_text() == '{"id": "a", "prediction": "kept"}\n'
    assert not (out / "run.json").exists()
