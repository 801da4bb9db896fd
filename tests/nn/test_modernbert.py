"""ModernBERT as an encoder in the one backbone: folders written by transformers' ModernBertModel and
ModernBertForMaskedLM load under `encdec.ModernBertModel` and give transformers' hidden states on the
real tokens (tiny random models, padding inside the batch, sequences longer than the local window,
global and local layers with different RoPE thetas). The reference runs eager attention, which is
exact; its SDPA path agrees with it to ~4e-6."""

from __future__ import annotations

import pytest
import torch
from tiny_models import TINY_MODERNBERTS, lm_batch, reference_modernbert, write_legacy_modernbert_config

import encdec


def close(a, b, mask):
    keep = mask.bool()  # transformers' pads are an implementation detail: real tokens only
    torch.testing.assert_close(a[keep], b[keep], atol=1e-4, rtol=1e-4)


def batch():
    """14 tokens (window: 2 either side), rows of 14, 11 and 5 real tokens."""
    ids, mask = lm_batch(length=14)
    mask[1, 11:] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("name", sorted(TINY_MODERNBERTS))
def test_hidden_states_equal_transformers(name, tmp_path):
    ref = reference_modernbert(name)
    ref.save_pretrained(tmp_path)
    ours = encdec.ModernBertModel.from_pretrained(tmp_path)
    assert ours.config.layer_kinds == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    ids, mask = batch()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        close(ours(input_ids=ids, attention_mask=mask).last_hidden_state, expected, mask)  # explicit path
        close(ours.backbone(ids, mask), expected, mask)  # the SDPA path an encoder-decoder runs


def test_each_flag_changes_the_output(tmp_path):
    """The parity test above would catch each ModernBERT rule left out: the window (local_attention // 2
    either side, not local_attention // 2 + 1), the local layers, the per-kind RoPE theta, the norm bias."""
    reference_modernbert("biased").save_pretrained(tmp_path)
    ids, mask = batch()
    with torch.no_grad():
        exact = encdec.ModernBertModel.from_pretrained(tmp_path).backbone(ids, mask)
    one_theta = {kind: {"rope_type": "default", "rope_theta": 500.0}
                 for kind in ("full_attention", "sliding_attention")}
    for change in (dict(local_attention=6), dict(layer_types=["full_attention"] * 4),
                   dict(rope_parameters=one_theta), dict(norm_bias=False)):
        with torch.no_grad():
            other = encdec.ModernBertModel.from_pretrained(tmp_path, **change).backbone(ids, mask)
        assert (other - exact)[mask.bool()].abs().max() > 1e-2, change


def test_older_hub_configs_load_as_transformers_reads_them(tmp_path):
    """Hub folders (transformers 4) name global/local RoPE thetas and `global_attn_every_n_layers`
    instead of `rope_parameters` by layer kind and `layer_types`."""
    import transformers

    reference_modernbert("published", global_attn_every_n_layers=2).save_pretrained(tmp_path)
    write_legacy_modernbert_config(tmp_path)
    ref = transformers.ModernBertModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ours = encdec.ModernBertModel.from_pretrained(tmp_path)
    assert ours.config.layer_kinds == ref.config.layer_types == ["full_attention", "sliding_attention"] * 2
    assert ours.config.rope_for("sliding_attention")["rope_theta"] == 40.0
    ids, mask = batch()
    with torch.no_grad():
        close(ours.backbone(ids, mask), ref(input_ids=ids, attention_mask=mask).last_hidden_state, mask)


def test_masked_lm_folders_load_as_the_encoder(tmp_path):
    """A ModernBertForMaskedLM folder (the published checkpoints' class) keeps the encoder under `model.`;
    its prediction head is reported unused, as transformers' ModernBertModel reports it."""
    ref = reference_modernbert("biased", masked_lm=True)
    ref.save_pretrained(tmp_path)
    ours, info = encdec.ModernBertModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == []
    assert {key.split(".")[0] for key in info["unexpected_keys"]} == {"head", "decoder"}
    ids, mask = batch()
    with torch.no_grad():
        close(ours.backbone(ids, mask), ref.model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)


def test_save_pretrained_round_trips_to_transformers(tmp_path):
    import transformers

    ref = reference_modernbert("biased")
    ref.save_pretrained(tmp_path / "theirs")
    encdec.ModernBertModel.from_pretrained(tmp_path / "theirs").save_pretrained(tmp_path / "ours")
    back, info = transformers.ModernBertModel.from_pretrained(tmp_path / "ours", attn_implementation="eager",
                                                              output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids, mask = batch()
    with torch.no_grad():
        close(back.eval()(input_ids=ids, attention_mask=mask).last_hidden_state,
              ref(input_ids=ids, attention_mask=mask).last_hidden_state, mask)


def test_modernbert_is_not_a_decoder(tmp_path):
    reference_modernbert().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="modernbert cannot be the decoder"):
        encdec.EncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path, tmp_path)
