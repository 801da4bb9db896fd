"""Every path that takes generation settings must generate with them: the `encdec summarize` flags,
`encdec.summarize` and `Summarizer` keywords, `evaluate.py generation.*` overrides and the
validation settings of `Seq2SeqModule` (the exported generation_config.json of a training run is
tested in test_bert2gpt2_export.py). Each case compares a front end's output with
`model.generate(...)` under the setting, on a tiny model where that setting changes the output, so
a path that drops the setting fails."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from conftest import CONF
from omegaconf import OmegaConf
from tiny_models import reference_model, spread_weights, summaries_one_by_one

import encdec
from encdec import EncoderDecoderModel, Summarizer, load_tokenizer
from encdec.apps.cli import GENERATION_FLAGS
from encdec.apps.cli import main as cli_main

pytest.importorskip("transformers")  # the tiny model's weights come from transformers' initialisation

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0-4: pad 0, start 2
VOCAB = SPECIALS + [f"w{i}" for i in range(len(SPECIALS), 99)]  # one whole word per remaining id
DOCS = [" ".join(f"w{5 + (7 * i + 3 * j) % 90}" for j in range(3 + i % 5)) for i in range(12)]

# setting -> (settings it needs to matter, the non-default value under test)
CASES = {
    "num_beams": ({}, {"num_beams": 2}),
    "max_length": ({}, {"max_length": 5}),
    "min_length": ({}, {"min_length": 12}),
    "max_new_tokens": ({}, {"max_new_tokens": 4}),
    "min_new_tokens": ({}, {"min_new_tokens": 11}),
    "no_repeat_ngram_size": ({}, {"no_repeat_ngram_size": 2}),
    "repetition_penalty": ({}, {"repetition_penalty": 3.0}),
    "length_penalty": ({"num_beams": 3}, {"length_penalty": -3.0}),
    "early_stopping": ({"num_beams": 3}, {"early_stopping": True}),
}
CLI_FLAGS = sorted(GENERATION_FLAGS)  # tests/test_cli.py holds these against GenerationConfig's fields
EVALUATE_KEYS = sorted(OmegaConf.load(CONF / "generation" / "stored.yaml"))  # evaluate.py's generation.* keys
TRAIN_KEYS = sorted(OmegaConf.load(CONF / "generation" / "greedy.yaml"))  # what train.py hands Seq2SeqModule


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """bert2gpt2 (tiny, spread weights) with a word-per-id WordPiece vocabulary. Its EOS is a word
    the model emits mid-sequence, so rows end at different steps and length settings matter."""
    path = tmp_path_factory.mktemp("settings")
    spread_weights(reference_model("bert2gpt2"), seed=1).save_pretrained(path)
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    model = EncoderDecoderModel.from_pretrained(path)
    model.generation_config = model.generation_config.update(decoder_start_token_id=2, pad_token_id=0)
    tokens = torch.cat([model.generate(load_tokenizer(path)([d], truncation=True, return_tensors="pt")["input_ids"],
                                       max_length=12, no_repeat_ngram_size=2,
                                       num_beams=2, eos_token_id=None) for d in DOCS])
    counts = torch.bincount(tokens[:, 3:].flatten(), minlength=len(VOCAB))
    counts[tokens[:, :3].flatten()] = 0
    eos = int(counts.argmax())
    model.generation_config = model.generation_config.update(eos_token_id=eos)
    model.save_pretrained(path)
    config = {"model_max_length": 512, "eos_token": VOCAB[eos]}  # special: decoding drops it, as it drops [SEP]
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


@functools.lru_cache(maxsize=None)
def _reference(path: str, dtype: str, items: tuple) -> list[str]:
    model = EncoderDecoderModel.from_pretrained(path).to(getattr(torch, dtype))
    tokenizer = load_tokenizer(path)
    return summaries_one_by_one(model, tokenizer, tokenizer, DOCS, **dict(items))


def reference(folder: Path, dtype: str = "float32", **settings) -> list[str]:
    """The summaries `model.generate(**settings)` gives, one document at a time."""
    return _reference(str(folder), dtype, tuple(sorted(settings.items())))


def expected_for(folder: Path, name: str) -> tuple[dict, list[str]]:
    """(settings to pass, the summaries they must give); fails if the case's setting changes nothing."""
    base, setting = CASES[name]
    expected = reference(folder, **base, **setting)
    assert expected != reference(folder, **base), f"{setting} does not change the output; pick another value"
    return {**base, **setting}, expected


def run_cli(folder: Path, tmp_path: Path, capsys, *args: str) -> tuple[int, list[str], str]:
    """`encdec summarize --model folder DOCS-file args...`: (exit code, output lines, stderr)."""
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(DOCS) + "\n")
    capsys.readouterr()
    code = cli_main(["summarize", "--model", str(folder), str(docs), *args])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def flags(settings: dict) -> list[str]:
    return [part for k, v in settings.items() for part in ("--" + k.replace("_", "-"), str(v))]


# ---------------------------------------------------------------------- encdec summarize


def test_every_cli_generation_flag_has_a_case(capsys):
    with pytest.raises(SystemExit):
        cli_main(["summarize", "--help"])
    shown = {word[2:].replace("-", "_") for word in capsys.readouterr().out.split() if word.startswith("--")}
    assert shown - {"help", "model", "batch_size", "device", "dtype"} == set(CLI_FLAGS)
    assert set(CLI_FLAGS) <= set(CASES)


