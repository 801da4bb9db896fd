"""Checkpoint layouts transformers saves and loads that encdec must load the same way: encoders saved
without their pooler (`add_pooling_layer=False`), and an encoder-decoder folder whose encoder config
was shared with the decoder (`EncoderDecoderConfig.from_encoder_decoder_configs(c, c)`)."""

import logging

import pytest
import torch
from tiny_models import CONFIG_CLASSES, TINY_BERT, TINY_ROBERTA, padded_batch, spread_weights

import encdec
from encdec import EncoderDecoderModel

transformers = pytest.importorskip("transformers")

# family -> (tiny config kwargs, transformers' base model, causal LM, encdec pair of padded_batch)
POOLER_FAMILIES = {
    "bert": (TINY_BERT, "BertModel", "BertLMHeadModel", "bert2bert"),
    "roberta": (TINY_ROBERTA, "RobertaModel", "RobertaForCausalLM", "roberta2roberta"),
    "xlm-roberta": (TINY_ROBERTA, "XLMRobertaModel", "XLMRobertaForCausalLM", "xlmr2xlmr"),
    "camembert": (TINY_ROBERTA, "CamembertModel", "CamembertForCausalLM", "camembert2camembert"),
}
IDS = {"bert": dict(decoder_start_token_id=2, pad_token_id=0, eos_token_id=3)}
POOLER_KEYS = {"pooler.dense.weight", "pooler.dense.bias"}


def config_of(family: str, **extra):
    kwargs, *_ = POOLER_FAMILIES[family]
    return getattr(transformers, CONFIG_CLASSES[family])(**{**kwargs, **extra})


def ids_of(family: str) -> dict:
    return IDS.get(family, dict(decoder_start_token_id=0, pad_token_id=1, eos_token_id=2))


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(params=sorted(POOLER_FAMILIES))
def pooler_less(request, tmp_path):
    """(family, a base-model folder transformers saved with add_pooling_layer=False)."""
    family = request.param
    torch.manual_seed(0)
    base = getattr(transformers, POOLER_FAMILIES[family][1])(config_of(family), add_pooling_layer=False)
    base.save_pretrained(tmp_path / "encoder")
    return family, tmp_path / "encoder"


