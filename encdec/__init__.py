"""encdec: encoder-decoder transformers in plain PyTorch, Hugging Face compatible.

Names are imported on first use (PEP 562), so `import encdec.preflight` or `train.py --help` does
not pay for torch; `from encdec import EncoderDecoderModel` works as usual.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "BackboneConfig": "encdec.config", "BertConfig": "encdec.config", "EncoderDecoderConfig": "encdec.config",
    "GPT2Config": "encdec.config", "RobertaConfig": "encdec.config", "GenerationConfig": "encdec.generation",
    "register_mirror": "encdec.hub", "resolve_model_dir": "encdec.hub", "EncoderDecoderModel": "encdec.model",
    "Seq2SeqLMOutput": "encdec.outputs", "shift_right": "encdec.model", "Summarizer": "encdec.summarize",
    "Tokenizer": "encdec.tokenizer", "load_tokenizer": "encdec.tokenizer", "Cache": "encdec.explicit",
    "BaseModelOutput": "encdec.outputs", "CausalLMOutput": "encdec.outputs", "ModelOutput": "encdec.outputs",
    **{name: "encdec.config" for name in (
        "XLMRobertaConfig", "CamembertConfig", "BertGenerationConfig", "ElectraConfig", "DistilBertConfig")},
    # transformers' single-model class names (encdec.transformers_names.CLASSES)
    **{name: "encdec.transformers_names" for name in (
        "BertModel", "BertLMHeadModel", "RobertaModel", "RobertaForCausalLM", "XLMRobertaModel", "XLMRobertaForCausalLM",
        "CamembertModel", "CamembertForCausalLM", "BertGenerationEncoder", "BertGenerationDecoder", "ElectraModel",
        "ElectraForCausalLM", "DistilBertModel", "GPT2LMHeadModel")},
}
# transformers' tokenizer class names, so code from its documentation ports by changing the import.
_TOKENIZER_ALIASES = ("AutoTokenizer", "BertTokenizer", "RobertaTokenizer", "GPT2Tokenizer")

__all__ = sorted([*_EXPORTS, *_TOKENIZER_ALIASES, "summarize"])


def __getattr__(name: str) -> Any:
    if name in _TOKENIZER_ALIASES:
        return __getattr__("Tokenizer")
    if name == "summarize":  # the function, not the submodule of the same name
        return importlib.import_module("encdec.summarize").summarize
    if name not in _EXPORTS:
        raise AttributeError(f"module 'encdec' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps `encdec.summarize` the function: importing the submodule of the same name would
    otherwise rebind the package attribute to the module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "summarize" and isinstance(value, types.ModuleType):
            value = value.summarize
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
