"""The long-document recipe (experiment=modernbert_cnn_dailymail) end to end, offline: a Hub-layout
CNN/DailyMail mirror whose articles run 600-1,500 words (past BERT's 512), a tiny ModernBERT encoder
with 2,048 positions and a tiny decoder-only LM sharing its tokenizer (ModernBERT's 8,192-token
limit in tokenizer_config.json), trained through train.py on token-budget batches, validated with
beam search over the long sources, served by the Summarizer on a long article."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import pytest
from conftest import run_train
from test_cnn_mirror import _rows, write_mirror
from tiny_models import (
    MODERNBERT_IDS,
    reference_lm,
    reference_modernbert,
    reference_modernbert_decoder,
    write_modernbert_tokenizer,
)

ENCODER_POSITIONS = 2048  # the tiny encoder's; its tokenizer says 8,192 as ModernBERT's does
WORDS = (600, 1500)  # article lengths (a token per word and full stop, plus [CLS] and [SEP])


def copy_tokenizer(source: Path, folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((source / name).read_bytes())


def llama_decoder(folder: Path, vocab_size: int) -> None:
    """A tiny Llama (decoder-only LM) with room for the recipe's targets."""
    ids = {k: MODERNBERT_IDS[k] for k in ("pad_token_id", "bos_token_id", "eos_token_id")}
    reference_lm("llama", vocab_size=vocab_size, max_position_embeddings=512, **ids).save_pretrained(folder)


def ettin_decoder(folder: Path, vocab_size: int) -> None:
    """A tiny ModernBERT decoder (the Ettin family, the recipe's own pair), its local window shorter
    than the targets."""
    reference_modernbert_decoder(vocab_size=vocab_size, max_position_embeddings=512, local_attention=8,
                                 **MODERNBERT_IDS).save_pretrained(folder)


# Decoder builders: name -> builder(folder, vocab_size) writing a Hugging Face folder (the shared
# tokenizer is added next to it).
DECODERS: dict[str, Callable[[Path, int], None]] = {"ettin": ettin_decoder, "llama": llama_decoder}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    return write_mirror(tmp_path_factory.mktemp("hub") / "cnn_dailymail", train_per_shard=16, other=6, words=WORDS)


@pytest.fixture(scope="module", params=sorted(DECODERS))
def folders(request, tmp_path_factory) -> dict[str, Path]:
    """The encoder and decoder folders, one tokenizer.json between them."""
    root = tmp_path_factory.mktemp("long_models")
    texts = [row[key] for split in ("train", "validation", "test") for row in _rows(split, 0, 120)
             for key in ("article", "highlights")]
    vocab = write_modernbert_tokenizer(root / "tokenizer", texts)
    reference_modernbert(masked_lm=True, vocab_size=vocab, max_position_embeddings=ENCODER_POSITIONS,
                         local_attention=16, **MODERNBERT_IDS).save_pretrained(root / "encoder")
    DECODERS[request.param](root / "decoder", vocab)
    for side in ("encoder", "decoder"):
        copy_tokenizer(root / "tokenizer", root / side)
    return {"encoder": root / "encoder", "decoder": root / "decoder"}


