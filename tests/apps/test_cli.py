"""`encdec summarize` end to end on a tiny model folder, and the summarising front end's handling of
bad input: blank documents, over-long documents, a wrong model path."""

import subprocess
import sys
import warnings

import pytest
from tiny_models import WORD_TOKENS as WORDS
from tiny_models import write_word_model

import encdec
from encdec import Summarizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny bert2bert folder with a 99-word WordPiece tokenizer and a stored max_length of 6."""
    return write_word_model(tmp_path_factory.mktemp("tiny"))


def document(*numbers: int) -> str:
    return " ".join(f"w{n}" for n in numbers)


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "encdec.apps.cli", "summarize", *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120)


def test_cli_summarizes_one_line_per_document(model_dir, tmp_path):
    long_doc = document(*[5 + i % 90 for i in range(100)])  # 102 tokens > 64 positions
    docs = [document(10, 11, 12, 13), "", "   ", long_doc, document(40, 41)]
    (tmp_path / "in.txt").write_text("\n".join(docs) + "\n")
    done = run_cli("--model", str(model_dir), str(tmp_path / "in.txt"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")[:-1]
    assert len(lines) == len(docs)
    assert lines[1] == lines[2] == ""
    assert all(0 < len(lines[i].split()) <= 5 for i in (0, 3, 4))  # stored max_length 6: <= 5 new tokens
    assert all(w in WORDS for i in (0, 3, 4) for w in lines[i].split())
    told = [line for line in done.stderr.splitlines() if "truncated" in line]
    assert told == ["encdec: warning: 1 of 3 documents are longer than the encoder's 64 tokens and were truncated; "
                    "summaries cover only their beginning."], done.stderr
    assert "Warning:" not in done.stderr and "warnings.warn" not in done.stderr  # no raw Python warning


def test_cli_reads_stdin_and_flags_override_the_stored_config(model_dir):
    done = run_cli("--model", str(model_dir), "--max-length", "3", "--num-beams", "2",
                   "--no-repeat-ngram-size", "2", "--length-penalty", "2.0", "--min-length", "2",
                   "--batch-size", "1", "--dtype", "float32", "--device", "cpu",
                   stdin=document(7, 8, 9) + "\n" + document(20, 30) + "\n")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(len(line.split()) <= 2 for line in lines)


@pytest.mark.parametrize("args", [["--model", "/no/such/model"], ["--model", "./missing-folder"],
                                  ["--model", "/tmp"], ["--model", "MODEL", "--device", "nowhere"]])
def test_cli_bad_model_path_is_one_line_and_exit_2(args, model_dir):
    done = run_cli(*[str(model_dir) if a == "MODEL" else a for a in args], stdin="some text\n")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("encdec: error:") and len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == ""


def test_cli_bad_setting_is_a_clear_error(model_dir):
    done = run_cli("--model", str(model_dir), "--min-length", "30", "--max-length", "10", stdin="w5 w6\n")
    assert done.returncode == 2 and "min_length 30 > max_length 10" in done.stderr
    assert "Traceback" not in done.stderr


def test_blank_documents_get_empty_summaries_and_leave_others_alone(model_dir):
    summarizer = Summarizer.from_pretrained(model_dir, batch_size=4)
    good = [document(10, 11, 12), document(50, 60, 70, 80, 90), document(33)]
    expected = summarizer(good)
    got = summarizer([good[0], None, "", good[1], " \n\t", good[2]])
    assert got == [expected[0], "", "", expected[1], "", expected[2]]
    assert summarizer([None, ""]) == ["", ""]
    assert summarizer([]) == []
    with pytest.raises(TypeError, match="item 1 is a int"):
        summarizer(["w5", 7])


def test_batches_sorted_by_length_come_back_in_input_order(model_dir):
    summarizer = Summarizer.from_pretrained(model_dir, batch_size=8)
    docs = [document(*range(5, 5 + n)) for n in (3, 9, 1, 6, 12)]
    forward = summarizer(docs)
    backward = summarizer(docs[::-1])
    assert forward == backward[::-1]
    assert len(set(forward)) > 1


def test_long_documents_truncated_with_one_log_line(model_dir, caplog):
    summarizer = Summarizer.from_pretrained(model_dir)
    long_docs = [document(*[5 + i % 90 for i in range(n)]) for n in (80, 200)]
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("WARNING", logger="encdec"):
        warnings.simplefilter("always")
        out = summarizer(long_docs + [document(5, 6)], max_new_tokens=3)
    messages = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(messages) == 1 and messages[0].startswith("2 of 3 documents")
    assert not [w for w in caught if "truncated" in str(w.message)]  # a log line, not a Python warning
    assert len(out) == 3


def test_summarize_function_and_overrides(model_dir):
    out = encdec.summarize([document(9, 10), document(11)], model=model_dir, max_length=3, num_beams=2)
    assert len(out) == 2 and all(len(s.split()) <= 2 for s in out)
    with pytest.raises(ValueError, match="one summary per document"):
        encdec.summarize(["w5"], model=model_dir, num_beams=2, num_return_sequences=2)


def test_separate_encoder_and_decoder_tokenizers(model_dir, tmp_path):
    import shutil

    folder = tmp_path / "split"
    shutil.copytree(model_dir, folder)
    for side in ("encoder_tokenizer", "decoder_tokenizer"):
        (folder / side).mkdir()
        shutil.copy(folder / "vocab.txt", folder / side / "vocab.txt")
    (folder / "vocab.txt").unlink()
    summarizer = Summarizer.from_pretrained(folder)
    assert summarizer.encoder_tokenizer is not summarizer.decoder_tokenizer
    assert summarizer([document(10, 11, 12)]) == Summarizer.from_pretrained(model_dir)([document(10, 11, 12)])


def test_flags_and_stored_yaml_name_every_generation_setting():
    """cli.GENERATION_FLAGS, conf/generation/stored.yaml and GenerationConfig's fields are one list:
    a field added to GenerationConfig fails here until the CLI and the conf offer it, and each
    flag parses a value of the field's type."""
    from dataclasses import fields

    from conftest import CONF
    from omegaconf import OmegaConf

    from encdec.apps.cli import GENERATION_FLAGS, NOT_FLAGS, build_parser
    from encdec.generation.settings import GenerationConfig

    types = {f.name: str(f.type) for f in fields(GenerationConfig)}
    assert set(GENERATION_FLAGS) == set(types) - set(NOT_FLAGS) and set(NOT_FLAGS) <= set(types)
    stored = OmegaConf.to_container(OmegaConf.load(CONF / "generation" / "stored.yaml"))
    assert set(stored) == set(GENERATION_FLAGS) and all(v is None for v in stored.values())
    for name, value in {**vars(GenerationConfig()), "max_new_tokens": 3, "min_new_tokens": 2}.items():
        if name in GENERATION_FLAGS:
            text = str(value).lower()
            args = build_parser().parse_args(["summarize", "--model", "m", f"--{name.replace('_', '-')}", text])
            assert getattr(args, name) == value and type(value).__name__ in types[name], name
