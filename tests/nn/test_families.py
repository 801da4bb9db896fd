"""The further checkpoint families (bert-generation, XLM-R, CamemBERT, ELECTRA, DistilBERT) and mixed
pairs: the same packed training loss and generated tokens as transformers on tiny random models
with spread weights, warm start from single-model folders, family-specific parts. (Logits, loss and
folders both ways: tests/test_model_parity.py, which runs every pair.)"""

import pytest
import torch
from tiny_models import FAMILY_PAIRS, TINY_DISTILBERT, encdec_config, mid_sequence_token, padded_batch, reference_model

from encdec import EncoderDecoderConfig, EncoderDecoderModel
from encdec.compat.configs import DistilBertConfig

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=sorted(FAMILY_PAIRS))
def pair(request, tmp_path_factory):
    """(name, reference model, our model loaded from the reference's saved folder)."""
    ref = reference_model(request.param, std=0.1)
    folder = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(folder)
    return request.param, ref, EncoderDecoderModel.from_pretrained(folder)


def _forward(model, batch, **kwargs):
    with torch.no_grad():
        return model(**batch, **kwargs)


def test_packed_training_loss_matches_transformers(pair):
    """The training fast path (packed tokens: positions, token types and projections per token)."""
    name, ref, ours = pair
    batch = padded_batch(name)
    torch.testing.assert_close(_forward(ours, batch, return_logits=False).loss, _forward(ref, batch).loss,
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("setting", [
    dict(max_length=12),
    dict(num_beams=3, max_length=12, no_repeat_ngram_size=2, length_penalty=2.0, early_stopping=True),
])
def test_generate_matches_transformers(pair, setting):
    name, ref, ours = pair
    batch = padded_batch(name, batch=4)
    batch.pop("labels")
    eos = mid_sequence_token(ref, batch)
    with torch.no_grad():
        expected = ref.generate(**batch, eos_token_id=eos, **setting)
    got = ours.generate(**batch, eos_token_id=eos, **setting)
    assert torch.equal(got, expected), f"\n{expected}\n{got}"


def test_bert_generation_share_ties_parameters():
    model = EncoderDecoderModel(encdec_config("bertgenshare"))
    assert model.encoder.layers[1].mlp.fc_in.weight is model.decoder.layers[1].mlp.fc_in.weight
    assert model.encoder.embeddings.word.weight is model.decoder.embeddings.word.weight
    assert model.decoder.layers[0].cross_attn.q.weight is not None  # the decoder's own
    assert not hasattr(model.encoder, "pooler") and model.encoder.embeddings.token_type is None


def test_electra_projects_embeddings_and_narrows_its_head():
    model = EncoderDecoderModel(encdec_config("electra2electra"))
    assert model.encoder.embeddings.project.weight.shape == (32, 16)
    assert model.decoder.head.dense.weight.shape == (16, 32)
    assert model.decoder.output_embeddings().shape == (99, 16)


def test_distilbert_cannot_be_the_decoder():
    config = DistilBertConfig(**TINY_DISTILBERT)
    with pytest.raises(ValueError, match="distilbert cannot be the decoder.*decoder families: bert, roberta"):
        EncoderDecoderModel(EncoderDecoderConfig.from_encoder_decoder_configs(config, config))


def test_token_type_ids_for_a_family_without_them():
    model = EncoderDecoderModel(encdec_config("distilbert2bert"))
    batch = padded_batch("distilbert2bert")
    with pytest.raises(ValueError, match="distilbert has no token-type embeddings; drop them"):
        model(**batch, token_type_ids=torch.zeros_like(batch["input_ids"]))


@pytest.mark.parametrize("model_type, kwargs, decoder", [
    ("bert-generation", "TINY_BERT_GENERATION", True),
    ("xlm-roberta", "TINY_ROBERTA", True),
    ("electra", "TINY_ELECTRA", True),
    ("distilbert", "TINY_DISTILBERT", False),
])
def test_warm_start_from_single_model_folders_matches_transformers(model_type, kwargs, decoder, tmp_path):
    """Each family's base-model folder warm-starts the same weights as transformers'
    from_encoder_decoder_pretrained (all but the new cross-attention and LM head)."""
    import tiny_models
    from tiny_models import CONFIG_CLASSES, TINY_BERT

    config = getattr(transformers, CONFIG_CLASSES[model_type])(**getattr(tiny_models, kwargs))
    transformers.AutoModel.from_config(config).save_pretrained(tmp_path / "enc")
    dec = tmp_path / "enc"
    if not decoder:
        transformers.BertModel(transformers.BertConfig(**TINY_BERT)).save_pretrained(tmp_path / "dec")
        dec = tmp_path / "dec"
    ours = EncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path / "enc", dec)
    ours.save_pretrained(tmp_path / "ours")
    got = transformers.EncoderDecoderModel.from_pretrained(tmp_path / "ours").state_dict()
    expected = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(
        str(tmp_path / "enc"), str(dec)).state_dict()
    assert got.keys() == expected.keys()
    new = ("crossattention", "lm_head", "cls.", "generator_")
    compared = [k for k in expected if not any(n in k for n in new)]
    assert len(compared) > 20
    for key in compared:
        torch.testing.assert_close(got[key], expected[key], msg=key)


def test_distilbert_sinusoidal_positions_match_transformers():
    config = transformers.DistilBertConfig(**TINY_DISTILBERT, sinusoidal_pos_embds=True)
    expected = transformers.DistilBertModel(config).embeddings.position_embeddings.weight
    ours = EncoderDecoderModel(EncoderDecoderConfig.from_encoder_decoder_configs(
        DistilBertConfig(**TINY_DISTILBERT, sinusoidal_pos_embds=True), encdec_config("distilbert2bert").decoder,
    ))
    torch.testing.assert_close(ours.encoder.embeddings.position.weight, expected, atol=1e-6, rtol=0)
