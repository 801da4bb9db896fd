"""Weight files and the Hugging Face key maps.

Our modules keep their own short names; HF names exist only in the tables below. A `Rule` maps one
of our tensors to one or more HF tensors (BERT's separate query/key/value become our fused `qkv`),
transposed where GPT-2 stores Conv1D weights as (in, out).
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from encdec.config import BackboneConfig

WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)
# Buffers and tied duplicates that checkpoints carry and we derive instead.
_DERIVED_SUFFIXES = (
    "position_ids", "embeddings.token_type_ids", "attn.bias", "attn.masked_bias",
    "crossattention.bias", "crossattention.masked_bias",
    "cls.predictions.decoder.weight", "lm_head.decoder.weight", "lm_head.weight",
)


@dataclass(frozen=True)
class Rule:
    ours: str
    theirs: tuple[str, ...]
    transpose: bool = False


# ---------------------------------------------------------------- reading and writing weight files


def read_state_dict(folder: Path) -> dict[str, Tensor]:
    """All tensors of a model folder: safetensors or .bin, single file or sharded with an index."""
    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            if name.endswith(".index.json"):
                shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
                return {k: v for shard in shards for k, v in _read_file(folder / shard).items()}
            return _read_file(path)
    raise FileNotFoundError(
        f"No weights in {folder}: looked for {', '.join(WEIGHT_FILES)}. "
        "Point to a folder written by save_pretrained (ours or transformers')."
    )


def _read_file(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"Weight shard {path} named in the index is missing; re-download the model.")
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds Python objects besides tensors; encdec loads .bin files with "
            "torch.load(weights_only=True) so a checkpoint cannot run code. Convert it to safetensors "
            "in a trusted environment."
        ) from err
    except (SafetensorError, RuntimeError, EOFError, OSError) as err:
        raise ValueError(
            f"Could not read {path}: the file is corrupt or truncated ({err}). Re-download or re-save it."
        ) from err


def _umask_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_safetensors(state: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write atomically (temp file + rename), so an interrupted save never leaves a broken file."""
    state = {k: v.detach().contiguous().clone() for k, v in state.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata or {"format": "pt"})
        os.chmod(tmp, _umask_file_mode())  # mkstemp makes 0600; other files get the umask's mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------- key maps, one table per family


def _linear(ours: str, *theirs: str, transpose: bool = False) -> list[Rule]:
    return [
        Rule(f"{ours}.weight", tuple(f"{t}.weight" for t in theirs), transpose),
        Rule(f"{ours}.bias", tuple(f"{t}.bias" for t in theirs)),
    ]


def _bert_layer(i: int, p: str, cross: bool) -> list[Rule]:
    h, o = f"{p}encoder.layer.{i}.", f"layers.{i}."
    rules = [
        *_linear(o + "self_attn.qkv", *(f"{h}attention.self.{n}" for n in ("query", "key", "value"))),
        *_linear(o + "self_attn.out", h + "attention.output.dense"),
        *_linear(o + "self_attn_norm", h + "attention.output.LayerNorm"),
        *_linear(o + "mlp.fc_in", h + "intermediate.dense"),
        *_linear(o + "mlp.fc_out", h + "output.dense"),
        *_linear(o + "mlp_norm", h + "output.LayerNorm"),
    ]
    if cross:
        rules += [
            *_linear(o + "cross_attn.q", h + "crossattention.self.query"),
            *_linear(o + "cross_attn.kv", h + "crossattention.self.key", h + "crossattention.self.value"),
            *_linear(o + "cross_attn.out", h + "crossattention.output.dense"),
            *_linear(o + "cross_attn_norm", h + "crossattention.output.LayerNorm"),
        ]
    return rules


def _bert_stack(config: BackboneConfig, p: str, ours: str) -> list[Rule]:
    rules = [
        Rule("embeddings.word.weight", (f"{p}embeddings.word_embeddings.weight",)),
        Rule("embeddings.position.weight", (f"{p}embeddings.position_embeddings.weight",)),
        Rule("embeddings.token_type.weight", (f"{p}embeddings.token_type_embeddings.weight",)),
        *_linear("embeddings.norm", f"{p}embeddings.LayerNorm"),
    ]
    for i in range(config.num_hidden_layers):
        rules += _bert_layer(i, p, config.add_cross_attention)
    if not config.is_decoder:
        rules += _linear("pooler", f"{p}pooler.dense")
    return [Rule(ours + r.ours, r.theirs, r.transpose) for r in rules]


def _bert_head(config: BackboneConfig) -> list[Rule]:
    if config.model_type == "roberta":
        return [*_linear("head.dense", "lm_head.dense"), *_linear("head.norm", "lm_head.layer_norm"),
                Rule("head.bias", ("lm_head.bias",))]
    return [
        *_linear("head.dense", "cls.predictions.transform.dense"),
        *_linear("head.norm", "cls.predictions.transform.LayerNorm"),
        Rule("head.bias", ("cls.predictions.bias",)),
    ]


