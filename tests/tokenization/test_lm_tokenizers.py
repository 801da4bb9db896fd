"""tokenizer.json folders of today's LMs (Llama 3, Qwen, SmolLM2, Gemma: byte-level BPE with added
special tokens named in tokenizer_config.json) give transformers' ids, special tokens and decoding;
a composed model takes its start, end and pad ids from such an LM's config."""

from __future__ import annotations

import json

import pytest
from tiny_models import corpus

from encdec import load_tokenizer

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXTS = ["<|im_start|>Summarise: the river flooded twice.<|im_end|>", "Café déjà vu, 2024!  Two  spaces.",
         "plain words only"]


# Qwen2's pre-tokenizer regex (digits one by one), as its tokenizer.json and transformers' class use it.
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s+(?!\S)|\s+")


@pytest.fixture(scope="module", params=["Qwen2Tokenizer", "PreTrainedTokenizerFast"])
def lm_folder(request, tmp_path_factory):
    """A Qwen-style folder (Qwen2Tokenizer, Qwen's split) or a Llama-3-style one (the generic fast
    class, GPT-2's split): tokenizer.json (byte-level BPE, specials as added tokens, no BOS added) and
    tokenizer_config.json with added_tokens_decoder, eos and pad."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("lm_tok")
    tok = Tokenizer(models.BPE())
    if request.param == "Qwen2Tokenizer":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(200) + TEXTS, trainer)
    tok.save(str(folder / "tokenizer.json"))
    added = {str(tok.token_to_id(t)): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                                        "normalized": False, "single_word": False} for t in SPECIALS}
    config = {"tokenizer_class": request.param, "added_tokens_decoder": added, "bos_token": None,
              "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "model_max_length": 131072}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def test_ids_special_tokens_and_decoding_equal_transformers(lm_folder):
    import transformers

    ours, theirs = load_tokenizer(lm_folder), transformers.AutoTokenizer.from_pretrained(lm_folder)
    for text in TEXTS:
        assert ours(text)["input_ids"] == theirs(text)["input_ids"], text
        ids = theirs(text)["input_ids"]
        assert ours.decode(ids) == theirs.decode(ids)
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)
    assert (ours.eos_token_id, ours.pad_token_id) == (theirs.eos_token_id, theirs.pad_token_id)
    assert ours.bos_token_id is None and theirs.bos_token_id is None
    assert ours.convert_tokens_to_ids("<|im_start|>") == theirs.convert_tokens_to_ids("<|im_start|>")
