"""Tiny configs shared by the tests: the same family pairs built in transformers (the reference)
and in encdec, with weights moved through a saved folder."""

from __future__ import annotations

import io
import random

import torch

TINY_BERT = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=37, max_position_embeddings=64,
)
TINY_ROBERTA = dict(TINY_BERT, pad_token_id=1, bos_token_id=0, eos_token_id=2, max_position_embeddings=66,
                    type_vocab_size=1)
# Different width from the encoder, so enc_to_dec_proj is exercised.
TINY_GPT2 = dict(vocab_size=99, n_embd=48, n_layer=2, n_head=4, n_positions=64, bos_token_id=98, eos_token_id=98)
TINY_BERT_GENERATION = dict(TINY_BERT, pad_token_id=0, bos_token_id=2, eos_token_id=1)
# embedding_size != hidden_size: embeddings_project and the generator head's narrowing are exercised.
TINY_ELECTRA = dict(TINY_BERT, embedding_size=16)
TINY_DISTILBERT = dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)
TINY_BERT_WIDE = dict(TINY_BERT, hidden_size=48)
ROBERTA_IDS = dict(decoder_start_token_id=0, pad_token_id=1, eos_token_id=2)

# name -> (encoder family, encoder kwargs, decoder family, decoder kwargs, top-level kwargs)
PAIRS = {
    "bert2bert": ("bert", TINY_BERT, "bert", TINY_BERT, dict(decoder_start_token_id=2, pad_token_id=0, eos_token_id=3)),
    "roberta2roberta": ("roberta", TINY_ROBERTA, "roberta", TINY_ROBERTA,
                        dict(decoder_start_token_id=0, pad_token_id=1, eos_token_id=2)),
    "bert2gpt2": ("bert", TINY_BERT, "gpt2", TINY_GPT2,
                  dict(decoder_start_token_id=98, pad_token_id=98, eos_token_id=98)),
    "bertshare": ("bert", TINY_BERT, "bert", TINY_BERT,
                  dict(decoder_start_token_id=2, pad_token_id=0, eos_token_id=3, tie_encoder_decoder=True)),
}
# The further families (tests/test_families.py), kept apart so the training and precision tests that
# loop over PAIRS stay fast.
FAMILY_PAIRS = {
    "bertgen2bertgen": ("bert-generation", TINY_BERT_GENERATION, "bert-generation", TINY_BERT_GENERATION,
                        dict(decoder_start_token_id=2, pad_token_id=0, eos_token_id=1)),
    "bertgenshare": ("bert-generation", TINY_BERT_GENERATION, "bert-generation", TINY_BERT_GENERATION,
                     dict(decoder_start_token_id=2, pad_token_id=0, eos_token_id=1, tie_encoder_decoder=True)),
    "xlmr2xlmr": ("xlm-roberta", TINY_ROBERTA, "xlm-roberta", TINY_ROBERTA, ROBERTA_IDS),
    "camembert2camembert": ("camembert", TINY_ROBERTA, "camembert", TINY_ROBERTA, ROBERTA_IDS),
    "electra2electra": ("electra", TINY_ELECTRA, "electra", TINY_ELECTRA,
                        dict(decoder_start_token_id=2, pad_token_id=0, eos_token_id=3)),
    "distilbert2bert": ("distilbert", TINY_DISTILBERT, "bert", TINY_BERT,
                        dict(decoder_start_token_id=2, pad_token_id=0, eos_token_id=3)),
    "xlmr2gpt2": ("xlm-roberta", TINY_ROBERTA, "gpt2", TINY_GPT2,
                  dict(decoder_start_token_id=98, pad_token_id=98, eos_token_id=98)),
    "electra2bert": ("electra", TINY_ELECTRA, "bert", TINY_BERT_WIDE,
                     dict(decoder_start_token_id=2, pad_token_id=0, eos_token_id=3)),
}
ALL_PAIRS = {**PAIRS, **FAMILY_PAIRS}
# model_type -> the config class name, the same in transformers and encdec.
CONFIG_CLASSES = {
    "bert": "BertConfig", "roberta": "RobertaConfig", "gpt2": "GPT2Config", "xlm-roberta": "XLMRobertaConfig",
    "camembert": "CamembertConfig", "bert-generation": "BertGenerationConfig", "electra": "ElectraConfig",
    "distilbert": "DistilBertConfig",
}


