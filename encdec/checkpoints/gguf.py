"""GGUF files (llama.cpp's one-file format) read as the Hugging Face Llama folder they came from.

`read_gguf(path)` gives what such a folder holds: the `config.json` dict, float32 weights under
transformers' key names and a `tokenizer.json`; `write_hf_folder(path, folder)` writes them, so the
folder loads in encdec and in any code that reads Hugging Face folders. The `gguf` package (the
`gguf` extra: numpy only, nothing compiled) parses the file and dequantises the blocks; turning
llama.cpp's layout back into transformers' is done here.

    python -m encdec.checkpoints.gguf SmolLM2-135M-Instruct.Q4_1.gguf smollm2-135m-instruct/
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from torch import Tensor

from encdec.base.errors import UsageError
from encdec.checkpoints.files import write_safetensors

SUPPORTED_ARCHITECTURES = ("llama",)
INSTALL_HINT = 'pip install "encdec[gguf]"'

# llama.cpp's tensor names -> transformers' LlamaForCausalLM names.
_TOP_LEVEL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_PER_LAYER = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
_UNKNOWN, _CONTROL, _USER_DEFINED = 2, 3, 4

# tokenizer.ggml.pre -> how text is split before byte-level BPE, as the model's own tokenizer.json
# does (llama.cpp picks its split regexes by the same name).
_PRE_TOKENIZERS = {
    "gpt2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    # SmolLM / SmolLM2 (StarCoder's tokenizer): every digit alone, then GPT-2's split.
    "smollm": lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ]),
}


@dataclass
class GgufModel:
    """A GGUF file's contents in Hugging Face form: what `write_hf_folder` writes."""

    config: dict[str, Any]
    state_dict: dict[str, Tensor]
    tokenizer: Tokenizer | None = None
    tokenizer_config: dict[str, Any] = field(default_factory=dict)
    special_tokens_map: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)  # the file's key-values, token lists aside

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the Hugging Face folder: config.json, model.safetensors and, when read with the
        tokenizer, tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / "config.json", self.config)
        write_safetensors(self.state_dict, folder / "model.safetensors")
        if self.tokenizer is not None:
            self.tokenizer.save(str(folder / "tokenizer.json"))
            _write_json(folder / "tokenizer_config.json", self.tokenizer_config)
            _write_json(folder / "special_tokens_map.json", self.special_tokens_map)
        return folder


def read_gguf(path: str | Path, *, tokenizer: bool = True) -> GgufModel:
    """The config, the float32 state dict and (unless `tokenizer=False`) the tokenizer of a GGUF file."""
    gguf = _import_gguf()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} not found.")
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as err:
        raise UsageError(f"{path} is not a readable GGUF file ({err}).") from None
    meta = _metadata(reader)
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UsageError(
            f"{path.name} holds a {arch!r} model; encdec reads GGUF files of architecture "
            f"{', '.join(map(repr, SUPPORTED_ARCHITECTURES))} only."
        )
    tensors = {t.name: t for t in reader.tensors}
    config = _llama_config(meta, tensors, path)
    model = GgufModel(config, {}, metadata={k: v for k, v in meta.items() if not k.startswith("tokenizer.ggml.")})
    if tokenizer:  # before the weights: an unsupported tokenizer fails in milliseconds
        model.tokenizer = _tokenizer(meta, path)
        model.tokenizer_config, model.special_tokens_map = _tokenizer_config(meta, model.tokenizer)
    model.state_dict = _llama_state_dict(tensors, config, path, gguf)
    return model


