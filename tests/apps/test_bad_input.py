"""A new user's first hour (issue 12): every bad input is caught up front with one clear line and
exit status 2, nothing printed is misleading, nothing already written is lost. One test per
finding, then property-style tests that feed random bytes and random JSON values through
`encdec summarize` and the local data reader."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, ROOT, TINY
from test_cli import document, model_dir  # noqa: F401  (the tiny model folder fixture)

from encdec.apps.preflight import quickstart_notice
from encdec.base.errors import UsageError

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def run(args: list[str], cwd: Path, stdin: bytes | None = None, **env: str) -> subprocess.CompletedProcess:
    """A command in a subprocess, importing this checkout's encdec; text output."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    done = subprocess.run(args, cwd=cwd, env=environ, input=stdin, capture_output=True, timeout=240)
    done.stdout, done.stderr = (s.decode("utf-8", "replace") for s in (done.stdout, done.stderr))
    return done


def script(name: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return run([sys.executable, str(ROOT / name), *args], cwd, **env)


def cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "encdec.apps.cli", "summarize", *args], ROOT, stdin=stdin)


def error_line(done: subprocess.CompletedProcess, prog: str) -> str:
    """The one `prog: error:` line of a run that failed on bad input, with no traceback."""
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-4000:]
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-4000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, done.stderr[-4000:]
    return lines[0]


def compose_train(run_dir: Path, *overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"run_dir={run_dir}", *overrides])
    GlobalHydra.instance().clear()
    return cfg


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, cache_dir):
    """A tiny training of 3 steps with val_check_interval=5 (shorter than one interval), CSV logs."""
    import train

    run_dir = tmp_path_factory.mktemp("short") / "run"
    cfg = compose_train(run_dir, *TINY, "trainer.max_steps=3", "trainer.val_check_interval=5")
    out = io.StringIO()
    stdout, sys.stdout = sys.stdout, out
    try:
        train.train(cfg)
    finally:
        sys.stdout = stdout
    return run_dir, out.getvalue()


def printed_paths(report: str) -> list[Path]:
    return [Path(m) for m in re.findall(r"^[\w ()]+:\s+(/\S+)$", report, flags=re.M)]


# 1 ------------------------------------------------------------------ data=local under the quickstart


def test_data_local_takes_its_own_sizes_and_names_the_quickstart_settings_it_keeps(tmp_path, cache_dir):
    local = compose_train(tmp_path, "data=local")
    sizes = ("max_source_length", "max_target_length", "batch_size", "val_examples")
    assert [local.data[k] for k in sizes] == [512, 128, 16, 256]
    assert [compose_train(tmp_path).data[k] for k in sizes] == [128, 40, 8, 48]  # the quickstart is unchanged
    notice = quickstart_notice(local, {"data": "local", "experiment": "quickstart"})
    assert "trainer.max_steps=120" in notice and "optim.lr=0.0002" in notice and "~experiment" in notice
    changed = compose_train(tmp_path, "data=local", "trainer.max_steps=500")
    assert "max_steps" not in quickstart_notice(changed, {"data": "local", "experiment": "quickstart"})
    assert quickstart_notice(compose_train(tmp_path, "~experiment", "data=local"), {"data": "local"}) is None
    assert quickstart_notice(compose_train(tmp_path), {"data": "sample", "experiment": "quickstart"}) is None


# 2 ------------------------------------------------------------------ non-UTF-8 input to `encdec summarize`


def test_non_utf8_stdin_gets_a_summary_per_line_and_one_warning(model_dir, tmp_path):  # noqa: F811
    data = document(10, 11, 12).encode() + b"\nCaf\xe9 \xff " + document(13).encode() + b"\n\n"
    done = cli("--model", str(model_dir), stdin=data)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.split("\n")[:-1]
    assert len(lines) == 3 and lines[0] and lines[1] and lines[2] == ""
    warnings = [line for line in done.stderr.splitlines() if line.startswith("encdec: warning:")]
    assert len(warnings) == 1 and "<stdin>:2" in warnings[0]
    (tmp_path / "in.txt").write_bytes(data)
    from_file = cli("--model", str(model_dir), str(tmp_path / "in.txt"))
    assert from_file.stdout == done.stdout and f"{tmp_path / 'in.txt'}:2" in from_file.stderr


