"""Decoder-only LM families (Llama/SmolLM2, Qwen2, Qwen3, Gemma 2) in the one backbone: transformers'
single-model folders load under transformers' class names and give transformers' logits, hidden
states and generated tokens (tiny random models, padding inside the batch)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import LM_CLASSES, TINY_LMS, lm_batch, logits_token_by_token, reference_lm

import encdec


def close(a, b, mask=None):
    if mask is not None:
        keep = mask.bool()
        a, b = a[keep], b[keep]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(TINY_LMS))
def test_causal_lm_logits_equal_transformers(name, tmp_path):
    ref = reference_lm(name)
    ref.save_pretrained(tmp_path)
    ours = getattr(encdec, f"{LM_CLASSES[TINY_LMS[name][0]]}ForCausalLM").from_pretrained(tmp_path)
    ids, mask = lm_batch()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).logits
        got = ours(input_ids=ids, attention_mask=mask).logits
    close(got, expected, mask)
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        close(ours(input_ids=ids, attention_mask=mask, labels=labels).loss,
              ref(input_ids=ids, attention_mask=mask, labels=labels).loss)


@pytest.mark.parametrize("name", sorted(TINY_LMS))
def test_base_model_is_causal_and_equals_transformers(name, tmp_path):
    ref = reference_lm(name, head=False)
    ref.save_pretrained(tmp_path)
    ours = getattr(encdec, f"{LM_CLASSES[TINY_LMS[name][0]]}Model").from_pretrained(tmp_path)
    ids, mask = lm_batch()
    with torch.no_grad():
        close(ours(input_ids=ids, attention_mask=mask).last_hidden_state,
              ref(input_ids=ids, attention_mask=mask).last_hidden_state, mask)


@pytest.mark.parametrize("name", sorted(TINY_LMS))
def test_incremental_decoding_with_the_cache_equals_one_pass(name, tmp_path):
    ref = reference_lm(name)
    ref.save_pretrained(tmp_path)
    ours = getattr(encdec, f"{LM_CLASSES[TINY_LMS[name][0]]}ForCausalLM").from_pretrained(tmp_path)
    ids = lm_batch()[0][:1]
    with torch.no_grad():
        full = ours(input_ids=ids).logits
    close(logits_token_by_token(ours, ids, prompt=5), full)


@pytest.mark.parametrize("name", sorted(TINY_LMS))
def test_save_pretrained_round_trips_to_transformers(name, tmp_path):
    ref = reference_lm(name)
    ref.save_pretrained(tmp_path / "theirs")
    cls = getattr(encdec, f"{LM_CLASSES[TINY_LMS[name][0]]}ForCausalLM")
    cls.from_pretrained(tmp_path / "theirs").save_pretrained(tmp_path / "ours")
    import transformers

    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours", attn_implementation="eager").eval()
    ids, mask = lm_batch()
    with torch.no_grad():
        close(back(input_ids=ids, attention_mask=mask).logits, ref(input_ids=ids, attention_mask=mask).logits, mask)