def reference_model(name: str, seed: int = 0, std: float | None = None):
    """transformers' EncoderDecoderModel for a pair, in eval mode. For BERTShare the encoder is
    made equal to the decoder's base model, since transformers 5 keeps two copies. `std`: see
    `spread_weights`."""
    import transformers

    enc_type, enc_kw, dec_type, dec_kw, top = ALL_PAIRS[name]
    enc_cls, dec_cls = (getattr(transformers, CONFIG_CLASSES[t]) for t in (enc_type, dec_type))
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(enc_cls(**enc_kw), dec_cls(**dec_kw))
    for key, value in top.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = transformers.EncoderDecoderModel(config=config).eval()
    if std is not None:
        spread_weights(model, std)
    if top.get("tie_encoder_decoder"):
        base = model.decoder.base_model.state_dict()
        model.encoder.load_state_dict({k: base[k] for k in base}, strict=False)
    return model


def spread_weights(model, std: float = 0.25, seed: int = 0):
    """Larger random weights, so that the tiny model's output depends on its source (with the
    default 0.02 every source gives the same tokens, which would hide mix-ups between rows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def encdec_config(name: str):
    import encdec

    enc_type, enc_kw, dec_type, dec_kw, top = ALL_PAIRS[name]
    enc_cls, dec_cls = (getattr(encdec, CONFIG_CLASSES[t]) for t in (enc_type, dec_type))
    return encdec.EncoderDecoderConfig.from_encoder_decoder_configs(enc_cls(**enc_kw), dec_cls(**dec_kw), **top)


def padded_batch(name: str, batch: int = 3, src_len: int = 11, tgt_len: int = 7, seed: int = 1):
    """Sources and labels with padding inside the batch: rows 1 and 2 shorter than row 0."""
    g = torch.Generator().manual_seed(seed)
    enc_pad = encdec_config(name).encoder.pad_token_id or 0
    input_ids = torch.randint(3, 98, (batch, src_len), generator=g)
    attention_mask = torch.ones(batch, src_len, dtype=torch.long)
    attention_mask[1, src_len - 4:] = 0
    attention_mask[2, 4:] = 0
    input_ids[attention_mask == 0] = enc_pad
    labels = torch.randint(3, 98, (batch, tgt_len), generator=g)
    labels[1, tgt_len - 2:] = -100
    labels[2, 2:] = -100
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def mid_sequence_token(ref, batch) -> int:
    """A token the model emits a few steps in, used as EOS so that rows end at different steps
    (random tiny models rarely emit the configured EOS)."""
    out = ref.generate(**batch, max_length=12, num_beams=2, no_repeat_ngram_size=2, eos_token_id=None)
    counts = torch.bincount(out[:, 3:].flatten(), minlength=out.max() + 1)
    counts[out[:, :3].flatten()] = 0
    return int(counts.argmax())


def train_losses(model, batch: dict, steps: int, lr: float, **forward_kwargs) -> list[float]:
    """Losses of `steps` AdamW steps on one batch, in train mode (for "does it learn" tests)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(**batch, **forward_kwargs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def check_trains_generates_round_trips(model, data: dict, folder, train_steps: int = 0,
                                       new_tokens: int = 5) -> None:
    """What every composed pair must do: the training fast path's loss equals the plain forward's (no
    dropout: eval mode), it learns (`train_steps` AdamW steps lower the loss; 0: one backward), greedy
    and beam search start with the start token, and save_pretrained/from_pretrained is bit-exact
    (logits, greedy and beam ids)."""
    import encdec

    model.eval()
    plain = model(**data).loss
    fast = model(**data, return_logits=False).loss
    assert torch.isfinite(plain)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    if train_steps:
        losses = train_losses(model, data, steps=train_steps, lr=1e-2, return_logits=False)
        assert losses[-1] < losses[0]
        model.eval()
    else:
        fast.backward()
    src = dict(input_ids=data["input_ids"], attention_mask=data["attention_mask"])
    greedy = model.generate(**src, max_new_tokens=new_tokens, speculative=False)
    beam = model.generate(**src, max_new_tokens=new_tokens, num_beams=3)
    start = model.config.decoder_start_token_id
    assert (greedy[:, 0] == start).all() and (beam[:, 0] == start).all()
    assert greedy.shape[0] == beam.shape[0] == data["input_ids"].shape[0]
    model.save_pretrained(folder)
    again = encdec.EncoderDecoderModel.from_pretrained(folder)
    assert again.config.cross_attention_init == model.config.cross_attention_init
    with torch.no_grad():
        assert torch.equal(again(**data).logits, model(**data).logits)
    assert torch.equal(again.generate(**src, max_new_tokens=new_tokens, speculative=False), greedy)
    assert torch.equal(again.generate(**src, max_new_tokens=new_tokens, num_beams=3), beam)


def logits_token_by_token(model, ids: torch.Tensor, prompt: int) -> torch.Tensor:
    """A single-model LM's logits of ids (1, T): the first `prompt` tokens in one call, then one token
    at a time through the cache (past_key_values)."""
    with torch.no_grad():
        out = model(input_ids=ids[:, :prompt], use_cache=True)
        steps = [out.logits]
        for t in range(prompt, ids.shape[1]):
            out = model(input_ids=ids[:, t:t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    return torch.cat(steps, dim=1)


def check_closed_gates_equal_lm(model, lm, source_length: int = 9, target_length: int = 6) -> None:
    """A composed model whose decoder is a decoder-only LM behind gated cross-attention: at step 0
    (every gate 0) its logits equal the LM's own on the same padded targets, whatever the source."""
    tgt, tgt_mask = lm_batch(length=target_length, seed=5)
    src, src_mask = lm_batch(length=source_length, seed=6)
    with torch.no_grad():
        ours = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt,
                     decoder_attention_mask=tgt_mask).logits
        theirs = lm(input_ids=tgt, attention_mask=tgt_mask).logits
    keep = tgt_mask.bool()
    torch.testing.assert_close(ours[keep], theirs[keep], atol=1e-4, rtol=1e-4)
    assert model.config.cross_attention_init == "gated"
    assert all(float(layer.cross_attn_gate.detach()) == 0.0 for layer in model.decoder.layers)


def write_legacy_modernbert_config(folder, *absent: str) -> None:
    """Rewrite a saved ModernBERT-family config.json as older Hub configs are: no layer_types or
    rope_parameters (nor `absent`), global/local RoPE thetas 500/40, every 2nd layer global."""
    import json

    path = folder / "config.json"
    config = json.loads(path.read_text())
    for key in ("layer_types", "rope_parameters", *absent):
        del config[key]
    config.update(global_rope_theta=500.0, local_rope_theta=40.0, global_attn_every_n_layers=2)
    path.write_text(json.dumps(config))


# ---------------------------------------------------------------- tokenizers for tiny folders

WORDS = (
    "the a house river müde straße café naïve über école garçon sind sie möchten kaffee woche einen mit mir "
    "diese would you like to grab coffee week 2024 3.5 % hello world ! ? , . élan déjà zoë Größe résumé fox"
).split()
SYLLABLES = "ka ro mi lä sch ter ung en über ca fé ni ço ß an de la qu ix tra po ne".split()
BERT_GENERATION_IDS = dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3)  # as bert-generation checkpoints


def corpus(lines: int = 400, seed: int = 0) -> list[str]:
    """A few hundred lines of words and made-up words (accents included) to train SentencePiece on."""
    r = random.Random(seed)

    def word() -> str:
        return r.choice(WORDS) if r.random() < 0.6 else "".join(r.choice(SYLLABLES) for _ in range(r.randint(1, 4)))

    return [" ".join(word() for _ in range(r.randint(3, 14))) for _ in range(lines)]


def train_sentencepiece(model_type: str = "unigram", **ids) -> bytes:
    """A real SentencePiece model (the .model file's bytes), ~200 pieces."""
    import sentencepiece

    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()), model_writer=out, vocab_size=200, hard_vocab_limit=False,
        model_type=model_type, character_coverage=1.0, num_threads=1, minloglevel=2, **ids,
    )
    return out.getvalue()


