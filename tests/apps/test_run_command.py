"""`encdec run --task summarization --model M --device D`: transformers' old `transformers-cli run`
with the command name switched. Documents are read one per line from stdin and the results printed
as that command printed them (one Python list of result dicts); csv and json files with --column
and --output. Summaries are checked against transformers' EncoderDecoderModel on the same folder."""

import ast
import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from tiny_models import write_word_model

from encdec.apps.cli import main

transformers = pytest.importorskip("transformers")

DOCUMENTS = ["w10 w11 w12 w13 w14", "w50 w60 w70", "w33 w7 w8 w9 w21 w22 w23 w40"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_word_model(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def expected(folder) -> list[dict]:
    """transformers' summaries of DOCUMENTS with the folder's stored generation config, decoded as its
    pipeline decoded them."""
    model = transformers.EncoderDecoderModel.from_pretrained(folder).eval()
    tokenizer = transformers.BertTokenizer.from_pretrained(folder)
    out = []
    for document in DOCUMENTS:
        enc = tokenizer(document, return_tensors="pt")
        ids = model.generate(enc.input_ids, attention_mask=enc.attention_mask)[0]
        text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        out.append({"summary_text": text})
    assert len({d["summary_text"] for d in out}) > 1
    return out


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "encdec.apps.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.parametrize("device", ["-1", "cpu"])
def test_stdin_documents_give_transformers_summaries(folder, expected, device):
    done = run_cli("run", "--task", "summarization", "--model", str(folder), "--device", device,
                   stdin="".join(d + "\n" for d in DOCUMENTS))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1  # one printed list, as transformers-cli run printed it
    assert ast.literal_eval(done.stdout) == expected


def test_json_and_csv_files_with_a_column(folder, expected, tmp_path, capsys):
    (tmp_path / "in.json").write_text(json.dumps([{"id": i, "article": d} for i, d in enumerate(DOCUMENTS)]))
    assert main(["run", "--task", "summarization", "--model", str(folder), "--input", str(tmp_path / "in.json"),
                 "--column", "article", "--output", str(tmp_path / "out.json")]) == 0
    assert json.loads((tmp_path / "out.json").read_text()) == expected
    with open(tmp_path / "in.csv", "w", newline="") as f:
        csv.writer(f).writerows([["article"], *[[d] for d in DOCUMENTS]])
    assert main(["run", "--task", "summarization", "--model", str(folder), "--input", str(tmp_path / "in.csv"),
                 "--column", "article", "--output", str(tmp_path / "out.csv")]) == 0
    with open(tmp_path / "out.csv", newline="") as f:
        assert list(csv.DictReader(f)) == expected
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("extra, message", [
    (["--input", "IN_JSON", "--output", "OUT"], "needs --column"),
    (["--input", "IN_JSON", "--column", "text"], "pass both"),
    (["--input", "IN_JSON", "--column", "text", "--output", "EXISTS"], "already exists; pass --overwrite"),
    (["--input", "IN_JSON", "--column", "body", "--output", "OUT"], "record 0 has no column 'body'"),
    (["--input", "missing.csv", "--column", "text", "--output", "OUT"], "no such file"),
])
def test_bad_arguments_are_one_line_and_exit_2(folder, tmp_path, capsys, extra, message):
    (tmp_path / "in.json").write_text(json.dumps([{"text": "w5 w6"}]))
    (tmp_path / "exists.json").write_text("[]")
    names = {"IN_JSON": tmp_path / "in.json", "OUT": tmp_path / "out.json", "EXISTS": tmp_path / "exists.json"}
    args = [str(names.get(a, a)) for a in extra]
    assert main(["run", "--task", "summarization", "--model", str(folder), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("encdec: error:") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.json").exists()


def test_cuda_device_on_a_cpu_build_is_one_line(folder):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = run_cli("run", "--task", "summarization", "--model", str(folder), "--device", "0", stdin="w5 w6\n")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("encdec: error: device=0 (CUDA device cuda:0)") and done.stderr.count("\n") == 1
