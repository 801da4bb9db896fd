"""Copy-speculative greedy search returns plain greedy search's tokens: tiny models of every
family, padded batches, rows ending at different steps, repetition penalty, n-gram blocking and
min_length on; with drafts that greedy accepts whole, in part, or not at all."""

import pytest
import torch
from tiny_models import ALL_PAIRS, encdec_config, padded_batch, spread_weights

from encdec import EncoderDecoderModel
from encdec.generation.generate import current_generation_config
from encdec.generation.settings import resolve
from encdec.generation.speculative import Ragged, draft, speculative_greedy
from encdec.generation.state import Decoding

SETTINGS = {
    "plain": dict(max_length=14),
    "rules": dict(max_length=16, repetition_penalty=1.3, no_repeat_ngram_size=2, min_length=6),
    "trigram": dict(max_length=16, no_repeat_ngram_size=3),
}


@pytest.fixture(scope="module", params=sorted(ALL_PAIRS))
def family(request):
    torch.manual_seed(0)
    model = spread_weights(EncoderDecoderModel(encdec_config(request.param))).eval()
    batch = padded_batch(request.param, batch=4)
    batch.pop("labels")
    return model, batch


def plain(model, batch, **kwargs):
    return model.generate(**batch, speculative=False, **kwargs)


def with_drafts(model, batch, source, source_mask=None, k=4, **kwargs):
    """Speculative search drafting from `source` instead of the inputs."""
    plan = resolve(current_generation_config(model), kwargs, model.config.decoder.max_positions)
    mask = batch["attention_mask"]
    with torch.no_grad():
        memory = model.memory(model.encode(batch["input_ids"], mask))
        decoding = Decoding(model.decoder, memory, mask, 1, plan.max_length - 1 + k)
        return speculative_greedy(decoding, plan, source, source_mask, k)


def a_mid_sequence_eos(out):
    """A token rows emit a few steps in, not before: rows end at different steps."""
    counts = torch.bincount(out[:, 3:].flatten(), minlength=int(out.max()) + 1)
    counts[out[:, :3].flatten()] = 0
    return int(counts.argmax())


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_default_generate_equals_plain_greedy(family, setting):
    model, batch = family
    expected = plain(model, batch, **SETTINGS[setting])
    assert torch.equal(model.generate(**batch, **SETTINGS[setting]), expected)
    eos = a_mid_sequence_eos(expected)
    expected = plain(model, batch, eos_token_id=eos, **SETTINGS[setting])
    assert torch.equal(model.generate(**batch, eos_token_id=eos, **SETTINGS[setting]), expected)


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_right_partly_right_and_wrong_drafts_give_greedy_tokens(family, setting, monkeypatch):
    """Drafting from greedy's own output (accepted whole), from it with every third token changed
    (accepted in part, different amounts per row) and from shifted tokens (rejected)."""
    model, batch = family
    kwargs = SETTINGS[setting]
    expected = plain(model, batch, **kwargs)
    passes = []
    verify = Ragged.verify
    monkeypatch.setattr(Ragged, "verify", staticmethod(lambda *a: passes.append(a[1].shape) or verify(*a)))
    wrong = expected.clone()
    wrong[:, 2::3] = (wrong[:, 2::3] + 1 + torch.arange(4)[:, None]) % 90 + 3
    for source in (expected, wrong, (expected + 7) % 90 + 3):
        passes.clear()
        assert torch.equal(with_drafts(model, batch, source, **kwargs), expected)
    eos = a_mid_sequence_eos(expected)
    ends = plain(model, batch, eos_token_id=eos, **kwargs)
    passes.clear()
    assert torch.equal(with_drafts(model, batch, ends, eos_token_id=eos, **kwargs), ends)
    assert len(passes) < ends.shape[1] - 1 and max(t for _, t in passes) > 1  # several tokens a pass


def test_padded_draft_source_is_read_only_up_to_its_length(family):
    model, batch = family
    expected = plain(model, batch, max_length=14)
    source = expected.clone()
    mask = torch.ones_like(source)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    assert torch.equal(with_drafts(model, batch, source, mask, max_length=14), expected)


def test_draft_takes_the_tokens_after_the_longest_suffix_match():
    seqs = torch.tensor([[1, 5, 6, 0, 0], [1, 9, 0, 0, 0], [1, 4, 0, 0, 0]])
    lengths = torch.tensor([3, 2, 2])
    source = torch.tensor([[6, 7, 5, 6, 8, 9], [9, 3, 9, 4, 0, 0], [5, 5, 5, 5, 5, 4]])
    drafts, count = draft(seqs, lengths, source, torch.tensor([6, 4, 6]), k=3)
    assert count.tolist() == [2, 3, 0]  # row 0: "5 6" at 2 beats "6" at 0; row 2: "4" ends the source
    assert drafts[0, :2].tolist() == [8, 9] and drafts[1].tolist() == [3, 9, 4]


def test_speculative_false_and_beam_search_run_without_drafts(monkeypatch):
    model = spread_weights(EncoderDecoderModel(encdec_config("bert2bert"))).eval()
    batch = padded_batch("bert2bert", batch=3)
    batch.pop("labels")
    calls = []
    monkeypatch.setattr(Ragged, "verify", staticmethod(lambda *a: calls.append(1)))
    model.generate(**batch, max_length=8, speculative=False)
    model.generate(**batch, max_length=8, num_beams=2)
    assert not calls
