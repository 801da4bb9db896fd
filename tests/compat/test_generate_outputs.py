"""generate()'s transformers options: return_dict_in_generate with output_scores, bad_words_ids,
forced_bos/eos_token_id and a transformers GenerationConfig give transformers' results."""

import pytest
import torch
from tiny_models import padded_batch, reference_model

from encdec import EncoderDecoderModel

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=["bert2bert", "bert2gpt2"])
def pair(request, tmp_path_factory):
    ref = reference_model(request.param, std=0.1)
    folder = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(folder)
    batch = padded_batch(request.param)
    batch.pop("labels")
    return ref, EncoderDecoderModel.from_pretrained(folder), batch


def test_greedy_scores_per_step(pair):
    ref, ours, batch = pair
    kwargs = dict(max_length=9, no_repeat_ngram_size=2, return_dict_in_generate=True, output_scores=True)
    got, expected = ours.generate(**batch, **kwargs), ref.generate(**batch, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    assert len(got.scores) == len(expected.scores) == got.sequences.shape[1] - 1
    for a, b in zip(got.scores, expected.scores):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert got["sequences"] is got[0]


def test_beam_sequences_scores(pair):
    ref, ours, batch = pair
    kwargs = dict(max_length=9, num_beams=3, num_return_sequences=2, length_penalty=2.0, return_dict_in_generate=True,
                  output_scores=True)
    got, expected = ours.generate(**batch, **kwargs), ref.generate(**batch, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    torch.testing.assert_close(got.sequences_scores, expected.sequences_scores, atol=1e-4, rtol=0)


def test_bad_words_and_forced_tokens(pair):
    ref, ours, batch = pair
    default = ours.generate(**batch, max_length=9)
    banned = [[int(default[0, 1])], [int(default[0, 2]), int(default[0, 3])]]
    for settings in (dict(bad_words_ids=banned), dict(forced_bos_token_id=7, forced_eos_token_id=9),
                     dict(bad_words_ids=banned, num_beams=3)):
        got = ours.generate(**batch, max_length=9, **settings)
        assert torch.equal(got, ref.generate(**batch, max_length=9, **settings)), settings
        assert not torch.equal(got, ours.generate(**batch, max_length=9, num_beams=settings.get("num_beams", 1)))


def test_transformers_generation_config_is_accepted(pair):
    ref, ours, batch = pair
    config = transformers.GenerationConfig(num_beams=3, max_length=9, no_repeat_ngram_size=2, bad_words_ids=[[5]])
    assert torch.equal(ours.generate(**batch, generation_config=config),
                       ref.generate(**batch, generation_config=config))
    with pytest.raises(ValueError, match="not supported"):
        ours.generate(**batch, generation_config=transformers.GenerationConfig(max_length=9, suppress_tokens=[4]))


def early_eos(ours, batch, **search) -> list[int]:
    """EOS ids taken from the model's own early tokens, so hypotheses end at different steps."""
    return sorted(set(ours.generate(**batch, max_length=5, **search)[:, 2:4].flatten().tolist()))


@pytest.mark.parametrize("early_stopping", [False, True])
def test_beam_per_step_scores_and_beam_indices(pair, early_stopping):
    """Beam search's per-step scores (a row for every source and beam at every step, sources that
    are done included) and beam_indices equal transformers', as does compute_transition_scores."""
    ref, ours, batch = pair
    kwargs = dict(max_length=12, num_beams=3, num_return_sequences=2, eos_token_id=early_eos(ours, batch, num_beams=3),
                  early_stopping=early_stopping, return_dict_in_generate=True, output_scores=True)
    got, expected = ours.generate(**batch, **kwargs), ref.generate(**batch, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    assert torch.equal(got.beam_indices, expected.beam_indices)
    assert (got.beam_indices == -1).any()  # hypotheses of different lengths
    assert len(got.scores) == len(expected.scores)
    for a, b in zip(got.scores, expected.scores):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.sequences_scores, expected.sequences_scores, atol=1e-4, rtol=0)
    without_scores = ours.generate(**batch, **dict(kwargs, output_scores=False))
    assert without_scores.scores is None and torch.equal(without_scores.beam_indices, expected.beam_indices)
    args = (got.sequences, got.scores, got.beam_indices)
    transitions = ours.compute_transition_scores(*args)
    torch.testing.assert_close(transitions, ref.compute_transition_scores(*args), atol=1e-4, rtol=0)
    lengths = (got.beam_indices >= 0).sum(1)  # the sum over a hypothesis, over its length ** penalty: its score
    torch.testing.assert_close(transitions.sum(1) / lengths, got.sequences_scores, atol=1e-4, rtol=0)


class Recorder:
    """transformers' streamer protocol: put(token ids), end()."""

    def __init__(self):
        self.puts, self.ended = [], 0

    def put(self, ids):
        self.puts.append(ids.clone())

    def end(self):
        self.ended += 1


def test_streamer_gets_transformers_tokens_step_by_step(pair):
    ref, ours, batch = pair
    eos = early_eos(ours, batch)
    ours_seen, ref_seen = Recorder(), Recorder()
    out = ours.generate(**batch, max_length=12, eos_token_id=eos, streamer=ours_seen)
    assert torch.equal(out, ref.generate(**batch, max_length=12, eos_token_id=eos, streamer=ref_seen))
    assert len(ours_seen.puts) == len(ref_seen.puts) == out.shape[1] and ours_seen.ended == ref_seen.ended == 1
    for a, b in zip(ours_seen.puts, ref_seen.puts):
        assert torch.equal(a, b)
    assert torch.equal(torch.cat([p.reshape(len(out), -1) for p in ours_seen.puts], dim=1), out)
    with pytest.raises(ValueError, match="num_beams=1"):
        ours.generate(**batch, num_beams=2, streamer=Recorder())


def test_greedy_compute_transition_scores(pair):
    ref, ours, batch = pair
    got = ours.generate(**batch, max_length=9, return_dict_in_generate=True, output_scores=True)
    for normalize in (False, True):
        torch.testing.assert_close(
            ours.compute_transition_scores(got.sequences, got.scores, normalize_logits=normalize),
            ref.compute_transition_scores(got.sequences, got.scores, normalize_logits=normalize),
            atol=1e-4, rtol=0)