def write_hf_folder(gguf_path: str | Path, folder: str | Path, *, tokenizer: bool = True) -> Path:
    """Write a GGUF file as a Hugging Face model folder: config.json, model.safetensors (float32) and,
    unless `tokenizer=False`, tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    return read_gguf(gguf_path, tokenizer=tokenizer).save_pretrained(folder)


# ---- the file ----------------------------------------------------------------------------------

def _import_gguf() -> Any:
    try:
        import gguf
        import gguf.quants  # noqa: F401  (dequantize lives here)
    except ImportError:
        raise UsageError(f"Reading GGUF files needs the gguf package: {INSTALL_HINT}") from None
    return gguf


def _metadata(reader: Any) -> dict[str, Any]:
    """Every key-value of the file as Python values (strings, numbers, lists)."""
    from gguf import GGUFValueType

    def value(part: np.ndarray, kind: GGUFValueType) -> Any:
        return part.tobytes().decode("utf-8") if kind == GGUFValueType.STRING else part[0].item()

    meta = {}
    for key, entry in reader.fields.items():
        if not entry.types:
            continue
        if entry.types[0] == GGUFValueType.ARRAY:
            meta[key] = [value(entry.parts[i], entry.types[-1]) for i in entry.data]
        else:
            meta[key] = value(entry.parts[entry.data[0]], entry.types[0])
    return meta


def _f32(number: float) -> float:
    """A float32 metadata value as the decimal it was written from (1e-05, not 9.9999997e-06)."""
    return float(str(np.float32(number)))


def _llama_config(meta: dict[str, Any], tensors: dict[str, Any], path: Path) -> dict[str, Any]:
    """config.json as transformers 5 writes it for LlamaForCausalLM (plus the flat rope_theta
    that transformers 4 reads)."""
    arch = meta["general.architecture"]

    def get(key: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if isinstance(value, list):
            raise UsageError(f"{path.name}: {arch}.{key} differs per layer, which a Llama config cannot hold.")
        if value is None:
            raise UsageError(f"{path.name} lacks {arch}.{key}; the file is incomplete.")
        return value

    hidden, heads = get("embedding_length"), get("attention.head_count")
    head_dim = get("attention.key_length", hidden // heads)
    if get("rope.dimension_count", head_dim) != head_dim:
        raise UsageError(f"{path.name} rotates only part of each head, which Llama models do not do.")
    if "rope_freqs.weight" in tensors:
        raise UsageError(
            f"{path.name} scales rotary frequencies with a rope_freqs tensor (Llama 3.1+ 'llama3' rope "
            "scaling), which a GGUF does not describe fully; convert it from the original Hugging Face folder."
        )
    theta = _f32(get("rope.freq_base", 10000.0))
    rope = {"rope_type": "default", "rope_theta": theta}
    scaling = get("rope.scaling.type", "none")
    if scaling == "linear":
        rope = {"rope_type": "linear", "factor": _f32(get("rope.scaling.factor")), "rope_theta": theta}
    elif scaling != "none":
        raise UsageError(f"{path.name} uses {scaling!r} rope scaling; encdec reads GGUF files with none or linear.")
    token_ids = {
        f"{role}_token_id": meta[f"tokenizer.ggml.{key}_token_id"]
        for role, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"))
        if f"tokenizer.ggml.{key}_token_id" in meta
    }
    vocab_size = meta.get(f"{arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens", ())) or int(
        tensors["token_embd.weight"].shape[-1]
    )
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": get("feed_forward_length"),
        "num_hidden_layers": get("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": get("attention.head_count_kv", heads),
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": get("context_length", 2048),
        "rms_norm_eps": _f32(get("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_parameters": rope,
        "rope_theta": theta,
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "mlp_bias": "blk.0.ffn_up.bias" in tensors,
        "tie_word_embeddings": "output.weight" not in tensors,
        **token_ids,
        "dtype": "float32",
    }
    if rope["rope_type"] != "default":
        config["rope_scaling"] = dict(rope)  # where transformers 4 looks for it
    return config


def _hf_name(name: str) -> str | None:
    """transformers' key for a llama.cpp tensor name; None when llama.cpp's Llama has no such tensor."""
    stem, _, suffix = name.rpartition(".")
    if stem in _TOP_LEVEL and suffix in ("weight", "bias"):
        return f"{_TOP_LEVEL[stem]}.{suffix}"
    match = _LAYER_TENSOR.fullmatch(name)
    if match and match[2] in _PER_LAYER:
        return f"model.layers.{match[1]}.{_PER_LAYER[match[2]]}.{match[3]}"
    return None


def _unpermute(rows: np.ndarray, heads: int) -> np.ndarray:
    """Undo the row order llama.cpp's converter gives q_proj and k_proj (weights and biases).

    transformers rotates each head's first half against its second half (`rotate_half`); llama.cpp
    rotates neighbouring pairs, so its converter reorders every head's rows from (2, head_dim/2) to
    (head_dim/2, 2). Reading the rows back as (head_dim/2, 2) and swapping restores the original.
    """
    half = rows.shape[0] // heads // 2
    return rows.reshape(heads, half, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _llama_state_dict(tensors: dict[str, Any], config: dict[str, Any], path: Path, gguf: Any) -> dict[str, Tensor]:
    """Every tensor dequantised to float32, renamed, q/k rows restored; lm_head only when untied."""
    unknown = sorted(name for name in tensors if _hf_name(name) is None)
    if unknown:
        raise UsageError(
            f"{path.name} holds tensors a Llama model does not have ({', '.join(unknown[:5])}"
            f"{', ...' if len(unknown) > 5 else ''}); it is not a plain Llama checkpoint."
        )
    readable = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, *_dequantizable(gguf)}
    unreadable = sorted({t.tensor_type.name for t in tensors.values() if t.tensor_type not in readable})
    if unreadable and _dequantizable(gguf):
        raise UsageError(
            f"{path.name} stores tensors as {', '.join(unreadable)}, which the gguf package cannot dequantise; "
            f"readable types: {', '.join(sorted(t.name for t in readable))}."
        )
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    state = {}
    for name, tensor in tensors.items():
        try:
            values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError:
            raise UsageError(
                f"{path.name}: tensor {name} is stored as {tensor.tensor_type.name}, which the gguf package "
                "cannot dequantise."
            ) from None
        values = np.array(values, dtype=np.float32).reshape([int(n) for n in reversed(tensor.shape)])
        kind = name.split(".")[-2]
        if kind in heads:
            values = _unpermute(values, heads[kind])
        state[_hf_name(name)] = torch.from_numpy(values)
    return state


def _dequantizable(gguf: Any) -> set[Any]:
    """The block types the installed gguf package dequantises (empty if it does not say)."""
    return set(getattr(gguf.quants, "_type_traits", {}))


# ---- the tokenizer -----------------------------------------------------------------------------

def _tokenizer(meta: dict[str, Any], path: Path) -> Tokenizer:
    """The byte-level BPE tokenizer.json the GGUF's vocabulary, merges and token types came from."""
    kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre", "gpt2")
    if kind != "gpt2" or pre not in _PRE_TOKENIZERS:
        raise UsageError(
            f"{path.name} has a {kind!r} tokenizer with pre-tokenizer {pre!r}; encdec builds byte-level BPE "
            f"('gpt2') tokenizers with pre-tokenizer {', '.join(map(repr, _PRE_TOKENIZERS))}. "
            "Pass tokenizer=False to read only the config and weights."
        )
    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(merge.split(" ")) for merge in meta.get("tokenizer.ggml.merges", [])]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tokenizer.pre_tokenizer = _PRE_TOKENIZERS[pre]()
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = _post_processor(meta, tokens)
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    tokenizer.add_special_tokens([
        AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k in (_UNKNOWN, _CONTROL)
    ])
    tokenizer.add_tokens([
        AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == _USER_DEFINED
    ])
    return tokenizer


