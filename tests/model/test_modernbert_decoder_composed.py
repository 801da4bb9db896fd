"""A ModernBERT encoder in front of a ModernBERT decoder (Ettin's pair): cross-attention added each way the
family takes (gated, random, copy, merged), training on the packed fast path (merged: padded), greedy and
beam search past the local window (token for token transformers' own while the gates are closed), exact
save/load; and the decoder as a bidirectional encoder."""

from __future__ import annotations

import pytest
import torch
from tiny_models import (
    check_closed_gates_equal_lm,
    check_trains_generates_round_trips,
    lm_batch,
    reference_modernbert,
    reference_modernbert_decoder,
)

import encdec

KINDS = ("gated", "random", "copy", "merged")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """transformers' tiny ModernBertForMaskedLM and ModernBertDecoderForCausalLM folders."""
    root = tmp_path_factory.mktemp("ettin")
    reference_modernbert("biased", masked_lm=True).save_pretrained(root / "encoder")
    reference_modernbert_decoder("published").save_pretrained(root / "decoder")
    return root


def batch(seed: int = 3) -> dict[str, torch.Tensor]:
    """14-token sources and 6-token labels (both longer than the local window), padding inside both."""
    ids, mask = lm_batch(length=14, seed=seed)
    labels, label_mask = lm_batch(length=6, seed=seed + 1)
    return dict(input_ids=ids, attention_mask=mask, labels=labels.masked_fill(label_mask == 0, -100))


def compose(folders, kind, encoder="encoder"):
    return encdec.EncoderDecoderModel.from_encoder_decoder_pretrained(folders / encoder, folders / "decoder",
                                                                      cross_attention_init=kind)


def test_gated_decoder_is_the_pretrained_lm_at_step_0(folders):
    model = encdec.EncoderDecoderModel.from_encoder_decoder_pretrained(folders / "encoder", folders / "decoder")
    assert model.config.cross_attention_init == "gated"  # the family's default, as for the other LMs
    check_closed_gates_equal_lm(model, reference_modernbert_decoder("published"), source_length=14, target_length=8)


@pytest.mark.parametrize("beams", [1, 3])
def test_closed_gates_generate_what_transformers_generates(folders, beams):
    """With its gates at 0 the composed decoder is the LM: greedy and beam ids from the start token
    equal transformers' ModernBertDecoderForCausalLM.generate, 12 tokens (past the window of 2)."""
    model = compose(folders, "gated").eval()
    ref = reference_modernbert_decoder("published")
    src, src_mask = lm_batch(length=14, seed=6)
    start = model.config.decoder_start_token_id
    settings = dict(max_new_tokens=12, num_beams=beams, do_sample=False, eos_token_id=None)
    ours = model.generate(src, attention_mask=src_mask, speculative=False, **settings)
    prompt = torch.full((src.shape[0], 1), start)
    theirs = ref.generate(prompt, attention_mask=torch.ones_like(prompt), pad_token_id=0, **settings)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_trains_generates_and_round_trips(folders, kind, tmp_path):
    model = compose(folders, kind)
    assert model.config.cross_attention_init == kind
    # local layers run packed (in blocks of the window); merged cross-attention trains padded
    assert model.config.decoder.packable == (kind != "merged")
    if kind == "gated":  # open the gates, or the source would not matter
        with torch.no_grad():
            for layer in model.decoder.layers:
                layer.cross_attn_gate.fill_(0.5)
    check_trains_generates_round_trips(model, batch(), tmp_path, train_steps=4, new_tokens=6)


@pytest.mark.parametrize("kind", ["copy", "merged"])
def test_greedy_generation_follows_the_logits(folders, kind):
    """Greedy ids equal the argmax of one teacher-forced pass over them: the cache, the moving local
    window and the cross-attention agree step by step."""
    model = compose(folders, kind).eval()
    src, src_mask = lm_batch(length=14, seed=8)
    ids = model.generate(src, attention_mask=src_mask, max_new_tokens=8, speculative=False, eos_token_id=None)
    with torch.no_grad():
        logits = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=ids[:, :-1]).logits
    assert torch.equal(logits.argmax(-1), ids[:, 1:])


def test_copy_starts_cross_attention_from_self_attention(folders):
    """Layer 0 reads its normed embeddings without an attention norm: its cross-attention norm starts
    as a plain LayerNorm (ones), the other layers' as copies of their attention norms."""
    layers = compose(folders, "copy").decoder.layers
    own, cross = layers[1].self_attn, layers[1].cross_attn
    q_size = own.heads * own.head_dim
    assert torch.equal(cross.q.weight, own.qkv.weight[:q_size])
    assert torch.equal(cross.kv.weight, own.qkv.weight[q_size:])
    assert torch.equal(layers[1].cross_attn_norm.weight, layers[1].self_attn_norm.weight)
    assert torch.equal(layers[0].cross_attn_norm.weight, torch.ones(32))


def bidirectional_masks(length: int, window: int) -> dict[str, torch.Tensor]:
    """transformers' additive masks by layer kind for one unpadded row: global layers see every token,
    local ones the tokens within `window` either side (ModernBERT's rule)."""
    far = (torch.arange(length)[:, None] - torch.arange(length)[None, :]).abs() > window
    local = torch.zeros(length, length).masked_fill(far, torch.finfo(torch.float32).min)
    return {"full_attention": torch.zeros(1, 1, length, length), "sliding_attention": local[None, None]}


def test_the_decoder_is_a_bidirectional_encoder(folders):
    """As the encoder (T5Gemma's recipe) the LM sees the whole source: its global layers every token, its
    local layers `local_attention // 2` tokens either side, as the ModernBERT encoder of the same window.
    Reference: transformers' base model on each row's real tokens with those masks (ours runs the padded
    batch), and unlike its causal output."""
    model = compose(folders, "copy", encoder="decoder")
    assert model.config.encoder.use_bidirectional_attention and not model.config.encoder.causal
    ref = reference_modernbert_decoder("published", head=False)
    ids, mask = lm_batch(length=14, seed=9)
    with torch.no_grad():
        ours = model.encode(ids, mask)
        for row, length in enumerate(mask.sum(1).tolist()):
            masks = bidirectional_masks(length, model.config.encoder.window)
            theirs = ref(input_ids=ids[row:row + 1, :length], attention_mask=masks).last_hidden_state[0]
            torch.testing.assert_close(ours[row, :length], theirs, atol=1e-4, rtol=1e-4)
            causal = ref(input_ids=ids[row:row + 1, :length]).last_hidden_state[0]
            assert not torch.allclose(ours[row, :length], causal, atol=1e-2)
