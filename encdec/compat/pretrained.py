"""What transformers' PreTrainedModel gives every model class, shared by EncoderDecoderModel and the
single-model class names: from_pretrained's loading options, parameter counts, the output
embeddings view and the cache argument's two names."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from encdec.nn.backbone import Backbone
from encdec.nn.config import check_setting


def cache_argument(past_key_values: Any, cache: Any) -> Any:
    """transformers 5 names the cache argument `cache`; `past_key_values` is the older name. Either."""
    if past_key_values is not None and cache is not None:
        raise ValueError("Pass the cache as past_key_values= or cache=, not both.")
    return cache if cache is not None else past_key_values


def output_embeddings(decoder: Backbone) -> SimpleNamespace:
    """The vocabulary projection: `.weight` (V, C), the word embeddings unless tie_word_embeddings=False, and
    `.bias`."""
    return SimpleNamespace(weight=decoder.output_embeddings(), bias=decoder.head.bias)


def count_parameters(module: nn.Module, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
    """Distinct parameters (shared ones counted once), as transformers' num_parameters."""
    skip = set()
    if exclude_embeddings:
        skip = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    params = {id(p): p for p in module.parameters() if id(p) not in skip}.values()
    return sum(p.numel() for p in params if p.requires_grad or not only_trainable)


_LOAD_OPTIONS = ("dtype", "torch_dtype", "device_map", "attn_implementation", "output_loading_info",
                 "low_cpu_mem_usage", "trust_remote_code", "use_safetensors", "local_files_only", "revision")


def split_load_options(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """from_pretrained's kwargs -> (loading options, config overrides)."""
    return ({k: v for k, v in kwargs.items() if k in _LOAD_OPTIONS},
            {k: v for k, v in kwargs.items() if k not in _LOAD_OPTIONS})


def apply_load_options(model: nn.Module, options: dict[str, Any]) -> nn.Module:
    """dtype / torch_dtype ("auto" keeps float32), device_map (one device, or "auto": CUDA when
    there is one), attn_implementation ("sdpa" or "eager": the same numbers here)."""
    dtype = options.get("dtype", options.get("torch_dtype"))
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"dtype {options.get('dtype', options.get('torch_dtype'))!r} is not a torch dtype; "
                             "use e.g. torch.float16.")
    if isinstance(dtype, torch.dtype):
        model.to(dtype)
    device = options.get("device_map")
    if isinstance(device, dict):
        raise ValueError("device_map as a dict (layers split over devices) is not supported; "
                         "pass one device, e.g. 'cuda:0'.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device is not None:
        model.to(torch.device(device) if not isinstance(device, int) else torch.device("cuda", device))
    implementation = options.get("attn_implementation")
    check_setting("attn_implementation", implementation)
    if implementation is not None:
        model.config._attn_implementation = implementation
    return model
