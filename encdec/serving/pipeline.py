"""transformers' `pipeline("summarization", model=..., device=...)` on a Summarizer, so code from its
documentation ports by changing the import: documents in, `[{"summary_text": ...}]` out, one dict
per document, with the generation keywords the documentation passes (max_length, min_length,
num_beams, do_sample=False, ...).

As transformers' pipeline: one document per forward pass unless `batch_size` says otherwise, and
summaries decoded with `skip_special_tokens=True` and no clean-up of spaces unless asked. As
encdec's Summarizer (deliberate differences): a document longer than the encoder is truncated to
fit, with one warning, where transformers fails inside the model unless `truncation=True`; a blank
document gets "" without running the model.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

import torch

from encdec.base.errors import UsageError
from encdec.generation.processors import RULES
from encdec.generation.settings import field_names
from encdec.model import EncoderDecoderModel
from encdec.serving.devices import check_device
from encdec.serving.loading import load_summarizer
from encdec.serving.summarizer import Summarizer
from encdec.tokenization.tokenizer import Tokenizer, load_tokenizer

# task -> the prefix of the result keys ("summary" -> "summary_text", "summary_token_ids")
TASKS = {"summarization": "summary", "text2text-generation": "generated", "translation": "translation"}
_TRUNCATION = (True, False, None, "longest_first", "only_first", "do_not_truncate")


def task_key(task: str) -> str:
    """The result key prefix of a task; transformers' translation_xx_to_yy names are translation."""
    name = "translation" if task.startswith("translation_") else task
    if name not in TASKS:
        raise UsageError(f"Task {task!r} is not supported: encdec's pipeline runs encoder-decoder models on "
                         f"{', '.join(TASKS)} (or translation_xx_to_yy).")
    return TASKS[name]


def check_generate_kwargs(kwargs: dict[str, Any]) -> None:
    """Generation keywords are GenerationConfig fields or transformers' score rules; anything else
    is refused before any model loads."""
    unknown = sorted(set(kwargs) - field_names() - set(RULES) - {"generation_config"})
    if unknown:
        raise UsageError(f"Unknown pipeline argument(s) {unknown}; generation keywords are "
                         f"{', '.join(sorted(field_names() | set(RULES)))}.")


class Seq2SeqPipeline:
    """`pipe(documents, **generate_kwargs)` -> one `{"<key>_text": ...}` per document."""

    def __init__(self, task: str, summarizer: Summarizer, generate_kwargs: dict[str, Any] | None = None) -> None:
        self.task, self.key = task, task_key(task)
        self.summarizer = summarizer
        self.generate_kwargs = dict(generate_kwargs or {})
        check_generate_kwargs(self.generate_kwargs)

    @property
    def model(self) -> EncoderDecoderModel:
        return self.summarizer.model

    @property
    def tokenizer(self) -> Tokenizer:
        return self.summarizer.decoder_tokenizer

    @property
    def device(self) -> torch.device:
        return self.summarizer.device

    def __call__(
        self,
        documents: str | Iterable[str],
        *,
        return_text: bool = True,  # accepted as transformers does: text unless return_tensors
        return_tensors: bool = False,
        clean_up_tokenization_spaces: bool = False,
        truncation: bool | str | None = None,
        batch_size: int | None = None,
        **generate_kwargs: Any,
    ) -> list[dict[str, Any]]:
        """A string or a list of strings; `return_tensors=True` gives `<key>_token_ids` instead of text,
        as transformers. `truncation` is accepted and moot: documents are always fitted to the encoder."""
        if truncation not in _TRUNCATION:
            raise UsageError(f"truncation={truncation!r}: use True, False or a truncation strategy name.")
        check_generate_kwargs(generate_kwargs)
        single = isinstance(documents, str)
        if not single and not isinstance(documents, (list, tuple)):
            raise UsageError(f"Pass a string or a list of strings, not a {type(documents).__name__}.")
        kept = self.summarizer.batch_size
        self.summarizer.batch_size = kept if batch_size is None else _batch_size(batch_size)  # for this call
        try:
            rows = self.summarizer.summary_ids([documents] if single else list(documents),
                                               **{**self.generate_kwargs, **generate_kwargs})
        finally:
            self.summarizer.batch_size = kept
        if return_tensors:
            return [{f"{self.key}_token_ids": torch.tensor(row or [], dtype=torch.long)} for row in rows]
        return [{f"{self.key}_text": self._decode(row, clean_up_tokenization_spaces)} for row in rows]

    def _decode(self, row: list[int] | None, clean_up: bool) -> str:
        if row is None:
            return ""
        return self.tokenizer.decode(row, skip_special_tokens=True, clean_up_tokenization_spaces=clean_up)


def _batch_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"batch_size must be an integer >= 1, got {value!r}.")
    return value


def pipeline(
    task: str,
    model: str | os.PathLike | EncoderDecoderModel | None = None,
    tokenizer: str | os.PathLike | Tokenizer | None = None,
    device: str | int | torch.device | None = None,
    *,
    device_map: str | int | None = None,
    dtype: str | torch.dtype | None = None,
    torch_dtype: str | torch.dtype | None = None,
    batch_size: int = 1,
    **generate_kwargs: Any,
) -> Seq2SeqPipeline:
    """transformers' `pipeline(task, model=..., tokenizer=..., device=...)` for encoder-decoder
    models: a folder, Hub id or train.py .ckpt, or a loaded EncoderDecoderModel with `tokenizer=`.
    `device` takes torch names and transformers' numbers (0 is cuda:0, -1 the CPU); extra keywords
    become the default generation settings of every call."""
    task_key(task)
    check_generate_kwargs(generate_kwargs)
    if device is None and device_map == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = check_device(device if device is not None else device_map, "device")
    dtype = None if (dtype or torch_dtype) == "auto" else (dtype or torch_dtype)
    options = dict(device=device, dtype=dtype, batch_size=_batch_size(batch_size))
    if model is None:
        raise UsageError(f"pipeline({task!r}) needs model=: an encoder-decoder folder, Hub id or train.py .ckpt. "
                         "encdec has no default model (transformers' default is a BART checkpoint).")
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else tokenizer
    if isinstance(model, (str, os.PathLike)):
        summarizer = _load(model, tok, options)
    elif tok is None:
        raise UsageError(f"pipeline({task!r}, model=<a {type(model).__name__}>) needs tokenizer= as well "
                         "(a folder, Hub id or Tokenizer).")
    else:
        summarizer = Summarizer(model, tok, **options)
    return Seq2SeqPipeline(task, summarizer, generate_kwargs)


def _load(model: str | os.PathLike, tokenizer: Tokenizer | None, options: dict[str, Any]) -> Summarizer:
    """A Summarizer for a folder, Hub id or .ckpt; `tokenizer` replaces the one stored with it."""
    if tokenizer is None:
        return load_summarizer(model, **options)
    if str(model).endswith(".ckpt"):
        loaded = load_summarizer(model, **options)
        return Summarizer(loaded.model, tokenizer, batch_size=options["batch_size"])
    return Summarizer(EncoderDecoderModel.from_pretrained(model), tokenizer, **options)