@pytest.mark.parametrize("name", CLI_FLAGS)
def test_cli_flag_changes_the_summaries_as_generate_does(folder, tmp_path, capsys, name):
    settings, expected = expected_for(folder, name)
    code, lines, err = run_cli(folder, tmp_path, capsys, *flags(settings))
    assert code == 0, err
    assert lines == expected


def test_cli_dtype_and_batch_size(folder, tmp_path, capsys):
    expected = reference(folder, "bfloat16")
    assert expected != reference(folder), "bfloat16 gives the float32 summaries here; pick other documents"
    code, lines, err = run_cli(folder, tmp_path, capsys, "--dtype", "bfloat16", "--batch-size", "5")
    assert code == 0 and lines == expected, err
    for bad, message in ((["--dtype", "float64"], "Unknown dtype 'float64'"),
                         (["--batch-size", "0"], "batch_size must be >= 1")):
        code, lines, err = run_cli(folder, tmp_path, capsys, *bad)
        assert code == 2 and lines == [] and message in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------- encdec.summarize / Summarizer


@pytest.mark.parametrize("name", sorted(CASES))
def test_summarize_keywords_change_the_summaries_as_generate_does(folder, name):
    settings, expected = expected_for(folder, name)
    assert encdec.summarize(DOCS, model=folder, **settings) == expected
    assert Summarizer.from_pretrained(folder, batch_size=5)(DOCS, **settings) == expected


def test_summarize_dtype_and_batch_size(folder):
    expected = reference(folder, "bfloat16")
    assert expected != reference(folder)
    assert encdec.summarize(DOCS, model=folder, dtype="bfloat16", batch_size=3) == expected
    assert Summarizer.from_pretrained(folder, dtype=torch.bfloat16)(DOCS) == expected
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        Summarizer.from_pretrained(folder, batch_size=0)
    with pytest.raises(ValueError, match="Unknown dtype"):
        encdec.summarize(DOCS, model=folder, dtype="float64")


# ---------------------------------------------------------------------- evaluate.py


def evaluate(folder: Path, tmp_path: Path, *overrides: str) -> list[str]:
    """`python evaluate.py model_path=folder` on DOCS; the predictions in DOCS order."""
    from hydra import compose, initialize_config_dir

    import evaluate as evaluate_script

    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "article": d, "highlights": d}) + "\n"
                            for i, d in enumerate(DOCS)))
    out = tmp_path / "out"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=[
            f"model_path={folder}", "data=local", f"data.source.files.test={data}", f"output_dir={out}",
            "batch_size=4", "bootstrap_samples=10", *overrides,
        ])
    evaluate_script.evaluate(cfg)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    by_id = {row["id"]: row["prediction"] for row in rows}
    return [by_id[str(i)] for i in range(len(DOCS))]


@pytest.mark.parametrize("name", EVALUATE_KEYS)
def test_evaluate_generation_override_changes_predictions_as_generate_does(folder, tmp_path, name):
    assert name in CASES, f"conf/generation/stored.yaml has {name}: add a case for it to CASES"
    settings, expected = expected_for(folder, name)
    assert evaluate(folder, tmp_path, *(f"generation.{k}={v}" for k, v in settings.items())) == expected


def test_evaluate_on_two_processes_gives_the_summaries_of_generate(folder, tmp_path):
    assert evaluate(folder, tmp_path, "devices=2") == reference(folder)


def test_evaluate_dtype_and_batch_size(folder, tmp_path):
    expected = reference(folder, "bfloat16")
    assert expected != reference(folder)
    assert evaluate(folder, tmp_path / "bf16", "dtype=bfloat16", "batch_size=5") == expected
    with pytest.raises(ValueError, match=r"batch_size=0: must be >= 1"):
        evaluate(folder, tmp_path / "zero", "batch_size=0")


# ---------------------------------------------------------------------- validation in training


def validation_predictions(folder: Path, tmp_path: Path, generation: dict) -> list[str]:
    """Seq2SeqModule(generation=...) validated by Lightning on DOCS; the predictions it logged."""
    import lightning as L
    from torch.utils.data import DataLoader

    from encdec.training.module import Seq2SeqModule

    tokenizer = load_tokenizer(folder)
    batches = []
    for start in range(0, len(DOCS), 5):  # padded batches, as the data module makes them
        docs = DOCS[start:start + 5]
        batch = dict(tokenizer(docs, padding=True, truncation=True, return_tensors="pt"))
        batch["labels"] = batch["input_ids"][:, 1:4].clone()
        batch.update(ids=[str(start + i) for i in range(len(docs))], references=docs)
        batches.append(batch)
    module = Seq2SeqModule(EncoderDecoderModel.from_pretrained(folder), tokenizer, optimizer=torch.optim.AdamW,
                           generation=generation, table_rows=len(DOCS))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.validate(module, dataloaders=DataLoader(batches, batch_size=None), verbose=False)
    rows = [json.loads(line) for line in (tmp_path / "predictions" / "step_000000.jsonl").read_text().splitlines()]
    by_id = {row["id"]: " ".join(row["prediction"].split()) for row in rows}
    return [by_id[str(i)] for i in range(len(DOCS))]


@pytest.mark.parametrize("name", TRAIN_KEYS)
def test_validation_generates_with_the_modules_settings(folder, tmp_path, name):
    assert name in CASES, f"conf/generation/greedy.yaml has {name}: add a case for it to CASES"
    settings, expected = expected_for(folder, name)
    assert validation_predictions(folder, tmp_path, settings) == expected