# 3 ------------------------------------------------------------------ resume into a new run folder


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.slow
def test_resume_into_a_new_folder_keeps_best_tracking_and_removes_stale_temporaries(tmp_path, cache_dir):
    import train

    first, second = tmp_path / "first", tmp_path / "second"
    train.train(compose_train(first, *TINY, "trainer.max_steps=6", "trainer.val_check_interval=3"))
    checkpoints = first / "checkpoints"
    stale, running = checkpoints / f".last.ckpt.{dead_pid()}.tmp", checkpoints / f".last.ckpt.{os.getpid()}.tmp"
    stale.write_bytes(b"cut off by a kill")
    running.write_bytes(b"being written by a live process")
    before = digest(checkpoints)
    train.train(compose_train(second, *TINY, "trainer.max_steps=9", "trainer.val_check_interval=3",
                              f"ckpt_path={checkpoints / 'last.ckpt'}"))
    summary = json.loads((second / "metrics.json").read_text())
    assert [row["step"] for row in summary["validation"]] == [3, 6, 9]
    scores = [row["val/rougeL"] for row in summary["validation"]]
    first_best_step = summary["validation"][scores.index(max(scores))]["step"]
    assert summary["best"] == pytest.approx(max(scores))
    assert summary["best_checkpoint"] == str(second / "checkpoints" / f"best-step{first_best_step:07d}.ckpt")
    assert Path(summary["best_checkpoint"]).is_file()
    assert not stale.exists() and running.exists()
    del before[stale.name]
    assert digest(checkpoints) == before  # the earlier run's files are untouched


# 4 ------------------------------------------------------------------ non-text values, broken JSON lines


def test_non_text_values_and_broken_json_lines_are_named(tmp_path, cache_dir):
    numbers = write_jsonl(tmp_path / "numbers.jsonl", [json.dumps({"document": 5, "summary": "a"})])
    local = ["data=local", f"data.source.files.train={numbers}", f"data.source.files.validation={numbers}",
             "data.text_column=document", "data.summary_column=summary", "data.id_column=null"]
    line = error_line(script("train.py", *local, cwd=tmp_path), "train.py")
    assert f"{numbers} line 1: column 'document' holds a int (5), not text (data.text_column)" in line

    rows = [json.dumps({"id": "r1", "document": "One. Two.", "summary": "one"}),
            json.dumps({"id": "r2", "document": ["x"], "summary": "two"})]
    listed = write_jsonl(tmp_path / "listed.jsonl", rows)
    evaluated = script("evaluate.py", "baseline=lead3", "data=local", f"data.source.files.test={listed}",
                       "data.text_column=document", "data.summary_column=summary", cwd=tmp_path)
    assert f"{listed} line 2 (id 'r2'): column 'document' holds a list (['x']), not text" in error_line(
        evaluated, "evaluate.py")

    from encdec.data.datamodule import LocalSource

    truncated = write_jsonl(tmp_path / "cut.jsonl", rows[:1] + ['{"id": "r3", "docum'])
    with pytest.raises(UsageError, match=rf"{truncated} line 2: not valid JSON .*repair or delete that line"):
        LocalSource({"train": str(truncated)}).open("train")
    assert json.loads(listed.read_text().splitlines()[1])["document"] == ["x"]  # inputs untouched