def _gpt2(config: BackboneConfig) -> list[Rule]:
    rules = [
        Rule("wte.weight", ("transformer.wte.weight",)),
        Rule("wpe.weight", ("transformer.wpe.weight",)),
        *_linear("final_norm", "transformer.ln_f"),
    ]
    for i in range(config.num_hidden_layers):
        h, o = f"transformer.h.{i}.", f"layers.{i}."
        rules += [
            *_linear(o + "self_attn_norm", h + "ln_1"),
            *_linear(o + "self_attn.qkv", h + "attn.c_attn", transpose=True),
            *_linear(o + "self_attn.out", h + "attn.c_proj", transpose=True),
            *_linear(o + "mlp_norm", h + "ln_2"),
            *_linear(o + "mlp.fc_in", h + "mlp.c_fc", transpose=True),
            *_linear(o + "mlp.fc_out", h + "mlp.c_proj", transpose=True),
        ]
        if config.add_cross_attention:
            rules += [
                *_linear(o + "cross_attn_norm", h + "ln_cross_attn"),
                *_linear(o + "cross_attn.q", h + "crossattention.q_attn", transpose=True),
                *_linear(o + "cross_attn.kv", h + "crossattention.c_attn", transpose=True),
                *_linear(o + "cross_attn.out", h + "crossattention.c_proj", transpose=True),
            ]
    return rules


def base_prefix(config: BackboneConfig) -> str:
    """The attribute transformers' LM-head class keeps its base model under."""
    return {"bert": "bert.", "roberta": "roberta.", "gpt2": "transformer."}[config.model_type]


def backbone_rules(config: BackboneConfig) -> list[Rule]:
    """Rules between our backbone module and transformers' BertModel (encoder) or
    *LMHeadModel (decoder) layout."""
    if config.model_type == "gpt2":
        if not config.is_decoder:
            raise ValueError("GPT-2 is supported as a decoder only; pick a BERT or RoBERTa encoder.")
        return _gpt2(config)
    if not config.is_decoder:
        return _bert_stack(config, "", "")
    return _bert_stack(config, base_prefix(config), "stack.") + _bert_head(config)


def prefixed(rules: list[Rule], ours: str, theirs: str) -> list[Rule]:
    return [Rule(ours + r.ours, tuple(theirs + t for t in r.theirs), r.transpose) for r in rules]


# ---------------------------------------------------------------- applying the maps


def is_derived(key: str) -> bool:
    return key.endswith(_DERIVED_SUFFIXES)


def from_hf(hf: dict[str, Tensor], rules: list[Rule]) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """HF tensors -> ours. Returns (state, our keys with no source, HF keys nothing used)."""
    state, missing, used = {}, [], set()
    for rule in rules:
        if not all(t in hf for t in rule.theirs):
            missing.append(rule.ours)
            continue
        parts = [hf[t].t() if rule.transpose else hf[t] for t in rule.theirs]
        state[rule.ours] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        used.update(rule.theirs)
    unused = sorted(k for k in hf if k not in used and not is_derived(k))
    return state, missing, unused


def to_hf(state: dict[str, Tensor], rules: list[Rule]) -> dict[str, Tensor]:
    """Ours -> HF tensors, splitting fused projections and transposing Conv1D weights back."""
    hf = {}
    for rule in rules:
        if rule.ours not in state:
            continue
        for name, part in zip(rule.theirs, state[rule.ours].chunk(len(rule.theirs), dim=0)):
            hf[name] = part.t() if rule.transpose else part
    return hf


def canonical_single_model_keys(hf: dict[str, Tensor], config: BackboneConfig) -> dict[str, Tensor]:
    """Bring a single-model checkpoint (BertModel, BertForPreTraining, sentence-transformers,
    GPT2Model, ...) into the layout `backbone_rules` expects: base-model prefix present for
    decoders and absent for encoders."""
    out = {}
    for key, value in normalize_keys(hf).items():
        for p in ("bert.", "roberta.", "transformer.", "model."):
            if key.startswith(p):
                key = key[len(p):]
                break
        if config.is_decoder and not key.startswith(("cls.", "lm_head.")):
            key = base_prefix(config) + key
        out[key] = value
    return out


def normalize_keys(hf: dict[str, Tensor]) -> dict[str, Tensor]:
    """Old spellings to current ones: LayerNorm gamma/beta, and the head bias that some
    checkpoints store only under its tied alias `...decoder.bias`."""
    out = {_rename_gamma_beta(k): v for k, v in hf.items()}
    for key in [k for k in out if k.endswith(("cls.predictions.decoder.bias", "lm_head.decoder.bias"))]:
        out.setdefault(key.replace("decoder.bias", "bias"), out[key])
        del out[key]
    return out


def _rename_gamma_beta(key: str) -> str:
    if key.endswith(".gamma"):
        return key[: -len(".gamma")] + ".weight"
    if key.endswith(".beta"):
        return key[: -len(".beta")] + ".bias"
    return key
