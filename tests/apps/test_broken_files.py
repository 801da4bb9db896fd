"""Every file of a model folder that encdec reads, broken (invalid JSON, truncated, a value of the
wrong type, bytes that are not text), fails with one line that names the file: as a UsageError from
`from_pretrained` / `load_tokenizer`, and as one `prog: error:` line with exit status 2 from
`encdec summarize`, evaluate.py and train.py (issue 25, item 4)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, ROOT, TINY
from tiny_models import TINY_BERT, train_sentencepiece, write_byte_level_bpe, write_word_model

import encdec
from encdec.base.errors import UsageError


def edit_json(name: str, change):
    def breaker(folder: Path) -> None:
        data = json.loads((folder / name).read_text())
        change(data)
        (folder / name).write_text(json.dumps(data))
    return breaker


def write(name: str, data: bytes):
    return lambda folder: (folder / name).write_bytes(data)


def truncate(name: str):
    def breaker(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
    return breaker


def without_tokenizer_json(breaker):
    """vocab.txt is read only when no tokenizer.json is there."""
    def both(folder: Path) -> None:
        (folder / "tokenizer.json").unlink()
        breaker(folder)
    return both


def as_bin(breaker):
    def both(folder: Path) -> None:
        (folder / "model.safetensors").unlink()
        breaker(folder)
    return both


def sharded_index(index: dict):
    def breaker(folder: Path) -> None:
        (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return breaker


# case -> (the file named in the error, how to break it, what reads it: "model" or "tokenizer")
CASES = {
    "config.json truncated": ("config.json", truncate("config.json"), "model"),
    "config.json a list": ("config.json", write("config.json", b"[1, 2]"), "model"),
    "config.json encoder not an object": ("config.json", edit_json("config.json", lambda c: c.update(encoder=5)),
                                          "model"),
    "config.json hidden_size text": ("config.json", edit_json("config.json", lambda c: c["encoder"].update(
        hidden_size="abc")), "model"),
    "config.json layers float": ("config.json", edit_json("config.json", lambda c: c["decoder"].update(
        num_hidden_layers=2.5)), "model"),
    "config.json pad id text": ("config.json", edit_json("config.json", lambda c: c.update(pad_token_id="0")),
                                "model"),
    "generation_config.json truncated": ("generation_config.json", truncate("generation_config.json"), "model"),
    "generation_config.json max_length text": ("generation_config.json", edit_json(
        "generation_config.json", lambda c: c.update(max_length="x")), "model"),
    "generation_config.json num_beams list": ("generation_config.json", edit_json(
        "generation_config.json", lambda c: c.update(num_beams=[4])), "model"),
    "model.safetensors truncated": ("model.safetensors", truncate("model.safetensors"), "model"),
    "model.safetensors text": ("model.safetensors", write("model.safetensors", b"hello"), "model"),
    "pytorch_model.bin text": ("pytorch_model.bin", as_bin(write("pytorch_model.bin", b"hello")), "model"),
    "weights index without weight_map": ("model.safetensors.index.json", sharded_index({"weight_map": 5}), "model"),
    "tokenizer_config.json truncated": ("tokenizer_config.json", truncate("tokenizer_config.json"), "tokenizer"),
    "tokenizer_config.json model_max_length text": ("tokenizer_config.json", edit_json(
        "tokenizer_config.json", lambda c: c.update(model_max_length="big")), "tokenizer"),
    "tokenizer_config.json added_tokens_decoder list": ("tokenizer_config.json", edit_json(
        "tokenizer_config.json", lambda c: c.update(added_tokens_decoder=[1])), "tokenizer"),
    "special_tokens_map.json a list": ("special_tokens_map.json", write("special_tokens_map.json", b"[]"),
                                       "tokenizer"),
    "special_tokens_map.json pad_token number": ("special_tokens_map.json", edit_json(
        "special_tokens_map.json", lambda c: c.update(pad_token=5)), "tokenizer"),
    "tokenizer.json truncated": ("tokenizer.json", truncate("tokenizer.json"), "tokenizer"),
    "tokenizer.json a list": ("tokenizer.json", write("tokenizer.json", b"[1, 2]"), "tokenizer"),
    "tokenizer.json model wrong type": ("tokenizer.json", edit_json("tokenizer.json", lambda c: c.update(model="x")),
                                        "tokenizer"),
    "vocab.txt not UTF-8": ("vocab.txt", without_tokenizer_json(write("vocab.txt", b"\xff\xfe\x00bad\n")),
                            "tokenizer"),
    "vocab.txt truncated": ("vocab.txt", without_tokenizer_json(write("vocab.txt", b"[PAD]\n[UNK]\n")), "tokenizer"),
}


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory) -> Path:
    """The tiny word model with every file encdec reads: config, generation config, weights,
    tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab.txt."""
    folder = write_word_model(tmp_path_factory.mktemp("good"))
    encdec.load_tokenizer(folder).save_pretrained(folder)
    return folder


@pytest.fixture(params=sorted(CASES))
def broken(request, good_folder, tmp_path) -> tuple[Path, Path, str]:
    """(folder, the broken file, what reads it)."""
    name, breaker, reader = CASES[request.param]
    folder = tmp_path / "model"
    shutil.copytree(good_folder, folder)
    breaker(folder)
    return folder, folder / name, reader


def assert_one_line_naming(message: str, path: Path) -> None:
    assert "\n" not in message.strip() and "Traceback" not in message, message
    assert str(path) in message, message


def error_line(err: str, prog: str) -> str:
    """The one `prog: error:` line on stderr (a progress bar of the data set may come before it)."""
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def test_loading_raises_one_usage_error_naming_the_file(broken):
    folder, path, reader = broken
    with pytest.raises(UsageError) as caught:
        if reader == "model":
            encdec.EncoderDecoderModel.from_pretrained(folder)
        else:
            encdec.load_tokenizer(folder)
    assert_one_line_naming(str(caught.value), path)


def test_encdec_summarize_prints_one_line_and_exits_2(broken, monkeypatch, capsys):
    from encdec.apps.cli import main

    folder, path, _ = broken
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"w5 w6 w7\n")))
    assert main(["summarize", "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("encdec: error:")
    assert_one_line_naming(err, path)


def test_evaluate_prints_one_line_and_exits_2(broken, tmp_path, capsys, cache_dir):
    from hydra import compose, initialize_config_dir

    import evaluate as evaluate_script
    from encdec.apps.entry import run_entry

    folder, path, _ = broken
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"model_path={folder}", "limit=2", f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(SystemExit) as exited:
        run_entry("evaluate.py", lambda: evaluate_script.evaluate(cfg))
    assert exited.value.code == 2
    assert_one_line_naming(error_line(capsys.readouterr().err, "evaluate.py"), path)


# ------------------------------------------------------------------ tokenizer-only folders, other layouts


def test_broken_byte_level_bpe_files_are_named(tmp_path):
    write_byte_level_bpe(tmp_path, ["<s>", "<pad>", "</s>", "<unk>"])
    merges = tmp_path / "merges.txt"
    merges.write_text("#version: 0.2\nonly-one-piece\n")
    with pytest.raises(UsageError) as caught:
        encdec.load_tokenizer(tmp_path)
    assert_one_line_naming(str(caught.value), merges)
    (tmp_path / "vocab.json").write_text('{"a": ')
    with pytest.raises(UsageError) as caught:
        encdec.load_tokenizer(tmp_path)
    assert_one_line_naming(str(caught.value), tmp_path / "vocab.json")


def test_a_truncated_sentencepiece_model_is_named(tmp_path):
    pytest.importorskip("sentencepiece")
    data = train_sentencepiece(**{"pad_id": 0, "eos_id": 1, "bos_id": 2, "unk_id": 3})
    (tmp_path / "spiece.model").write_bytes(data[: len(data) // 3])
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "BertGenerationTokenizer"}')
    with pytest.raises(UsageError) as caught:
        encdec.load_tokenizer(tmp_path)
    assert_one_line_naming(str(caught.value), tmp_path / "spiece.model")


# ------------------------------------------------------------------ train.py, and the real entry points


def test_train_prints_one_line_and_exits_2(good_folder, tmp_path, capsys, cache_dir):
    """A broken tokenizer file of the tokenizer a run names; a broken config.json of a warm start."""
    import train as train_script
    from encdec.apps.entry import run_entry

    tokenizer_folder = tmp_path / "tok"
    shutil.copytree(good_folder, tokenizer_folder)
    (tokenizer_folder / "tokenizer.json").write_text("{")
    encoder = tmp_path / "encoder"
    encdec.BertModel(encdec.BertConfig(**TINY_BERT)).save_pretrained(encoder)
    edit_json("config.json", lambda c: c.update(hidden_size="wide"))(encoder)
    for overrides, path in (
        ([f"model.encoder.tokenizer={tokenizer_folder}", f"model.decoder.tokenizer={tokenizer_folder}"],
         tokenizer_folder / "tokenizer.json"),
        ([f"model.encoder.pretrained={encoder}", f"model.decoder.pretrained={encoder}",
          f"model.encoder.tokenizer={good_folder}", f"model.decoder.tokenizer={good_folder}"],
         encoder / "config.json"),
    ):
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=[f"run_dir={tmp_path / 'run'}", *TINY, *overrides])
        with pytest.raises(SystemExit) as exited:
            run_entry("train.py", lambda: train_script.train(cfg), run_dir=cfg.run_dir)
        assert exited.value.code == 2
        assert_one_line_naming(error_line(capsys.readouterr().err, "train.py"), path)


@pytest.mark.slow
def test_the_entry_points_as_commands(good_folder, tmp_path):
    """The issue's cases as a user runs them: a truncated tokenizer.json gave a traceback from
    `encdec summarize` and evaluate.py (exit 1)."""
    folder = tmp_path / "model"
    shutil.copytree(good_folder, folder)
    truncate("tokenizer.json")(folder)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ENCDEC_CACHE": str(tmp_path / "cache")}
    for prog, command in (
        ("encdec", [sys.executable, "-m", "encdec.apps.cli", "summarize", "--model", str(folder)]),
        ("evaluate.py", [sys.executable, str(ROOT / "evaluate.py"), f"model_path={folder}", "limit=2",
                         f"hydra.run.dir={tmp_path / 'eval'}"]),
    ):
        done = subprocess.run(command, input="w5 w6\n", capture_output=True, text=True, timeout=240, env=env,
                              cwd=tmp_path)
        assert done.returncode == 2, done.stderr[-3000:]
        assert_one_line_naming(error_line(done.stderr, prog), folder / "tokenizer.json")
