"""bert2gpt2 end to end: train.py on a tiny BERT encoder (MiniLM's WordPiece vocabulary) and a tiny
GPT-2 decoder with its own byte-level BPE vocabulary; `best_model/` must carry both tokenizers
(encoder_tokenizer/, decoder_tokenizer/), load in encdec and in transformers with the same outputs,
summarise through every front end with the decoder's vocabulary, and keep the run's generation
settings in generation_config.json."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import CONF, TINY
from tiny_models import summaries_one_by_one

import encdec
from encdec import EncoderDecoderModel, Summarizer, load_tokenizer
from encdec.data.sample_data import make_article

transformers = pytest.importorskip("transformers")

# Validation and the export use these; each one changes the exported model's output (checked below).
GENERATION = {"num_beams": 2, "max_length": 7, "no_repeat_ngram_size": 1}
# model=tiny's decoder side made a random 2-layer GPT-2, narrower than the encoder (so enc_to_dec_proj
# is exercised); a random side's config takes the family's config.json names.
GPT2_DECODER = [
    "~model.decoder.config", "+model.decoder.config={model_type:gpt2,n_embd:48,n_layer:2,n_head:2,n_positions:64}",
    "model.decoder.start_token=bos", "model.decoder.eos_token=eos", "model.decoder.pad_token=eos",
]


def train_byte_level_bpe(folder: Path) -> Path:
    """A GPT-2 style vocabulary (vocab.json + merges.txt, <|endoftext|> only) of the sample set's words."""
    from tokenizers import ByteLevelBPETokenizer

    rng = random.Random(0)
    corpus = [text for _ in range(200) for text in make_article(rng)]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    folder.mkdir(parents=True)
    bpe.save_model(str(folder))
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir) -> dict:
    """One tiny bert2gpt2 training run; its resolved config, run folder and the BPE folder."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import train

    tmp = tmp_path_factory.mktemp("bert2gpt2")
    bpe = train_byte_level_bpe(tmp / "bpe")
    overrides = [f"run_dir={tmp / 'run'}", *TINY, *GPT2_DECODER, f"model.decoder.tokenizer={bpe}",
                 *(f"generation.{k}={v}" for k, v in GENERATION.items())]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    GlobalHydra.instance().clear()
    train.train(cfg)
    summary = json.loads((tmp / "run" / "metrics.json").read_text())
    return {"folder": Path(summary["exported_model"]), "ckpt": summary["best_checkpoint"], "bpe": bpe,
            "encoder_tokenizer": cfg.model.encoder.tokenizer}


def articles(n: int = 6, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [make_article(rng)[0] for _ in range(n)]


def test_best_model_holds_both_tokenizers(run):
    folder = run["folder"]
    texts = articles(3)
    encoder, decoder = load_tokenizer(run["encoder_tokenizer"]), load_tokenizer(run["bpe"])
    saved_encoder, saved_decoder = (load_tokenizer(folder / side)
                                    for side in ("encoder_tokenizer", "decoder_tokenizer"))
    assert saved_encoder(texts)["input_ids"] == encoder(texts)["input_ids"]
    assert load_tokenizer(folder)(texts)["input_ids"] == encoder(texts)["input_ids"]  # the top level: the encoder's
    summaries = [make_article(random.Random(2))[1]]
    assert saved_decoder(summaries, add_special_tokens=False)["input_ids"] == \
        decoder(summaries, add_special_tokens=False)["input_ids"]
    assert saved_encoder.vocab_size == encoder.vocab_size != saved_decoder.vocab_size == decoder.vocab_size
    model = EncoderDecoderModel.from_pretrained(folder)
    end = saved_decoder.eos_token_id
    assert saved_decoder.eos_token == "<|endoftext|>" and model.config.decoder.model_type == "gpt2"
    assert (model.config.decoder_start_token_id, model.config.eos_token_id,
            model.config.pad_token_id) == (end, end, end)


def test_exported_weights_are_the_best_checkpoints(run):
    state = torch.load(run["ckpt"], map_location="cpu", weights_only=False)["state_dict"]
    exported = EncoderDecoderModel.from_pretrained(run["folder"]).state_dict()
    assert set(exported) == {k[len("model."):] for k in state if k.startswith("model.")}
    assert all(torch.equal(value, state["model." + key]) for key, value in exported.items())


def test_transformers_reads_the_folder_the_same_way(run):
    """transformers' model and tokenizers from best_model/ give our logits, ids and summaries."""
    folder = run["folder"]
    ours = EncoderDecoderModel.from_pretrained(folder).eval()
    theirs = transformers.EncoderDecoderModel.from_pretrained(folder).eval()
    their_encoder = transformers.AutoTokenizer.from_pretrained(folder / "encoder_tokenizer")
    their_decoder = transformers.AutoTokenizer.from_pretrained(folder / "decoder_tokenizer")
    texts = articles(3)
    batch = their_encoder(texts, padding=True, return_tensors="pt")
    labels = their_decoder([make_article(random.Random(3))[1]] * 3, return_tensors="pt").input_ids
    inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels)
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs).logits, theirs(**inputs).logits, atol=1e-4, rtol=1e-4)
        expected = theirs.generate(batch.input_ids, attention_mask=batch.attention_mask)  # generation_config.json
    assert torch.equal(ours.generate(batch.input_ids, attention_mask=batch.attention_mask), expected)
    their_summaries = [" ".join(t.split()) for t in their_decoder.batch_decode(expected, skip_special_tokens=True)]
    assert Summarizer.from_pretrained(folder)(texts) == their_summaries


def test_every_front_end_decodes_with_the_decoder_tokenizer(run, tmp_path, capsys):
    from encdec.apps.cli import main

    folder, texts = run["folder"], articles(4)
    model = EncoderDecoderModel.from_pretrained(folder)
    encoder, decoder = load_tokenizer(folder / "encoder_tokenizer"), load_tokenizer(folder / "decoder_tokenizer")
    expected = summaries_one_by_one(model, encoder, decoder, texts)
    assert all(expected) and expected != summaries_one_by_one(model, encoder, encoder, texts)  # vocabularies differ
    assert Summarizer.from_pretrained(folder, batch_size=3)(texts) == expected
    assert encdec.summarize(texts, model=folder) == expected
    (tmp_path / "docs.txt").write_text("\n".join(texts) + "\n")
    capsys.readouterr()
    assert main(["summarize", "--model", str(folder), str(tmp_path / "docs.txt")]) == 0
    assert capsys.readouterr().out.splitlines() == expected


def test_generation_config_json_keeps_the_run_settings(run):
    """The exported model generates with the run's validation settings by default, in encdec and
    in transformers, and each of those settings changes what it generates."""
    folder = run["folder"]
    stored = transformers.GenerationConfig.from_pretrained(folder)
    assert {k: getattr(stored, k) for k in GENERATION} == GENERATION
    model = EncoderDecoderModel.from_pretrained(folder)
    batch = load_tokenizer(folder / "encoder_tokenizer")(articles(4), padding=True, truncation=True,
                                                         return_tensors="pt")
    default = model.generate(**batch)
    assert torch.equal(default, model.generate(**batch, **GENERATION))
    for key in GENERATION:  # None: the library default for that one setting
        other = model.generate(**batch, **{key: None})
        assert other.shape != default.shape or not torch.equal(other, default), key
