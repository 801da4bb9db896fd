"""Summarise documents with a loaded model: tokenise, batch by length, generate, decode, and hand
the summaries back in the input order.

Bad input never costs the other documents their summaries: an empty, whitespace-only or None
document gets the empty summary "" (the model is not run on it), and a document longer than the
encoder's positions is truncated to fit, with one log line per call naming how many were cut.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from encdec.checkpoints.resolve import resolve_model_folder
from encdec.model import EncoderDecoderModel
from encdec.serving.devices import DTYPE_NAMES, check_device, warn_if_slow_cpu_bf16
from encdec.serving.int8 import quantize_int8
from encdec.tokenization.tokenizer import Tokenizer, load_tokenizer

logger = logging.getLogger("encdec")
DTYPES = {name: getattr(torch, dtype) for name, dtype in DTYPE_NAMES.items()}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}, or int8 (CPU serving, not exact).")
    return DTYPES[dtype]


class Summarizer:
    """A model and its tokenizers, kept loaded: `Summarizer.from_pretrained(path)(texts)`."""

    def __init__(
        self,
        model: EncoderDecoderModel,
        encoder_tokenizer: Tokenizer,
        decoder_tokenizer: Tokenizer | None = None,
        device: str | int | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        device = check_device(device, "device")  # also transformers' 0 / -1
        if dtype == "int8":  # opt-in CPU serving: not exact (encdec.serving.int8)
            model = quantize_int8(model if device is None else model.to(device))
        elif device is not None or dtype is not None:
            model = model.to(device=device, dtype=parse_dtype(dtype))
        self.model = model.eval()
        if dtype != "int8" and parse_dtype(dtype) == torch.bfloat16 and self.device.type == "cpu":
            warn_if_slow_cpu_bf16()  # chosen, not guessed: bf16 is fast only with bf16 matrix units
        self.encoder_tokenizer = encoder_tokenizer
        self.decoder_tokenizer = decoder_tokenizer or encoder_tokenizer
        self.batch_size = batch_size
        self.max_source_length = min(encoder_tokenizer.model_max_length, model.config.encoder.max_positions)
        self._told: set[str] = set()  # truncation messages logged already (as warnings.warn showed each once)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> Summarizer:
        """Load the model and its tokenizers: the folder's `encoder_tokenizer/` and
        `decoder_tokenizer/` when present, else the folder's own tokenizer files for both."""
        folder = resolve_model_folder(name_or_path)
        model = EncoderDecoderModel.from_pretrained(folder)
        return cls(model, *load_tokenizers(folder), **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __call__(self, texts: str | Iterable[str | None], progress: Callable[[int, int], None] | None = None,
                 **generation_kwargs: Any) -> list[str]:
        """One summary per document, in input order; kwargs override the stored generation config.
        `progress(done, total)` is called after each batch (documents, blank ones included)."""
        rows = self.summary_ids(texts, progress, **generation_kwargs)
        real = [i for i, row in enumerate(rows) if row is not None]
        decoded = self.decoder_tokenizer.batch_decode([rows[i] for i in real], skip_special_tokens=True)
        summaries = [""] * len(rows)
        for i, text in zip(real, decoded):
            summaries[i] = " ".join(text.split())  # one line each
        return summaries

    def summary_ids(self, texts: str | Iterable[str | None], progress: Callable[[int, int], None] | None = None,
                    **generation_kwargs: Any) -> list[list[int] | None]:
        """The generated token ids of each document, in input order (padded to the longest of its
        batch); None for a blank document, which the model does not see."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        wrong = [i for i, t in enumerate(texts) if t is not None and not isinstance(t, str)]
        if wrong:
            raise TypeError(f"Documents must be str or None; item {wrong[0]} is a {type(texts[wrong[0]]).__name__}.")
        if generation_kwargs.get("num_return_sequences", 1) != 1:
            raise ValueError("Summarizer returns one summary per document; leave num_return_sequences at 1.")
        rows: list[list[int] | None] = [None] * len(texts)
        real = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        order = self._longest_first(real, texts)
        blank = len(texts) - len(order)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            for i, ids in zip(chunk, self._generate_batch([texts[i] for i in chunk], generation_kwargs)):
                rows[i] = ids
            if progress is not None:
                progress(blank + start + len(chunk), len(texts))
        return rows

    def _longest_first(self, indices: list[int], texts: list[Any]) -> list[int]:
        """Sort by token count so batches hold similar lengths (little padding); warn once about
        documents that do not fit the encoder."""
        if not indices:
            return []
        rows = self.encoder_tokenizer([texts[i] for i in indices], truncation=False, padding=False, return_tensors=None)
        lengths = [len(r) for r in rows["input_ids"]]
        too_long = sum(n > self.max_source_length for n in lengths)
        message = (f"{too_long} of {len(indices)} documents are longer than the encoder's {self.max_source_length} "
                   "tokens and were truncated; summaries cover only their beginning.")
        if too_long and message not in self._told:
            self._told.add(message)
            logger.warning(message)
        return [i for _, i in sorted(zip(lengths, indices), key=lambda p: -p[0])]

    def _generate_batch(self, batch: list[str], generation_kwargs: dict[str, Any]) -> list[list[int]]:
        enc = self.encoder_tokenizer(
            batch, max_length=self.max_source_length, truncation=True, padding=True, return_tensors="pt"
        )
        ids = self.model.generate(
            enc["input_ids"].to(self.device), attention_mask=enc["attention_mask"].to(self.device), **generation_kwargs
        )
        return ids.cpu().tolist()


def load_tokenizers(folder: Path) -> tuple[Tokenizer, Tokenizer]:
    """(encoder tokenizer, decoder tokenizer) of a model folder."""
    if (folder / "encoder_tokenizer").is_dir():
        encoder = load_tokenizer(folder / "encoder_tokenizer")
        decoder_dir = folder / "decoder_tokenizer"
        return encoder, load_tokenizer(decoder_dir) if decoder_dir.is_dir() else encoder
    try:
        shared = load_tokenizer(folder)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{exc} A model folder for summarising needs tokenizer files, or encoder_tokenizer/ and "
            "decoder_tokenizer/ subfolders: save the tokenizer with tokenizer.save_pretrained(folder)."
        ) from exc
    return shared, shared


_CACHE: dict[tuple, Summarizer] = {}


def summarize(
    texts: str | Iterable[str | None],
    model: str | os.PathLike,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    batch_size: int = 8,
    **generation_kwargs: Any,
) -> list[str]:
    """Summarise documents with a model folder or Hub id; the last model loaded stays cached."""
    key = (os.fspath(model), device, str(dtype), batch_size)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = Summarizer.from_pretrained(model, device=device, dtype=dtype, batch_size=batch_size)
    return _CACHE[key](texts, **generation_kwargs)
