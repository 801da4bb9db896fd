"""Same weights, same inputs -> the same logits and loss as transformers, for every family pair
(tiny_models.ALL_PAIRS); folders move both ways between the two libraries."""

import pytest
import torch
from tiny_models import ALL_PAIRS, padded_batch, reference_model

from encdec import EncoderDecoderModel

transformers = pytest.importorskip("transformers")


@pytest.fixture(params=sorted(ALL_PAIRS))
def pair(request, tmp_path):
    """(name, reference model, our model loaded from the reference's saved folder)."""
    ref = reference_model(request.param)
    ref.save_pretrained(tmp_path / "ref")
    return request.param, ref, EncoderDecoderModel.from_pretrained(tmp_path / "ref").eval()


def _outputs(model, batch):
    with torch.no_grad():
        return model(**batch)


def test_logits_and_loss_match_transformers(pair):
    name, ref, ours = pair
    batch = padded_batch(name)
    expected, got = _outputs(ref, batch), _outputs(ours, batch)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.encoder_last_hidden_state, expected.encoder_last_hidden_state, atol=1e-4, rtol=0)


def test_explicit_decoder_inputs_match_transformers(pair):
    name, ref, ours = pair
    batch = padded_batch(name)
    labels = batch.pop("labels")
    start, pad = ours.config.decoder_start_token_id, ours.config.pad_token_id
    batch["decoder_input_ids"] = transformers.models.encoder_decoder.modeling_encoder_decoder.shift_tokens_right(
        labels, pad, start)
    batch["decoder_attention_mask"] = (labels != -100).long()
    torch.testing.assert_close(_outputs(ours, batch).logits, _outputs(ref, batch).logits, atol=1e-4, rtol=0)


def test_our_folder_loads_in_transformers_with_no_missing_keys(pair, tmp_path):
    name, ref, ours = pair
    ours.save_pretrained(tmp_path / "ours")
    loaded, info = transformers.EncoderDecoderModel.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not any(info.values()), info
    batch = padded_batch(name)
    torch.testing.assert_close(_outputs(loaded.eval(), batch).logits, _outputs(ours, batch).logits, atol=1e-4, rtol=0)
    again = EncoderDecoderModel.from_pretrained(tmp_path / "ours")
    torch.testing.assert_close(_outputs(again, batch).logits, _outputs(ours, batch).logits, atol=0, rtol=0)


def test_bin_checkpoint_loads(pair, tmp_path):
    name, ref, ours = pair
    folder = tmp_path / "bin"
    ref.config.save_pretrained(folder)
    torch.save(ref.state_dict(), folder / "pytorch_model.bin")
    loaded = EncoderDecoderModel.from_pretrained(folder).eval()
    batch = padded_batch(name)
    torch.testing.assert_close(_outputs(loaded, batch).logits, _outputs(ref, batch).logits, atol=1e-4, rtol=0)


def test_sharded_checkpoint_loads(tmp_path):
    ref = reference_model("bert2bert")
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    ours = EncoderDecoderModel.from_pretrained(tmp_path).eval()
    batch = padded_batch("bert2bert")
    torch.testing.assert_close(_outputs(ours, batch).logits, _outputs(ref, batch).logits, atol=1e-4, rtol=0)


def test_bertshare_shares_parameters():
    from tiny_models import encdec_config

    model = EncoderDecoderModel(encdec_config("bertshare"))
    enc_qkv = model.encoder.layers[0].self_attn.qkv.weight
    assert enc_qkv is model.decoder.layers[0].self_attn.qkv.weight
    assert model.encoder.embeddings.word.weight is model.decoder.embeddings.word.weight
    shared = {id(p) for p in model.encoder.parameters()} & {id(p) for p in model.decoder.parameters()}
    assert len(shared) > 10
    assert id(model.encoder.pooler.weight) not in shared  # the encoder's own: the decoder has none


def test_bertshare_tied_after_reload(tmp_path):
    ref = reference_model("bertshare")
    ref.save_pretrained(tmp_path)
    ours = EncoderDecoderModel.from_pretrained(tmp_path)
    assert ours.encoder.layers[1].mlp.fc_in.weight is ours.decoder.layers[1].mlp.fc_in.weight
    # the pooler is the encoder's alone, loaded (never run) and written back unchanged
    torch.testing.assert_close(ours.encoder.pooler.weight, ref.encoder.pooler.dense.weight, rtol=0, atol=0)
    ours.save_pretrained(tmp_path / "again")
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "again" / "model.safetensors")
    torch.testing.assert_close(saved["encoder.pooler.dense.weight"], ref.encoder.pooler.dense.weight, rtol=0, atol=0)