@pytest.mark.slow
def test_a_training_record_without_its_summary_is_named_by_file_and_line(tmp_path, cache_dir):
    """data.on_empty=error: the record's file and line (there is no id column), not "Record None"."""
    rows = [json.dumps({"document": f"Article number {i}. It has words.", "summary": f"summary {i}"})
            for i in range(40)]
    rows[6] = json.dumps({"document": "An article whose summary is missing."})
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    tiny = [o for o in TINY if not o.startswith("data.source.")]
    local = [*tiny, "data=local", f"data.source.files.train={data}", f"data.source.files.validation={data}",
             "data.text_column=document", "data.summary_column=summary", "data.id_column=null"]
    refused = script("train.py", *local, "data.on_empty=error", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert f"train.py: error: {data} line 7: column 'summary' is empty or missing." in error_line(refused, "train.py")


def test_non_text_values_mid_stream_are_skipped_and_counted_or_refused():
    from encdec.data.batching import Columns, EmptyExamples, take_usable

    records = [{"id": "a", "article": "text", "highlights": "sum"}, {"id": "b", "article": 3.5, "highlights": "x"},
               {"id": "c", "article": "more", "highlights": {"k": 1}}, {"id": "d", "article": "t", "highlights": "s"}]
    skip = EmptyExamples(Columns(), "skip")
    assert [r["id"] for r in take_usable(iter(records), 4, skip)] == ["a", "d"] and skip.count == 2
    with pytest.raises(UsageError, match=r"Record 'b': column 'article' holds a float \(3.5\), not text"):
        take_usable(iter(records), 4, EmptyExamples(Columns(), "error"))


# 5 ------------------------------------------------------------------ config errors before anything heavy


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-1", "optim.lr=-1: must be > 0"),
    ("data.batch_size=0", "data.batch_size=0: must be >= 1"),
    ("trainer.max_steps=0", "trainer.max_steps=0: must be >= 1"),
    ("data.max_target_length=abc", "data.max_target_length='abc': must be a whole number"),
    ("generation.num_beams=0", "generation.num_beams=0: must be >= 1"),
    ("data=local", "data.source.files.train is not set"),
    ("ckpt_path=nowhere/last.ckpt", "ckpt_path=nowhere/last.ckpt: no such checkpoint"),
])
def test_config_errors_stop_before_torch_is_imported(override, message, tmp_path):
    done = run([sys.executable, "-X", "importtime", str(ROOT / "train.py"), override,
                f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert error_line(done, "train.py").startswith(f"train.py: error: {message}")
    assert not re.search(r"\|\s+torch$", done.stderr, flags=re.M)  # nothing heavy was imported
    assert not (tmp_path / "run").exists()  # a folder holding only .hydra/ is not left behind


def test_an_override_hydra_cannot_compose_is_a_usage_error(tmp_path):
    done = script("train.py", "optim.lrr=1", cwd=tmp_path)
    assert done.returncode == 2 and "optim.lrr" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args, key", [
    (["model=does_not_exist"], "model=does_not_exist"),
    (["model/encoder=nope"], "model/encoder=nope"),
    (["experiment=nope"], "experiment=nope"),  # an optional group: Hydra would start the quickstart without it
    (["-m", "model=tiny,nope"], "model=nope"),
])
def test_an_unknown_config_group_option_is_one_line_naming_the_choices(args, key, tmp_path):
    done = script("train.py", *args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                  cwd=tmp_path)
    group, value = key.split("=")
    choices = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    assert error_line(done, "train.py") == (f"train.py: error: {key}: config group '{group}' has no option "
                                            f"'{value}'; choose one of {', '.join(choices)} (the yaml files in "
                                            f"conf/{group}/).")
    assert done.stderr.strip() == error_line(done, "train.py") and done.stdout == ""
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_an_unknown_option_for_evaluate_is_one_line_too(tmp_path):
    evaluated = script("evaluate.py", "generation=greedyy", cwd=tmp_path)
    assert "generation=greedyy: config group 'generation' has no option 'greedyy'; choose one of cnn_dailymail, " \
           "greedy, stored" in error_line(evaluated, "evaluate.py")


def test_a_weights_only_checkpoint_cannot_resume_and_says_so_in_one_line(tmp_path):
    import torch

    weights = tmp_path / "best-step0000002.ckpt"
    torch.save({"state_dict": {}, "global_step": 2, "encdec_config": {}}, weights)  # what save_weights_only writes
    done = script("train.py", f"ckpt_path={weights}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert error_line(done, "train.py") == (
        f"train.py: error: ckpt_path={weights} holds weights only (save_weights_only): it cannot resume training. "
        "Resume from the run's checkpoints/last.ckpt; the weights alone serve evaluate.py and encdec summarize.")
    assert not (tmp_path / "run").exists()


