"""encdec: encoder-decoder transformers in plain PyTorch, Hugging Face compatible.

Names are imported on first use (PEP 562), so `import encdec.apps.preflight` or `train.py --help`
does not pay for torch; `from encdec import EncoderDecoderModel` works as usual. transformers' class
names of each family (`BertConfig`, `BertModel`, `GPT2LMHeadModel`, ...) come from its `FAMILIES`
row (encdec.nn.families), so a new family adds its names there and nowhere else.
"""

from __future__ import annotations

import importlib
from typing import Any

from encdec.nn.families import FAMILIES

# public name -> the module that defines it
_EXPORTS = {
    "BackboneConfig": "encdec.nn.config", "EncoderDecoderConfig": "encdec.nn.config",
    "GenerationConfig": "encdec.generation.settings", "register_mirror": "encdec.base.hub",
    "resolve_model_dir": "encdec.base.hub", "EncoderDecoderModel": "encdec.model", "shift_right": "encdec.model",
    "Summarizer": "encdec.serving.summarizer", "summarize": "encdec.serving.summarizer",
    "pipeline": "encdec.serving.pipeline", "AutoModel": "encdec.serving.auto",
    "AutoModelForSeq2SeqLM": "encdec.serving.auto", "AutoModelForCausalLM": "encdec.serving.auto",
    "Tokenizer": "encdec.tokenization.tokenizer", "load_tokenizer": "encdec.tokenization.tokenizer",
    "Cache": "encdec.compat.explicit", "BaseModelOutput": "encdec.compat.outputs",
    "CausalLMOutput": "encdec.compat.outputs", "ModelOutput": "encdec.compat.outputs",
    "Seq2SeqLMOutput": "encdec.compat.outputs",
    **{family.hf_config: "encdec.compat.configs" for family in FAMILIES.values()},
    **{name: "encdec.compat.single_models" for family in FAMILIES.values()
       for name in (family.hf_encoder, family.hf_decoder) if name is not None},
}
# transformers' tokenizer class names, so code from its documentation ports by changing the import.
_TOKENIZER_ALIASES = ("AutoTokenizer", "BertTokenizer", "RobertaTokenizer", "GPT2Tokenizer")

__all__ = sorted([*_EXPORTS, *_TOKENIZER_ALIASES])


def __getattr__(name: str) -> Any:
    if name in _TOKENIZER_ALIASES:
        return __getattr__("Tokenizer")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'encdec' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