def write_byte_level_bpe(folder, special_tokens: list[str]) -> None:
    """A small GPT-2 style vocabulary (vocab.json + merges.txt), special tokens first."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus(200), vocab_size=300, min_frequency=1, special_tokens=special_tokens)
    bpe.save_model(str(folder))


MODERNBERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0-4 in write_modernbert_tokenizer
MODERNBERT_IDS = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3)


def write_modernbert_tokenizer(folder, texts: list[str]) -> int:
    """A tokenizer.json laid out as ModernBERT's and Ettin's (one file for encoder and decoder):
    [PAD] [UNK] [CLS] [SEP] [MASK] first, "[CLS] $A [SEP]" around a text, and tokenizer_config.json
    with ModernBERT's model_max_length of 8,192. Word-level over `texts` (a token per lowercased word
    or punctuation mark, so lengths are easy to reason about); returns the vocabulary size."""
    import json

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=MODERNBERT_SPECIALS))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 8192, "cls_token": "[CLS]",
              "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return tok.get_vocab_size()


def write_vocab_txt(folder) -> int:
    """A small WordPiece vocab.txt (BERT's special tokens first); returns its size."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w.lower() for w in WORDS}), "##s", "##ed"]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
    return len(tokens)


WORD_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0-4: pad 0, start 2, eos 3
WORD_TOKENS = [f"w{i}" for i in range(len(WORD_SPECIALS), 99)]  # one whole word per remaining id


def write_word_model(folder, max_length: int = 6):
    """A tiny bert2bert folder with a 99-word WordPiece tokenizer ("w5" ... "w98") and a stored
    max_length, its weights spread so that the summary depends on the document. encdec writes it;
    transformers loads it too (EncoderDecoderModel, BertTokenizer)."""
    import json

    import encdec

    torch.manual_seed(0)
    model = encdec.EncoderDecoderModel(encdec_config("bert2bert"))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.25)
    model.generation_config = model.generation_config.update(max_length=max_length)
    model.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(WORD_SPECIALS + WORD_TOKENS) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512, "do_lower_case": True}))
    return folder


