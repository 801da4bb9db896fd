"""Pictures: evaluate.py plots=true and the training curve draw the run's own numbers (checked
against rouge-score and metrics.json), and a missing matplotlib is one line, found up front."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from hydra import compose, initialize_config_dir
from rouge_score import rouge_scorer

import evaluate as evaluate_script
from encdec.base.errors import UsageError
from encdec.evaluation import plots

pytest.importorskip("matplotlib")
CONF = str(Path(__file__).resolve().parents[2] / "conf")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def drawn(monkeypatch):
    """The figures plots.save writes, kept open for inspection."""
    figures = []
    real_save = plots.save

    def keep(figure, path):
        figures.append(figure)
        return real_save(figure, path)

    monkeypatch.setattr(plots, "save", keep)
    return figures


def evaluate_config(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("evaluate", overrides=[f"output_dir={tmp_path / 'out'}", *overrides])


def test_evaluate_plots_show_per_example_rouge2_and_lengths(tmp_path, monkeypatch, drawn):
    monkeypatch.setenv("ENCDEC_CACHE", str(tmp_path / "cache"))
    evaluate_script.evaluate(evaluate_config(tmp_path, "baseline=lead3", "limit=24", "plots=true",
                                             "bootstrap_samples=10"))
    out = tmp_path / "out"
    assert (out / "plots.png").read_bytes().startswith(PNG)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    scorer = rouge_scorer.RougeScorer(["rouge2"], use_stemmer=True)
    rouge2 = [100 * scorer.score(r["reference"], r["prediction"])["rouge2"].fmeasure for r in rows]
    (figure,) = drawn
    spread, lengths = figure.axes
    heights = [bar.get_height() for bar in spread.patches]
    assert heights == list(np.histogram(rouge2, bins=20, range=(0, 100))[0])
    points = sorted(map(tuple, lengths.collections[0].get_offsets().tolist()))
    assert points == sorted((len(r["reference"].split()), len(r["prediction"].split())) for r in rows)


def test_evaluate_without_plots_writes_none(tmp_path, monkeypatch):
    monkeypatch.setenv("ENCDEC_CACHE", str(tmp_path / "cache"))
    evaluate_script.evaluate(evaluate_config(tmp_path, "baseline=lead3", "limit=4", "bootstrap_samples=10"))
    assert not (tmp_path / "out" / "plots.png").exists()


def test_training_writes_its_validation_curve(compose, tmp_path, drawn):
    import train

    train.train(compose(*TINY, "validate_before_training=true"))
    run = tmp_path / "run"
    assert (run / "validation_rouge.png").read_bytes().startswith(PNG)
    history = json.loads((run / "metrics.json").read_text())["validation"]
    assert [row["step"] for row in history] == [0, 2, 4]
    (figure,) = drawn
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert list(lines[name].get_xdata()) == [0, 2, 4]
        assert list(lines[name].get_ydata()) == [row[f"val/{name}"] for row in history]


def test_missing_matplotlib_is_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    monkeypatch.setenv("ENCDEC_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UsageError, match=r"plots=true needs matplotlib: pip install"):
        evaluate_script.evaluate(evaluate_config(tmp_path, "baseline=lead3", "limit=4", "plots=true"))
    assert not (tmp_path / "out" / "predictions.jsonl").exists()
    assert plots.write_training_curve([{"step": 0, "val/rouge1": 1.0}], tmp_path) is None  # training goes on


def offline_runs(folder: Path) -> list[Path]:
    return sorted((folder / "wandb").glob("offline-run-*"))


def test_evaluate_logs_scores_and_plots_to_wandb(tmp_path, monkeypatch):
    """wandb=true: an offline run (no credentials here) holding the ROUGE mids of metrics.json and
    plots.png; without it no wandb run is started."""
    import wandb

    monkeypatch.setenv("ENCDEC_CACHE", str(tmp_path / "cache"))
    summaries = []
    real_init = wandb.init

    def init(**kwargs):
        run = real_init(**kwargs)
        real_finish = run.finish

        def finish(*args, **kw):
            summaries.append({key: run.summary[key] for key in run.summary.keys() if key.startswith("test/")})
            return real_finish(*args, **kw)

        run.finish = finish
        return run

    monkeypatch.setattr(wandb, "init", init)
    overrides = ("baseline=lead3", "limit=8", "plots=true", "bootstrap_samples=10")
    evaluate_script.evaluate(evaluate_config(tmp_path, *overrides, "wandb=true"))
    out = tmp_path / "out"
    (run,) = offline_runs(out)
    (image,) = (run / "files" / "media" / "images" / "plots").glob("plots_*.png")
    assert image.read_bytes() == (out / "plots.png").read_bytes()
    rouge = json.loads((out / "metrics.json").read_text())["rouge"]
    assert summaries == [{f"test/{name}": value["fmeasure"]["mid"] for name, value in rouge.items()}]
    evaluate_script.evaluate(evaluate_config(tmp_path / "plain", *overrides))
    assert not offline_runs(tmp_path / "plain" / "out") and len(summaries) == 1
