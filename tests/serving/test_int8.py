"""dtype=int8 (encdec.serving.int8): every linear layer and the vocabulary projection run as torch's dynamic
int8 layers, in the Summarizer, `encdec.summarize`, the CLI and evaluate.py; opt-in and not exact.
The reference is built here straight from torch's quantisation calls; batch size 1 throughout, since
dynamic quantisation picks activation scales per call (a document's summary depends on its batch)."""

from __future__ import annotations

import pytest
import torch
from test_generation_settings import DOCS, evaluate, folder, reference  # noqa: F401  (fixture)
from tiny_models import summaries_one_by_one
from torch import nn

import encdec
from encdec import EncoderDecoderModel, Summarizer, load_tokenizer
from encdec.apps.cli import main as cli_main
from encdec.serving.int8 import quantize_int8


def torch_int8(path) -> EncoderDecoderModel:
    """The int8 model made directly with torch: quantize_dynamic on the linear layers, and the tied
    vocabulary projection as a dynamic int8 Linear with one symmetric scale."""
    model = EncoderDecoderModel.from_pretrained(path).eval()
    weight, bias = model.decoder.output_embeddings().detach().clone(), model.decoder.head.bias
    torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    head = torch.ao.nn.quantized.dynamic.Linear(weight.shape[1], weight.shape[0], bias_=bias is not None)
    head.set_weight_bias(torch.quantize_per_tensor(weight, float(weight.abs().max()) / 127, 0, torch.qint8),
                         None if bias is None else bias.detach())
    model.decoder.head.projection_override = head
    return model


@pytest.fixture(scope="module")
def expected(folder):  # noqa: F811
    tokenizer = load_tokenizer(folder)
    summaries = summaries_one_by_one(torch_int8(folder), tokenizer, tokenizer, DOCS)
    assert summaries != reference(folder)  # int8 changes some summaries of this model: the paths below can fail
    return summaries


def test_every_linear_layer_and_the_projection_are_int8(folder):  # noqa: F811
    fp32 = EncoderDecoderModel.from_pretrained(folder).eval()
    model = quantize_int8(EncoderDecoderModel.from_pretrained(folder))
    assert not [name for name, m in model.named_modules() if type(m) is nn.Linear]
    weight = fp32.decoder.output_embeddings().detach()
    projection = model.decoder.head.projection_override
    scale = float(weight.abs().max()) / 127
    assert (projection.weight().dequantize() - weight).abs().max() <= scale / 2 + 1e-7  # rounded to the grid
    ids = torch.tensor([[5, 9, 13, 40, 41]])
    decoder_ids = torch.tensor([[2, 7, 8, 9]])
    with torch.no_grad():
        got, ref = model(ids, decoder_input_ids=decoder_ids).logits, fp32(ids, decoder_input_ids=decoder_ids).logits
    error = float((got - ref).abs().max() / ref.abs().max())
    assert 0 < error < 0.05, error  # quantised, and still the same model
    with pytest.raises(ValueError, match="int8 serving copy"):
        model.save_pretrained(folder / "int8")


def test_python_and_cli_int8_give_torchs_int8_summaries(folder, expected, capsys, monkeypatch):  # noqa: F811
    assert Summarizer.from_pretrained(folder, dtype="int8", batch_size=1)(DOCS) == expected
    assert encdec.summarize(DOCS, model=folder, dtype="int8", batch_size=1) == expected
    (folder / "docs.txt").write_text("\n".join(DOCS) + "\n")
    assert cli_main(["summarize", "--model", str(folder), "--dtype", "int8", "--batch-size", "1",
                     str(folder / "docs.txt")]) == 0
    assert capsys.readouterr().out.splitlines() == expected


def test_evaluate_int8(folder, expected, tmp_path):  # noqa: F811
    assert evaluate(folder, tmp_path / "int8", "dtype=int8", "batch_size=1") == expected
    with pytest.raises(Exception, match=r"dtype=int9: use float32, bfloat16, float16, or int8"):
        evaluate(folder, tmp_path / "bad", "dtype=int9")


def test_int8_on_a_pytorch_without_torch_ao_is_one_line(folder, monkeypatch, capsys, tmp_path):  # noqa: F811
    """torch.ao dynamic quantisation is deprecated: where PyTorch has removed it, dtype=int8 is one
    error line naming what still works, not an ImportError from deep inside."""
    monkeypatch.delattr(torch.ao.quantization, "quantize_dynamic")
    with pytest.raises(ValueError, match=r"dtype=int8 needs torch.ao dynamic quantisation.*float32 \(exact\)"):
        Summarizer.from_pretrained(folder, dtype="int8")
    (tmp_path / "docs.txt").write_text(DOCS[0] + "\n")
    assert cli_main(["summarize", "--model", str(folder), "--dtype", "int8", str(tmp_path / "docs.txt")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("encdec: error: dtype=int8 needs torch.ao dynamic quantisation")