def test_a_failed_start_leaves_an_existing_run_folder_intact(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    error_line(script("train.py", "optim.lr=abc", f"hydra.run.dir={folder}", cwd=tmp_path), "train.py")
    assert (folder / "notes.txt").read_text() == "mine"


# 6 ------------------------------------------------------------------ short runs


def test_a_run_shorter_than_one_interval_validates_at_its_last_step(short_run):
    run_dir, report = short_run
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert [row["step"] for row in summary["validation"]] == [3]
    assert summary["best_checkpoint"] == str(run_dir / "checkpoints" / "best-step0000003.ckpt")
    assert "best validated checkpoint: best-step0000003.ckpt" in summary["exported_weights"]
    assert "best val/rougeL: n/a" not in report and all(p.exists() for p in printed_paths(report))
    with open(run_dir / "csv" / "metrics.csv") as f:
        validation_steps = [int(row["step"]) for row in csv.DictReader(f) if row["val/rougeL"]]
    assert validation_steps == [3]  # the CSV numbers validations like the printed table


def test_sources_cut_at_max_source_length_are_logged(short_run):
    """data/truncated: the share of each batch's sources cut at data.max_source_length; the sample
    articles (85-155 tokens) are all longer than the tiny runs' 64."""
    run_dir, _ = short_run
    with open(run_dir / "csv" / "metrics.csv") as f:
        shares = [float(row["data/truncated"]) for row in csv.DictReader(f) if row.get("data/truncated")]
    assert shares == [1.0, 1.0, 1.0]


def test_without_a_validated_checkpoint_the_export_says_it_is_the_last_weights(tmp_path, cache_dir, capsys):
    import train

    run_dir = tmp_path / "run"
    train.train(compose_train(run_dir, *TINY, "trainer.max_steps=2", "~callbacks.best", "~callbacks.resume"))
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert "LAST weights" in summary["exported_weights"] and summary["best_checkpoint"] is None
    report = capsys.readouterr().out
    assert "checkpoints:" not in report and all(p.exists() for p in printed_paths(report))
    assert "LAST weights" in report


# 7 ------------------------------------------------------------------ one line, not a Hydra traceback


@pytest.mark.slow
def test_a_missing_hub_model_is_one_line_and_debug_shows_the_traceback(tmp_path):
    missing = "no-such-org/no-such-model"
    args = ["model=tiny", f"model.encoder.pretrained={missing}", f"model.decoder.pretrained={missing}", "logger=csv"]
    line = error_line(script("train.py", *args, cwd=tmp_path, HF_HUB_OFFLINE="1"), "train.py")
    assert "Cannot find model 'no-such-org/no-such-model'. Tried:" in line and "\\n" not in line
    debug = script("train.py", *args, "debug=true", cwd=tmp_path, HF_HUB_OFFLINE="1")
    assert debug.returncode != 0 and "Cannot find model" in debug.stderr and "Traceback" in debug.stderr


# 8 ------------------------------------------------------------------ noise and wait


def test_help_imports_nothing_heavy(tmp_path):
    done = run([sys.executable, "-X", "importtime", str(ROOT / "train.py"), "--help"], tmp_path)
    assert done.returncode == 0 and "optim" in done.stdout
    assert not re.search(r"\|\s+(torch|lightning)$", done.stderr, flags=re.M)


@pytest.mark.slow
def test_known_noise_is_gone_and_the_run_summary_is_printed_last(tmp_path, cache_dir):
    args = [*(a for a in TINY if a not in ("logger=csv", "trainer.enable_progress_bar=false")), "logger=wandb"]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SILENT"}
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT), "ENCDEC_CACHE": str(cache_dir)},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)
    out = done.stdout
    assert done.returncode == 0, out[-4000:]
    for noise in ("LeafSpec", "litlogger", "anonymous setting", "Epoch 0/-2", "Using default tokenizer"):
        assert noise not in out, noise
    assert out.count("Seed set to 42") == 1
    tail = out.rstrip().splitlines()
    assert tail[-1] == "=" * 72 and any("wandb sync" in line for line in tail[-6:])
    # the validation curve (plots: true) is logged to the wandb run too, as the same PNG
    (logged,) = (tmp_path / "run").glob("wandb/offline-run-*/files/media/images/plots/validation_rouge_*.png")
    assert logged.read_bytes() == (tmp_path / "run" / "validation_rouge.png").read_bytes()