def recipe(mirror: Path, folders: dict[str, Path]) -> list[str]:
    """The recipe as published, but its model, data and trainer made tiny and CPU-sized."""
    return [
        "experiment=modernbert_cnn_dailymail", "logger=csv", f"data.source.path={mirror}",
        f"model.encoder.pretrained={folders['encoder']}", f"model.decoder.pretrained={folders['decoder']}",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "trainer.log_every_n_steps=1", "torch_threads=1",
    ]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def run(mirror, folders, tmp_path_factory, cache_dir) -> Path:
    tmp = tmp_path_factory.mktemp("long_run")
    args = [
        *recipe(mirror, folders), f"hydra.run.dir={tmp / 'run'}",
        "trainer.max_steps=4", "trainer.val_check_interval=4", "optim.warmup_steps=1", "optim.lr=1e-3",
        f"data.max_source_length={ENCODER_POSITIONS}", "data.max_target_length=32", "data.max_tokens=4096",
        "data.buffer_size=32", "data.eval_batch_size=4", "data.val_examples=6",
        "generation.num_beams=2", "generation.max_length=6", "generation.min_length=0",
        "+callbacks.probe._target_=tests.train_probes.RecordShapes",
    ]
    result = run_train(args, tmp, cache_dir, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    return tmp / "run"


def test_trains_on_token_budget_batches_of_whole_long_articles(run):
    """Training batches hold different numbers of rows, each within 4,096 padded tokens, and the
    encoder sees sources past 512 tokens (nothing cuts them to BERT's length)."""
    train = [r for r in read_jsonl(run / "shapes_rank0.jsonl") if r["stage"] == "train"]
    assert len(train) == 4
    rows = {r["input_ids"][0] for r in train}
    assert len(rows) > 1, train
    for r in train:
        assert r["input_ids"][0] * (r["input_ids"][1] + r["labels"][1]) <= 4096, r
    assert max(r["input_ids"][1] for r in train) > 1000
    assert min(r["input_ids"][1] for r in train) > 512


def test_validates_with_generation_over_long_sources_in_token_budget_batches(run):
    """Validation batches obey the token budget too (six 600-1,500-word articles: not one batch of
    eval_batch_size=4 rows but smaller ones for the long ones), and ROUGE is logged."""
    val = [r for r in read_jsonl(run / "shapes_rank0.jsonl") if r["stage"] == "validation"]
    assert sum(r["input_ids"][0] for r in val) == 6
    assert len(val) > 2  # 4 + 2 rows without the budget
    assert max(r["input_ids"][1] for r in val) > 1500
    for r in val:
        assert r["input_ids"][0] * (r["input_ids"][1] + r["labels"][1]) <= 4096, r
    metrics = (run / "metrics.json").read_text()
    assert "val/rougeL" in metrics


def test_best_model_summarises_a_long_article_whole(run, caplog):
    """The exported folder's Summarizer reads up to the encoder's 2,048 positions (the tokenizer's
    8,192 is not the limit, nor is 512): a 1,500-word article reaches the encoder whole, a 3,000-word
    one is cut to 2,048 tokens with the one warning."""
    from encdec import Summarizer

    summarizer = Summarizer.from_pretrained(run / "best_model")
    assert summarizer.encoder_tokenizer.model_max_length == 8192
    assert summarizer.max_source_length == ENCODER_POSITIONS
    seen: list[tuple[int, int]] = []
    summarizer.model.encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(tuple((args[0] if args else kwargs["input_ids"]).shape)),
        with_kwargs=True)
    article = _rows("test", 0, 2, words=WORDS)[1]["article"]  # 1,500 words
    tokens = len(summarizer.encoder_tokenizer(article)["input_ids"])
    assert 512 < tokens < ENCODER_POSITIONS
    with caplog.at_level(logging.WARNING, logger="encdec"):
        summaries = summarizer([article], max_length=6)
    assert isinstance(summaries[0], str) and seen == [(1, tokens)]
    assert "truncated" not in caplog.text
    seen.clear()
    with caplog.at_level(logging.WARNING, logger="encdec"):
        summarizer([article + " " + article], max_length=6)
    assert seen == [(1, ENCODER_POSITIONS)]
    assert f"longer than the encoder's {ENCODER_POSITIONS} tokens and were truncated" in caplog.text


def test_source_length_past_the_encoder_positions_is_one_line(mirror, folders, tmp_path, cache_dir):
    """The recipe's max_source_length=8192 with an encoder of 2,048 positions stops before training
    with one line naming the fix (rotary positions would otherwise run untrained, silently)."""
    result = run_train([*recipe(mirror, folders), f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, cache_dir)
    assert result.returncode == 2, result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "data.max_source_length" in line]
    assert len(lines) == 1, result.stderr[-4000:]
    assert "data.max_source_length=8192 exceeds the encoder's 2048 positions" in lines[0]
    assert "or choose an encoder with more positions." in lines[0]
    assert "set data.max_source_length=2048" in lines[0]


