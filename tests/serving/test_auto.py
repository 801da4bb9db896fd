"""transformers' Auto classes with the import switched: each loads what its name means in
transformers (an encoder-decoder folder, any single model as its base model, a decoder LM), with
the same outputs as transformers' class on the same folder; a folder of the wrong kind is one line
naming the class to use instead."""

import pytest
import torch
from tiny_models import TINY_BERT, TINY_GPT2, padded_batch, reference_model, spread_weights

import encdec
from encdec.base.errors import UsageError

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """transformers-saved folders: an encoder-decoder, a BERT encoder, a BERT decoder with
    cross-attention, a GPT-2 LM and a DistilBERT encoder."""
    root = tmp_path_factory.mktemp("auto")
    torch.manual_seed(0)
    spread_weights(reference_model("bert2bert")).save_pretrained(root / "seq2seq")
    spread_weights(transformers.BertModel(transformers.BertConfig(**TINY_BERT))).save_pretrained(root / "bert")
    decoder_config = transformers.BertConfig(**TINY_BERT, is_decoder=True, add_cross_attention=True)
    spread_weights(transformers.BertLMHeadModel(decoder_config)).save_pretrained(root / "bert-decoder")
    spread_weights(transformers.GPT2LMHeadModel(transformers.GPT2Config(**TINY_GPT2))).save_pretrained(root / "gpt2")
    distil = transformers.DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37)
    transformers.DistilBertModel(distil).save_pretrained(root / "distilbert")
    return root


def outputs(model, batch: dict, lm: bool) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out.logits if lm else out.last_hidden_state


def test_seq2seq_folder_generates_as_transformers(folders):
    ours = encdec.AutoModelForSeq2SeqLM.from_pretrained(folders / "seq2seq")
    ref = transformers.AutoModelForSeq2SeqLM.from_pretrained(folders / "seq2seq").eval()
    assert type(ours).__name__ == type(ref).__name__ == "EncoderDecoderModel"
    batch = padded_batch("bert2bert")
    inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_length=9)
    assert ours.generate(**inputs, num_beams=2).tolist() == ref.generate(**inputs, num_beams=2).tolist()
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, ref(**batch).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("auto, folder", [
    ("AutoModel", "bert"), ("AutoModel", "bert-decoder"), ("AutoModel", "distilbert"),
    ("AutoModelForCausalLM", "bert-decoder"), ("AutoModelForCausalLM", "gpt2"),
])
def test_single_model_folders_load_as_in_transformers(folders, auto, folder):
    """A decoder folder under AutoModel is its base model, causal as in transformers; the same
    class name, the same outputs."""
    ref = getattr(transformers, auto).from_pretrained(folders / folder).eval()
    ours = getattr(encdec, auto).from_pretrained(folders / folder)
    assert type(ours).__name__ == type(ref).__name__
    batch = padded_batch("bert2bert")
    lm = auto == "AutoModelForCausalLM"
    torch.testing.assert_close(outputs(ours, batch, lm), outputs(ref, batch, lm), atol=1e-4, rtol=0)


def test_from_config_builds_what_the_name_means():
    config = encdec.BertConfig(**TINY_BERT)
    assert type(encdec.AutoModel.from_config(config)).__name__ == "BertModel"
    assert type(encdec.AutoModelForCausalLM.from_config(config)).__name__ == "BertLMHeadModel"
    seq2seq = encdec.EncoderDecoderConfig.from_encoder_decoder_configs(config, config)
    assert isinstance(encdec.AutoModelForSeq2SeqLM.from_config(seq2seq), encdec.EncoderDecoderModel)


@pytest.mark.parametrize("auto, folder, names", [
    ("AutoModelForCausalLM", "seq2seq", ["AutoModelForSeq2SeqLM", "EncoderDecoderModel"]),
    ("AutoModel", "seq2seq", ["AutoModelForSeq2SeqLM", "EncoderDecoderModel"]),
    ("AutoModelForSeq2SeqLM", "bert", ["BertModel (AutoModel)", "BertLMHeadModel (AutoModelForCausalLM)",
                                       "from_encoder_decoder_pretrained"]),
    ("AutoModelForSeq2SeqLM", "gpt2", ["GPT2LMHeadModel (AutoModelForCausalLM)"]),
    ("AutoModelForCausalLM", "distilbert", ["has no causal LM", "AutoModel"]),
    ("AutoModel", "gpt2", ["has no base model", "AutoModelForCausalLM"]),
])
def test_a_folder_of_the_wrong_kind_is_one_line_naming_the_class_to_use(folders, auto, folder, names):
    with pytest.raises(UsageError) as caught:
        getattr(encdec, auto).from_pretrained(folders / folder)
    message = str(caught.value)
    assert "\n" not in message and str(folders / folder) in message
    assert all(name in message for name in names), message


def test_unsupported_model_type_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bart"}')
    with pytest.raises(UsageError, match="'bart' model, which encdec does not load"):
        encdec.AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