def summaries_one_by_one(model, encoder_tokenizer, decoder_tokenizer, texts: list[str], **settings) -> list[str]:
    """What a summarising front end should return: each text alone (no padding) through
    `model.generate(**settings)`, decoded without special tokens, whitespace collapsed to one line."""
    out = []
    for text in texts:
        enc = encoder_tokenizer([text], truncation=True, return_tensors="pt")
        ids = model.generate(enc["input_ids"], attention_mask=enc["attention_mask"], **settings)
        out.append(" ".join(decoder_tokenizer.decode(ids[0], skip_special_tokens=True).split()))
    return out


# Decoder-only LM families: transformers' config kwargs of a tiny random model each. Grouped-query
# attention everywhere; llama3 adds biases and Llama 3.1's RoPE scaling, qwen3 q/k norms and a head
# size unlike hidden/heads, gemma2 sandwich norms, soft-capping and a 3-token sliding window.
_LM = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
           pad_token_id=0)
TINY_LMS = {
    "llama": ("llama", dict(_LM, rope_parameters={"rope_type": "default", "rope_theta": 500.0})),
    "llama3": ("llama", dict(_LM, attention_bias=True, mlp_bias=True, tie_word_embeddings=True, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16})),
    "qwen2": ("qwen2", dict(_LM, tie_word_embeddings=True,
                            rope_parameters={"rope_type": "default", "rope_theta": 1e4})),
    "qwen3": ("qwen3", dict(_LM, head_dim=16, num_key_value_heads=1)),
    "gemma2": ("gemma2", dict(_LM, head_dim=16, num_hidden_layers=3, query_pre_attn_scalar=12, sliding_window=3,
                              attn_logit_softcapping=5.0, final_logit_softcapping=3.0)),
}
LM_CLASSES = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3", "gemma2": "Gemma2"}