def test_summarize_shows_progress_on_stderr_for_more_than_one_batch(model_dir):  # noqa: F811
    docs = "".join(document(10 + i, 20 + i) + "\n" for i in range(3)).encode()
    several = cli("--model", str(model_dir), "--batch-size", "1", stdin=docs)
    assert several.returncode == 0 and "3/3 examples" in several.stderr and len(several.stdout.splitlines()) == 3
    one = cli("--model", str(model_dir), "--batch-size", "8", stdin=docs)
    assert "examples" not in one.stderr and one.stdout == several.stdout


# 9 ------------------------------------------------------------------ README, and .ckpt in the CLI


def test_readme_documents_summarize_and_points_nowhere_outside_the_repository():
    readme = (ROOT / "README.md").read_text()
    for needle in ("encdec summarize --model", "encdec.summarize(", "Summarizer.from_pretrained", "last.ckpt"):
        assert needle in readme, needle
    assert "../shared" not in readme and "6 minutes on a 2-core machine shared" in readme  # timing with its conditions


def test_cli_takes_a_train_checkpoint_like_evaluate(short_run):
    run_dir, _ = short_run
    docs = b"North Bank donated computers to schools.\nA storm closed roads.\n"
    from_ckpt = cli("--model", str(run_dir / "checkpoints" / "last.ckpt"), stdin=docs)
    from_folder = cli("--model", str(run_dir / "best_model"), stdin=docs)
    assert from_ckpt.returncode == 0, from_ckpt.stderr
    assert from_ckpt.stdout == from_folder.stdout and len(from_ckpt.stdout.splitlines()) == 2


# 10 ----------------------------------------------------------------- smaller findings


def test_exported_files_get_the_umask_mode(short_run):
    umask = os.umask(0)
    os.umask(umask)
    folder = short_run[0] / "best_model"
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir() if p.is_file()}
    assert modes["model.safetensors"] == modes["config.json"] == 0o666 & ~umask, modes


def test_cuda_on_a_cpu_only_torch_is_one_line(model_dir):  # noqa: F811
    import torch

    if torch.cuda.is_available():
        pytest.skip("this torch has CUDA")
    line = error_line(cli("--model", str(model_dir), "--device", "cuda", stdin=b"w5 w6\n"), "encdec")
    assert "--device=cuda" in line and "use cpu" in line


def test_pipeline_device_numbers(model_dir):  # noqa: F811
    """transformers pipelines' device=-1 is the CPU (the same summaries as device="cpu"); device=0
    is CUDA device 0, refused in one line by a CPU-only torch."""
    import torch

    from encdec import Summarizer

    text = ["w5 w6 w7 w8 w9"]
    on_cpu = Summarizer.from_pretrained(model_dir, device="cpu")
    minus_one = Summarizer.from_pretrained(model_dir, device=-1)
    assert minus_one.device == torch.device("cpu") and minus_one(text, max_length=6) == on_cpu(text, max_length=6)
    done = cli("--model", str(model_dir), "--device", "-1", "--max-length", "6", stdin=b"w5 w6 w7 w8 w9\n")
    assert done.returncode == 0 and done.stdout.strip() == on_cpu(text, max_length=6)[0]
    if torch.cuda.is_available():
        assert Summarizer.from_pretrained(model_dir, device=0).device == torch.device("cuda:0")
        return
    with pytest.raises(UsageError, match=r"device=0 \(CUDA device cuda:0\): this PyTorch"):
        Summarizer.from_pretrained(model_dir, device=0)
    line = error_line(cli("--model", str(model_dir), "--device", "0", stdin=b"w5 w6\n"), "encdec")
    assert "--device=0 (CUDA device cuda:0)" in line and "use cpu" in line


def test_a_failed_evaluation_leaves_no_empty_output_folder(tmp_path):
    done = script("evaluate.py", "baseline=lead3", "data=local", "data.source.files.test=missing.jsonl", cwd=tmp_path)
    assert "data.source.files.test: missing.jsonl does not exist" in error_line(done, "evaluate.py")
    assert not list(tmp_path.glob("eval_outputs/*/*"))


