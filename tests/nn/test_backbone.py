"""The backbone's extra inputs (explicit position ids, an explicit self-attention mask) and the
loading of state dicts saved before the one-backbone refactor."""

import pytest
import torch
from tiny_models import encdec_config, padded_batch, reference_model

from encdec import EncoderDecoderModel
from encdec.nn.masks import causal_mask, padding_mask

transformers = pytest.importorskip("transformers")


def _decoder_logits(model, batch, **kwargs):
    memory = model.memory(model.encode(batch["input_ids"], batch["attention_mask"]))
    with torch.no_grad():
        hidden = model.decoder(
            batch["decoder_input_ids"], batch.get("decoder_attention_mask"),
            memory_kv=model.decoder.cross_kv(memory), memory_mask=padding_mask(batch["attention_mask"]), **kwargs,
        )
        return model.decoder.logits(hidden)


@pytest.mark.parametrize("name", ["bert2bert", "roberta2roberta", "bert2gpt2"])
def test_position_ids_override_the_family_rule_as_in_transformers(name, tmp_path):
    ref = reference_model(name)
    ref.save_pretrained(tmp_path)
    ours = EncoderDecoderModel.from_pretrained(tmp_path)
    batch = padded_batch(name)
    batch["decoder_input_ids"] = batch.pop("labels").clamp(min=3)
    positions = torch.arange(batch["decoder_input_ids"].shape[1])[None].repeat(3, 1) + torch.tensor([[5], [9], [11]])
    with torch.no_grad():
        expected = ref(**batch, decoder_position_ids=positions).logits
    torch.testing.assert_close(_decoder_logits(ours, batch, position_ids=positions), expected, atol=1e-4, rtol=0)
    assert not torch.allclose(_decoder_logits(ours, batch), expected, atol=1e-3)


def test_self_mask_replaces_the_built_mask():
    model = EncoderDecoderModel(encdec_config("bert2bert")).eval()
    batch = padded_batch("bert2bert")
    ids = batch.pop("labels").clamp(min=3)
    hidden_first = torch.ones_like(ids)
    hidden_first[:, 0] = 0  # no query may see the first token
    mask = causal_mask(hidden_first, ids.shape[1], ids.shape[1], ids.device)  # (B, 1, T, T)
    expected = _decoder_logits(model, dict(batch, decoder_input_ids=ids, decoder_attention_mask=hidden_first))
    got = _decoder_logits(model, dict(batch, decoder_input_ids=ids), self_mask=mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(got, _decoder_logits(model, dict(batch, decoder_input_ids=ids)), atol=1e-3)


@pytest.mark.parametrize("name, renames", [
    ("bert2bert", {"decoder.": "decoder.stack."}),  # BertDecoder kept its layers under .stack
    ("bert2gpt2", {"decoder.embeddings.word.": "decoder.wte.", "decoder.embeddings.position.": "decoder.wpe."}),
])
def test_state_dicts_of_earlier_versions_load(name, renames):
    """Lightning .ckpt files hold `model.`-prefixed state dicts in the old names."""
    source = EncoderDecoderModel(encdec_config(name))
    old = {}
    for key, value in source.state_dict().items():
        for new, was in renames.items():
            if key.startswith(new) and not key.startswith("decoder.head."):
                key = was + key[len(new):]
                break
        old["model." + key] = value
    assert old.keys() != {"model." + k for k in source.state_dict()}
    wrapper = torch.nn.Module()
    wrapper.model = EncoderDecoderModel(encdec_config(name))
    wrapper.load_state_dict(old)  # strict: every key found
    for key, value in source.state_dict().items():
        assert torch.equal(wrapper.model.state_dict()[key], value), key
