"""The documentation's pipeline and `encdec run` on `device=0` (cuda:0), against transformers'
EncoderDecoderModel generating on the same GPU from the same folder; skipped without CUDA."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # tiny_models

from tiny_models import write_word_model  # noqa: E402

import encdec  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DOCUMENTS = ["w10 w11 w12 w13 w14", "w50 w60 w70", "w33 w7 w8 w9 w21 w22 w23 w40"]


def transformers_summaries(folder: Path, **settings) -> list[dict]:
    transformers = pytest.importorskip("transformers")
    model = transformers.EncoderDecoderModel.from_pretrained(folder).eval().cuda()
    tokenizer = transformers.BertTokenizer.from_pretrained(folder)
    out = []
    for document in DOCUMENTS:
        enc = tokenizer(document, return_tensors="pt").to("cuda")
        ids = model.generate(enc.input_ids, attention_mask=enc.attention_mask, **settings)[0]
        text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        out.append({"summary_text": text})
    return out


def test_pipeline_on_device_0_equals_transformers(tmp_path):
    folder = write_word_model(tmp_path / "model")
    summarizer = encdec.pipeline("summarization", model=str(folder), device=0)
    assert summarizer.device == torch.device("cuda", 0)
    settings = dict(max_length=9, min_length=3, num_beams=2, do_sample=False)
    assert summarizer(DOCUMENTS, **settings) == transformers_summaries(folder, **settings)


def test_run_command_on_device_0(tmp_path):
    folder = write_word_model(tmp_path / "model")
    done = subprocess.run([sys.executable, "-m", "encdec.apps.cli", "run", "--task", "summarization", "--model",
                           str(folder), "--device", "0"], input="".join(d + "\n" for d in DOCUMENTS),
                          capture_output=True, text=True, timeout=240, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    assert ast.literal_eval(done.stdout) == transformers_summaries(folder)