def reference_lm(name: str, head: bool = True, seed: int = 0, std: float = 0.2, **overrides):
    """transformers' tiny <Family>ForCausalLM (or <Family>Model) with spread weights, norms included
    (so that RMSNorm weights and biases matter), eager attention, eval mode. `overrides`: config
    fields (vocab_size, max_position_embeddings, special ids) for folders that meet a real tokenizer."""
    import transformers

    model_type, kwargs = TINY_LMS[name]
    prefix = LM_CLASSES[model_type]
    config = getattr(transformers, f"{prefix}Config")(**{**kwargs, **overrides})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, f"{prefix}ForCausalLM" if head else f"{prefix}Model")(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if p.dim() == 1 and model_type != "gemma2" else 0.0))
    return model


def lm_batch(batch: int = 3, length: int = 9, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with right padding inside the batch."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 98, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, length - 3:] = 0
    mask[2, 5:] = 0
    return ids.masked_fill(mask == 0, 0), mask

# ModernBERT encoders: 4 layers (global, local, local, global), a local window of 4 (2 keys either side)
# shorter than the 14-token batches of `lm_batch(length=14)`, different global and local RoPE thetas.
# "biased" turns on every bias ModernBERT can have; "published" keeps them off, as answerdotai's are.
_MODERNBERT = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=4, num_attention_heads=4,
                   local_attention=4, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                   cls_token_id=1, sep_token_id=2, global_rope_theta=500.0, local_rope_theta=40.0)
TINY_MODERNBERTS = {
    "published": _MODERNBERT,
    "biased": dict(_MODERNBERT, norm_bias=True, attention_bias=True, mlp_bias=True),
}


def reference_modernbert(name: str = "published", masked_lm: bool = False, seed: int = 0, std: float = 0.3,
                         **overrides):
    """transformers' tiny ModernBertModel (or ModernBertForMaskedLM) with spread weights, norms around 1
    and biases around 0 (so that each matters), eager attention, eval mode."""
    import transformers

    config = transformers.ModernBertConfig(**{**TINY_MODERNBERTS[name], **overrides})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = (transformers.ModernBertForMaskedLM if masked_lm else transformers.ModernBertModel)(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if "norm.weight" in key else 0.0))
    return model

# ModernBERT decoders (Ettin): ModernBERT's tiny shape, causal; local layers see the `local_attention // 2` = 2
# newest keys, fewer than the 14-token batches hold. "biased" turns on every bias the family can have, a head
# activation unlike the layers' (silu) and an untied vocabulary projection; "published" keeps transformers'
# defaults (tied, with a vocabulary bias), as Ettin's are.
TINY_MODERNBERT_DECODERS = {
    "published": _MODERNBERT,
    "biased": dict(_MODERNBERT, norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True,
                   classifier_activation="silu", tie_word_embeddings=False),
}


def reference_modernbert_decoder(name: str = "published", head: bool = True, seed: int = 0, std: float = 0.3,
                                 **overrides):
    """transformers' tiny ModernBertDecoderForCausalLM (or ModernBertDecoderModel) with spread weights, norms
    around 1 and biases around 0 (so that each matters), eager attention, eval mode."""
    import transformers

    config = transformers.ModernBertDecoderConfig(**{**TINY_MODERNBERT_DECODERS[name], **overrides})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    cls = transformers.ModernBertDecoderForCausalLM if head else transformers.ModernBertDecoderModel
    model = cls(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if "norm.weight" in key else 0.0))
    return model