def test_an_editable_install_puts_the_clone_on_sys_path(tmp_path):
    """Python started in the clone's parent folder must import the package, not the clone folder
    (named `encdec`, no __init__.py) as a namespace package: that needs a plain path line in the
    editable install's .pth, which an import hook placed after the path search is not."""
    import shutil
    import zipfile

    project = tmp_path / "encdec"  # a clone, named as `git clone` names it
    shutil.copytree(ROOT / "encdec", project / "encdec", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    build = "from setuptools import build_meta; print(build_meta.build_editable('wheel'))"
    done = run([sys.executable, "-c", build], project)
    assert done.returncode == 0, done.stderr[-3000:]
    with zipfile.ZipFile(project / "wheel" / done.stdout.split()[-1]) as wheel:
        pth = [wheel.read(n).decode() for n in wheel.namelist() if n.endswith(".pth")]
    assert [line.strip() for line in pth] == [str(project)]
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[1:1] = [{str(project)!r}]; "
                            "import encdec; print(encdec.__file__)"], cwd=tmp_path, env=environ,
                           capture_output=True, text=True, timeout=60)
    assert found.stdout.strip() == str(project / "encdec" / "__init__.py"), found.stderr


# ------------------------------------------------------------------- property-style: random input


def random_bytes(rng: random.Random) -> bytes:
    pieces = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))), document(rng.randrange(5, 99)).encode(),
              "Café ünïcode — ok".encode(), b"\n", b"\r\n", b"\x00\xff\xfe", b" \t "]
    return b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12)))


def test_random_bytes_through_encdec_summarize(model_dir, monkeypatch, capsys):  # noqa: F811
    from encdec.apps import cli as cli_module

    rng = random.Random(12)
    for _ in range(20):
        data = random_bytes(rng)
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        assert cli_module.main(["summarize", "--model", str(model_dir), "--batch-size", "2"]) == 0
        out = capsys.readouterr().out
        assert out.count("\n") == len(io.BytesIO(data).readlines()), data


def random_value(rng: random.Random, depth: int = 0):
    kinds = ["text", "text", "empty", "int", "float", "bool", "none", "list", "dict"][: 9 if depth < 2 else 7]
    kind = rng.choice(kinds)
    return {
        "text": lambda: " ".join(rng.choice(["alpha", "beta", "Café", "\u2028", "\ud7ff", "."])
                                 for _ in range(rng.randrange(1, 9))),
        "empty": lambda: rng.choice(["", "   "]), "int": lambda: rng.randrange(-5, 5), "float": lambda: rng.random(),
        "bool": lambda: rng.random() < 0.5, "none": lambda: None,
        "list": lambda: [random_value(rng, depth + 1) for _ in range(rng.randrange(3))],
        "dict": lambda: {"k": random_value(rng, depth + 1)},
    }[kind]()


def test_random_json_values_through_the_local_reader(tmp_path):
    from omegaconf import OmegaConf

    from encdec.data.batching import Columns, EmptyExamples, PairEncoder, take_usable
    from encdec.data.datamodule import LocalSource
    from encdec.data.files import check_local_split
    from encdec.evaluation.evaluate import read_examples
    from encdec.tokenization.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(MINILM)
    encoder = PairEncoder(tokenizer, tokenizer, 32, 8, tokenizer.sep_token_id)
    rng = random.Random(7)
    outcomes = set()
    for trial in range(12):
        lines = [json.dumps({"id": f"r{i}", "article": random_value(rng), "highlights": random_value(rng)})
                 for i in range(rng.randrange(1, 6))]
        if rng.random() < 0.3:
            lines[-1] = lines[-1][: rng.randrange(1, len(lines[-1]))]
        path = write_jsonl(tmp_path / f"t{trial}.jsonl", lines)
        source = OmegaConf.create({"_target_": "encdec.data.datamodule.LocalSource", "files": {"train": str(path)}})
        try:
            check_local_split(source, "train", ("article", "highlights", "id"))
            records = list(LocalSource({"train": str(path)}).open("train"))
        except UsageError:
            outcomes.add("refused")
            continue
        usable = take_usable(iter(records), len(records), EmptyExamples(Columns(), "skip"))
        encoder.encode([r["article"] for r in usable], [r["highlights"] for r in usable])
        outcomes.add("read")
        try:
            read_examples(records, "article", "highlights", "id", None)
        except UsageError:
            pass
    assert outcomes == {"read", "refused"}  # both paths were exercised