def test_recipe_composes_for_whole_articles(compose):
    cfg = compose("experiment=modernbert_cnn_dailymail")
    assert (cfg.data.max_source_length, cfg.data.max_target_length, cfg.data.max_tokens) == (8192, 256, 32768)
    assert cfg.data.max_tokens >= cfg.data.max_source_length + cfg.data.max_target_length  # one whole article fits
    assert cfg.trainer.precision == "bf16-mixed" and cfg.generation.num_beams == 4
    assert cfg.model.encoder.pretrained == "answerdotai/ModernBERT-base"
    assert cfg.model.decoder.pretrained == "jhu-clsp/ettin-decoder-150m" and cfg.model.cross_attention_init == "gated"
    assert compose("experiment=modernbert_cnn_dailymail", "model/decoder=smollm2").model.decoder.start_token == "bos"


def test_validation_batches_keep_the_token_budget_and_can_be_evened_out(folders):
    """Sorted by length, at most eval_batch_size rows and max_tokens padded tokens each; min_batches
    (another DDP rank's count) halves the largest batches, never breaking the budget."""
    from encdec import load_tokenizer
    from encdec.data.batching import Columns, PairEncoder, count_evaluation_batches, evaluation_batches

    tok = load_tokenizer(folders["encoder"])
    encoder, columns = PairEncoder(tok, tok, ENCODER_POSITIONS, 32, tok.sep_token_id), Columns()
    records = _rows("validation", 0, 12, words=(100, 1500))
    assert [len(b["ids"]) for b in evaluation_batches(records, encoder, columns, 4)] == [4, 4, 4]
    budget = evaluation_batches(records, encoder, columns, 4, max_tokens=4096)
    assert len(budget) == count_evaluation_batches(records, encoder, columns, 4, 4096) > 3
    more = evaluation_batches(records, encoder, columns, 4, max_tokens=4096, min_batches=len(budget) + 2)
    assert len(more) == len(budget) + 2
    for batches in (budget, more):
        assert sorted(i for b in batches for i in b["ids"]) == sorted(r["id"] for r in records)
        widths = [b["input_ids"].shape[1] for b in batches]
        assert widths == sorted(widths)
        for b in batches:
            assert len(b["ids"]) <= 4 and b["input_ids"].numel() + b["labels"].numel() <= 4096


def test_evaluate_scores_the_best_model_on_whole_long_articles(run, mirror, tmp_path, monkeypatch):
    """evaluate.py on the mirror's test split: the encoder reads each 600-1,500-word article whole
    (past 512 tokens, local and global layers), and ROUGE is scored for every article."""
    from hydra import compose, initialize_config_dir

    import evaluate as evaluate_script
    from encdec.nn.backbone import Backbone

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("ENCDEC_CACHE", str(tmp_path / "cache"))
    lengths: list[int] = []
    forward = Backbone.forward

    def recording(self, input_ids, *args, **kwargs):
        if self.config.model_type == "modernbert":
            mask = kwargs["attention_mask"] if "attention_mask" in kwargs else (args[0] if args else None)
            lengths.extend(mask.sum(1).tolist() if mask is not None else [input_ids.shape[1]] * len(input_ids))
        return forward(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(Backbone, "forward", recording)
    overrides = [f"output_dir={tmp_path / 'out'}", f"model_path={run / 'best_model'}", "data=cnn_dailymail",
                 f"data.source.path={mirror}", "split=test", "limit=3", "batch_size=2", "generation=greedy",
                 "generation.max_length=6", "bootstrap_samples=10"]
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base="1.3"):
        metrics = evaluate_script.evaluate(compose("evaluate", overrides=overrides))
    assert metrics["examples"] == 3 and "rougeL" in json.dumps(metrics)
    assert sorted(lengths)[0] > 512 and len(lengths) == 3
    assert len(read_jsonl(tmp_path / "out" / "predictions.jsonl")) == 3
