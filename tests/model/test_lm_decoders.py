"""Decoder-only LMs as encoder-decoder halves: cross-attention added four ways (gated, random, copy,
merged), LMs as bidirectional encoders, exact save/load, and the training fast path equal to the
plain one, on tiny random Llama / Qwen2 / Qwen3 / Gemma 2 checkpoints in transformers' layout."""

from __future__ import annotations

import pytest
import torch
from tiny_models import (
    TINY_BERT,
    TINY_LMS,
    check_closed_gates_equal_lm,
    check_trains_generates_round_trips,
    lm_batch,
    reference_lm,
)

import encdec

KINDS = ("gated", "random", "copy", "merged")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny BERT encoder folder and every tiny LM folder, written by transformers."""
    import transformers

    root = tmp_path_factory.mktemp("lms")
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(**TINY_BERT)).save_pretrained(root / "bert")
    for name in TINY_LMS:
        reference_lm(name).save_pretrained(root / name)
    return root


def batch(seed: int = 3) -> dict[str, torch.Tensor]:
    ids, mask = lm_batch(seed=seed)
    labels, label_mask = lm_batch(length=6, seed=seed + 1)
    return dict(input_ids=ids, attention_mask=mask, labels=labels.masked_fill(label_mask == 0, -100))


def compose(folders, name, kind, encoder="bert"):
    return encdec.EncoderDecoderModel.from_encoder_decoder_pretrained(
        folders / encoder, folders / name, cross_attention_init=kind)


@pytest.mark.parametrize("name", sorted(TINY_LMS))
def test_gated_decoder_is_the_pretrained_lm_at_step_0(folders, name):
    check_closed_gates_equal_lm(compose(folders, name, "gated"), reference_lm(name))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(TINY_LMS))
def test_each_kind_trains_generates_and_round_trips(folders, name, kind, tmp_path):
    model = compose(folders, name, kind)
    if kind == "gated":  # open the gates, or the source would not matter
        with torch.no_grad():
            for layer in model.decoder.layers:
                layer.cross_attn_gate.fill_(0.5)
    check_trains_generates_round_trips(model, batch(), tmp_path)


def test_greedy_generation_follows_the_logits(folders):
    """Greedy ids equal the argmax of one teacher-forced pass over them (the cache is consistent)."""
    model = compose(folders, "qwen3", "copy").eval()
    src, src_mask = lm_batch(seed=8)
    ids = model.generate(src, attention_mask=src_mask, max_new_tokens=6, speculative=False,
                         eos_token_id=None)
    with torch.no_grad():
        logits = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=ids[:, :-1]).logits
    assert torch.equal(logits.argmax(-1), ids[:, 1:])


def test_merged_adds_no_attention_weights_and_copy_copies(folders):
    lm = encdec.LlamaForCausalLM.from_pretrained(folders / "llama")
    bert = encdec.BertModel.from_pretrained(folders / "bert")
    merged = compose(folders, "llama", "merged")
    proj = merged.enc_to_dec_proj
    extra = 0 if proj is None else sum(p.numel() for p in proj.parameters())
    assert merged.num_parameters() == lm.num_parameters() + bert.num_parameters() + extra
    assert not [n for n, _ in merged.named_parameters() if "cross_attn" in n]
    copy = compose(folders, "llama", "copy")
    layer = copy.decoder.layers[1]
    q_size = layer.self_attn.heads * layer.self_attn.head_dim
    assert torch.equal(layer.cross_attn.q.weight, layer.self_attn.qkv.weight[:q_size])
    assert torch.equal(layer.cross_attn.kv.weight, layer.self_attn.qkv.weight[q_size:])
    assert torch.equal(layer.cross_attn_norm.weight, layer.self_attn_norm.weight)


@pytest.mark.parametrize("name", ["llama", "qwen3"])
def test_an_lm_is_a_bidirectional_encoder(folders, name):
    """The encoder made from an LM sees the whole source. Reference: transformers' base model on each
    row's real tokens with an all-visible 4-D mask (ours runs the padded batch)."""
    model = compose(folders, name, "copy", encoder=name)
    assert model.config.encoder.use_bidirectional_attention
    ref = reference_lm(name, head=False)
    ids, mask = lm_batch(seed=9)
    with torch.no_grad():
        ours = model.encode(ids, mask)
        for row, length in enumerate(mask.sum(1).tolist()):
            visible = torch.ones(1, 1, length, length, dtype=torch.bool)
            theirs = ref(input_ids=ids[row:row + 1, :length], attention_mask=visible).last_hidden_state[0]
            torch.testing.assert_close(ours[row, :length], theirs, atol=1e-4, rtol=1e-4)
            causal = ref(input_ids=ids[row:row + 1, :length]).last_hidden_state[0]
            assert not torch.allclose(ours[row, :length], causal, atol=1e-2)


def test_tie_encoder_decoder_shares_an_lm_between_the_sides(folders):
    model = encdec.EncoderDecoderModel.from_encoder_decoder_pretrained(
        folders / "qwen2", folders / "qwen2", cross_attention_init="copy", tie_encoder_decoder=True)
    assert model.encoder.layers[0].self_attn.qkv.weight is model.decoder.layers[0].self_attn.qkv.weight
    data = batch()
    assert torch.isfinite(model(**data).loss)


def test_a_bert_decoder_takes_only_its_own_cross_attention(folders):
    with pytest.raises(ValueError, match="cross_attention_init='gated' is not available for a bert decoder"):
        compose(folders, "bert", "gated")


def test_the_halves_export_to_folders_transformers_loads(folders, tmp_path):
    """get_encoder() / get_decoder() of a composed model save single-model folders: the decoder its LM
    weights only (the cross-attention is encdec's own), which transformers' LlamaForCausalLM loads as
    the LM it was; the saved composed folder holds transformers-shaped tensors (GQA k/v split back)."""
    import transformers
    from safetensors.torch import load_file

    model = compose(folders, "llama", "copy")
    model.get_decoder().save_pretrained(tmp_path / "decoder")
    model.get_encoder().save_pretrained(tmp_path / "encoder")
    lm = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "decoder", attn_implementation="eager").eval()
    ids, mask = lm_batch()
    with torch.no_grad():
        torch.testing.assert_close(lm(input_ids=ids, attention_mask=mask).logits,
                                   reference_lm("llama")(input_ids=ids, attention_mask=mask).logits)
    bert = transformers.AutoModel.from_pretrained(tmp_path / "encoder").eval()
    with torch.no_grad():
        torch.testing.assert_close(bert(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()],
                                   model.encode(ids, mask)[mask.bool()], atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path / "composed")
    weights = load_file(tmp_path / "composed" / "model.safetensors")
    assert weights["decoder.model.layers.0.self_attn.k_proj.weight"].shape == (2 * 8, 32)
    assert weights["decoder.model.layers.0.cross_attn.q_proj.weight"].shape == (4 * 8, 32)