def _post_processor(meta: dict[str, Any], tokens: list[str]) -> Any:
    """BOS/EOS around each sequence where the file asks for them, else only byte-level offsets."""
    ends = {
        role: tokens[meta[f"tokenizer.ggml.{role}_token_id"]]
        for role in ("bos", "eos")
        if meta.get(f"tokenizer.ggml.add_{role}_token") and f"tokenizer.ggml.{role}_token_id" in meta
    }
    if not ends:
        return processors.ByteLevel(trim_offsets=False)
    first, last = [ends["bos"]] if "bos" in ends else [], [ends["eos"]] if "eos" in ends else []
    return processors.TemplateProcessing(
        single=[*first, "$A", *last],
        pair=[*first, "$A", *last, *first, "$B:1", *last],
        special_tokens=[(t, tokens.index(t)) for t in {*first, *last}],
    )


def _tokenizer_config(meta: dict[str, Any], tokenizer: Tokenizer) -> tuple[dict[str, Any], dict[str, str]]:
    """tokenizer_config.json and special_tokens_map.json for the tokenizer built from the file."""
    tokens = meta["tokenizer.ggml.tokens"]
    specials = {
        f"{role}_token": tokens[meta[f"tokenizer.ggml.{key}_token_id"]]
        for role, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding"))
        if f"tokenizer.ggml.{key}_token_id" in meta
    }
    added = {
        str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized, "rstrip": t.rstrip,
                 "single_word": t.single_word, "special": t.special}
        for i, t in sorted(tokenizer.get_added_tokens_decoder().items())
    }
    arch = meta["general.architecture"]
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": meta.get(f"{arch}.context_length", 2048),
        **specials,
        "added_tokens_decoder": added,
    }
    if "tokenizer.chat_template" in meta:
        config["chat_template"] = meta["tokenizer.chat_template"]
    return config, specials


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """`python -m encdec.checkpoints.gguf FILE.gguf FOLDER`: write the Hugging Face folder."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m encdec.checkpoints.gguf FILE.gguf FOLDER", file=sys.stderr)
        return 2
    try:
        folder = write_hf_folder(args[0], args[1])
    except (UsageError, FileNotFoundError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
