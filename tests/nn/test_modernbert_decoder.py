"""ModernBERT's decoder twin (Ettin decoders) in the one backbone: folders written by transformers'
ModernBertDecoderForCausalLM and ModernBertDecoderModel load under the same names and give transformers'
logits, loss and hidden states on the real tokens (tiny random models, padding inside the batch, sequences
longer than the causal local window, global and local layers with different RoPE thetas), step by step
with the KV cache too; the folders we save load back in transformers."""

from __future__ import annotations

import pytest
import torch
from tiny_models import (
    TINY_MODERNBERT_DECODERS,
    lm_batch,
    logits_token_by_token,
    reference_modernbert_decoder,
    write_legacy_modernbert_config,
)

import encdec


def close(a, b, mask=None):
    if mask is not None:
        keep = mask.bool()  # transformers' pads are an implementation detail: real tokens only
        a, b = a[keep], b[keep]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def batch():
    """14 tokens (local layers see the 2 newest keys), rows of 14, 11 and 5 real tokens."""
    ids, mask = lm_batch(length=14)
    mask[1, 11:] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """transformers' tiny ModernBertDecoderForCausalLM folder of each kind."""
    root = tmp_path_factory.mktemp("modernbert_decoder")
    for name in TINY_MODERNBERT_DECODERS:
        reference_modernbert_decoder(name).save_pretrained(root / name)
    return root


@pytest.mark.parametrize("name", sorted(TINY_MODERNBERT_DECODERS))
def test_causal_lm_logits_and_loss_equal_transformers(folders, name):
    ref = reference_modernbert_decoder(name)
    ours, info = encdec.ModernBertDecoderForCausalLM.from_pretrained(folders / name, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert ours.config.layer_kinds == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    ids, mask = batch()
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, labels=labels)
        got = ours(input_ids=ids, attention_mask=mask, labels=labels)
        close(got.logits, expected.logits, mask)  # the explicit path
        close(got.loss, expected.loss)
        backbone = ours.backbone  # the SDPA path an encoder-decoder runs
        close(backbone.logits(backbone(ids, mask)), expected.logits, mask)


@pytest.mark.parametrize("name", sorted(TINY_MODERNBERT_DECODERS))
def test_base_model_is_causal_and_equals_transformers(name, tmp_path):
    ref = reference_modernbert_decoder(name, head=False)
    ref.save_pretrained(tmp_path)
    ours = encdec.ModernBertDecoderModel.from_pretrained(tmp_path)
    assert ours.config.causal
    ids, mask = batch()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        close(ours(input_ids=ids, attention_mask=mask).last_hidden_state, expected, mask)
        close(ours.backbone(ids, mask), expected, mask)


@pytest.mark.parametrize("name", sorted(TINY_MODERNBERT_DECODERS))
def test_incremental_decoding_with_the_cache_equals_one_pass(folders, name):
    """A 3-token prompt, then one token at a time up to 14: local layers drop keys as the window moves."""
    ours = encdec.ModernBertDecoderForCausalLM.from_pretrained(folders / name)
    ref = reference_modernbert_decoder(name)
    ids = batch()[0][:1]
    with torch.no_grad():
        full = ref(input_ids=ids).logits
    close(logits_token_by_token(ours, ids, prompt=3), full)


@pytest.mark.parametrize("name", sorted(TINY_MODERNBERT_DECODERS))
def test_save_pretrained_round_trips_to_transformers(folders, name, tmp_path):
    import transformers

    encdec.ModernBertDecoderForCausalLM.from_pretrained(folders / name).save_pretrained(tmp_path / "lm")
    encdec.ModernBertDecoderModel.from_pretrained(folders / name).save_pretrained(tmp_path / "base")
    ref = reference_modernbert_decoder(name)
    ids, mask = batch()
    for folder, cls in (("lm", transformers.ModernBertDecoderForCausalLM),
                        ("base", transformers.ModernBertDecoderModel)):
        back, info = cls.from_pretrained(tmp_path / folder, attn_implementation="eager", output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], folder
        with torch.no_grad():
            got = back.eval()(input_ids=ids, attention_mask=mask)
            if folder == "lm":
                close(got.logits, ref(input_ids=ids, attention_mask=mask).logits, mask)
            else:
                close(got.last_hidden_state, ref.model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)


def test_each_rule_changes_the_output(folders):
    """The parity tests above would catch each rule left out: the causal window (the `local_attention // 2`
    newest keys, not one more), the local layers, the local RoPE theta, the norm bias, the head's activation."""
    ids, mask = batch()
    with torch.no_grad():
        exact = encdec.ModernBertDecoderForCausalLM.from_pretrained(folders / "biased")(ids, mask).logits
    one_theta = {kind: {"rope_type": "default", "rope_theta": 500.0}
                 for kind in ("full_attention", "sliding_attention")}
    for change in (dict(local_attention=6), dict(layer_types=["full_attention"] * 4),
                   dict(rope_parameters=one_theta), dict(norm_bias=False), dict(head_activation="gelu")):
        with torch.no_grad():
            other = encdec.ModernBertDecoderForCausalLM.from_pretrained(folders / "biased", **change)(ids, mask).logits
        assert (other - exact)[mask.bool()].abs().max() > 1e-2, change


def test_older_hub_configs_load_as_transformers_reads_them(tmp_path):
    """Hub folders written by transformers 4 (Ettin's) name global/local RoPE thetas and
    `global_attn_every_n_layers` instead of `rope_parameters` by layer kind and `layer_types`."""
    import transformers

    reference_modernbert_decoder("published", global_attn_every_n_layers=2).save_pretrained(tmp_path)
    write_legacy_modernbert_config(tmp_path, "sliding_window")
    ref = transformers.ModernBertDecoderForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ours = encdec.ModernBertDecoderForCausalLM.from_pretrained(tmp_path)
    assert ours.config.layer_kinds == ref.config.layer_types == ["full_attention", "sliding_attention"] * 2
    assert ours.config.rope_for("sliding_attention")["rope_theta"] == 40.0
    ids, mask = batch()
    with torch.no_grad():
        close(ours(ids, mask).logits, ref(input_ids=ids, attention_mask=mask).logits, mask)
