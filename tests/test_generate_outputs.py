"""generate()'s transformers options: return_dict_in_generate with output_scores, bad_words_ids,
forced_bos/eos_token_id and a transformers GenerationConfig give transformers' results."""

import pytest
import torch

from encdec import EncoderDecoderModel
from tiny_models import padded_batch, reference_model

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
    assert torch.equal(ours.generate(**batch, generation_config=config), ref.generate(**batch, generation_config=config))
    with pytest.raises(ValueError, match="not supported"):
        ours.generate(**batch, generation_config=transformers.GenerationConfig(max_length=9, suppress_tokens=[4]))