def test_pooler_less_encoder_warm_starts_and_names_the_fresh_pooler(pooler_less, tmp_path, caplog):
    family, folder = pooler_less
    with caplog.at_level(logging.INFO, logger="encdec"):
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(folder, folder, **ids_of(family)).eval()
    fresh = [r.getMessage() for r in caplog.records if "pooler.dense.weight" in r.getMessage()]
    assert len(fresh) == 1 and "pooler.dense.bias" in fresh[0] and str(folder) in fresh[0]
    ref_encoder = getattr(transformers, POOLER_FAMILIES[family][1]).from_pretrained(folder).eval()
    batch = padded_batch(POOLER_FAMILIES[family][3])
    with torch.no_grad():
        expected = ref_encoder(batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        got = model.get_encoder()(batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # what we save now holds a pooler: transformers loads it with nothing missing, to the same logits
    model.save_pretrained(tmp_path / "ours")
    loaded, info = transformers.EncoderDecoderModel.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not any(info.values()), info
    torch.testing.assert_close(logits(model, batch), logits(loaded.eval(), batch), atol=1e-4, rtol=0)


def test_pooler_less_single_model_reports_what_transformers_reports(pooler_less):
    family, folder = pooler_less
    name = POOLER_FAMILIES[family][1]
    ref, ref_info = getattr(transformers, name).from_pretrained(folder, output_loading_info=True)
    ours, info = getattr(encdec, name).from_pretrained(folder, output_loading_info=True)
    assert set(info["missing_keys"]) == set(ref_info["missing_keys"]) == POOLER_KEYS
    batch = padded_batch(POOLER_FAMILIES[family][3])
    with torch.no_grad():
        expected = ref.eval()(batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        got = ours(batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_encoder_decoder_folder_without_encoder_pooler_loads_as_in_transformers(pooler_less, tmp_path, caplog):
    """transformers' EncoderDecoderModel(encoder=<pooler-less base model>, decoder=...) saved: it
    loads back with the pooler fresh and listed as missing; encdec does the same, same logits."""
    family, _ = pooler_less
    _, base, causal_lm, pair = POOLER_FAMILIES[family]
    torch.manual_seed(0)
    encoder = getattr(transformers, base)(config_of(family), add_pooling_layer=False)
    decoder = getattr(transformers, causal_lm)(config_of(family, is_decoder=True, add_cross_attention=True))
    ref = transformers.EncoderDecoderModel(encoder=encoder, decoder=decoder)
    for key, value in ids_of(family).items():
        setattr(ref.config, key, value)
    spread_weights(ref)
    ref.save_pretrained(tmp_path / "ref")
    ref, ref_info = transformers.EncoderDecoderModel.from_pretrained(tmp_path / "ref", output_loading_info=True)
    with caplog.at_level(logging.INFO, logger="encdec"):
        ours, info = EncoderDecoderModel.from_pretrained(tmp_path / "ref", output_loading_info=True)
    assert set(info["missing_keys"]) == set(ref_info["missing_keys"]) == {f"encoder.{k}" for k in POOLER_KEYS}
    assert any("encoder.pooler.dense.weight" in r.getMessage() and "newly initialised" in r.getMessage()
               for r in caplog.records)
    batch = padded_batch(pair)
    torch.testing.assert_close(logits(ours, batch), logits(ref.eval(), batch), atol=1e-4, rtol=0)


@pytest.fixture(params=["bert", "roberta"])
def shared_config_folder(request, tmp_path):
    """transformers' from_encoder_decoder_configs(c, c) on ONE config object: the saved encoder
    config reads is_decoder=True and add_cross_attention=True too."""
    family = request.param
    config = config_of(family)
    composed = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(config, config)
    for key, value in ids_of(family).items():
        setattr(composed, key, value)
    torch.manual_seed(0)
    ref = spread_weights(transformers.EncoderDecoderModel(config=composed))
    ref.save_pretrained(tmp_path / "shared")
    return family, tmp_path / "shared"


def test_shared_config_folder_loads_as_transformers_reads_it(shared_config_folder, tmp_path):
    family, folder = shared_config_folder
    ref = transformers.EncoderDecoderModel.from_pretrained(folder).eval()
    assert ref.config.encoder.is_decoder and ref.config.encoder.add_cross_attention  # the layout under test
    ours = EncoderDecoderModel.from_pretrained(folder)
    batch = padded_batch(POOLER_FAMILIES[family][3])
    torch.testing.assert_close(logits(ours, batch), logits(ref, batch), atol=1e-4, rtol=0)
    # transformers honours the encoder's flags: its encoder is causal, so the first position's state
    # does not depend on the tokens after it; ours too
    ids = batch["input_ids"][:1]
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 90 + 3
    with torch.no_grad():
        first, second = (ours.encode(x)[0, :-1] for x in (ids, changed))
    torch.testing.assert_close(first, second, atol=1e-6, rtol=0)
    generated = ours.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_length=8, num_beams=2)
    expected = ref.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_length=8, num_beams=2)
    assert generated.tolist() == expected.tolist()


def test_shared_config_folder_saves_back_as_it_came(shared_config_folder, tmp_path):
    family, folder = shared_config_folder
    ours = EncoderDecoderModel.from_pretrained(folder)
    assert not any(p.requires_grad for p in ours.encoder.layers[0].cross_attn.parameters())  # never run: frozen
    ours.save_pretrained(tmp_path / "again")
    loaded, info = transformers.EncoderDecoderModel.from_pretrained(tmp_path / "again", output_loading_info=True)
    assert not any(info.values()), info
    batch = padded_batch(POOLER_FAMILIES[family][3])
    torch.testing.assert_close(logits(loaded.eval(), batch), logits(ours, batch), atol=1e-4, rtol=0)
