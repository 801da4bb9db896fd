"""transformers' tokenizer calls on top of `encdec.tokenization.tokenizer.Tokenizer`: `__call__` with its
arguments and defaults (no padding, no truncation, lists unless return_tensors says otherwise;
pairs, text_target, token_type_ids), `encode`, `tokenize`, token <-> id conversions, `get_vocab`,
the special ids, and `BatchEncoding.to(device)`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# tokenizer classes whose calls return token_type_ids (as their transformers classes do)
_TOKEN_TYPE_CLASSES = ("BertTokenizer", "BertTokenizerFast", "ElectraTokenizer", "ElectraTokenizerFast")


class Encoding(dict):
    """A dict that also reads as attributes (`enc.input_ids`), like transformers' BatchEncoding."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: str | torch.device) -> Encoding:
        """The tensors moved to `device` (in place, returning self, as transformers does)."""
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device)
        return self


class TokenizerAPI:
    """Mixin for Tokenizer: methods with transformers' names, arguments and defaults."""

    def __call__(
        self,
        text: str | list[str] | None = None,
        text_pair: str | list[str] | None = None,
        text_target: str | list[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
    ) -> Encoding:
        """Encode a text, a batch, or pairs: {"input_ids", ("token_type_ids"), "attention_mask"},
        right-padded with the pad id when asked; `text_target` adds "labels" (or is the encoding
        when no text is given). Defaults as transformers': no padding, no truncation, Python lists."""
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt', 'np' or None.")
        options = dict(add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                       max_length=max_length, return_tensors=return_tensors)
        if text is None:
            if text_target is None:
                raise ValueError("Pass text (and optionally text_pair) or text_target.")
            return self._call_one(text_target, None, return_token_type_ids, **options)
        out = self._call_one(text, text_pair, return_token_type_ids, **options)
        if text_target is not None:
            out["labels"] = self._call_one(text_target, None, False, **options)["input_ids"]
        return out

    def _call_one(self, text, pair, return_token_type_ids, *, add_special_tokens, padding, truncation, max_length,
                  return_tensors) -> Encoding:
        single = isinstance(text, str)
        batch = [text] if single else list(text)
        if pair is not None:
            pairs = [pair] if isinstance(pair, str) else list(pair)
            if len(pairs) != len(batch):
                raise ValueError(f"text_pair has {len(pairs)} texts for {len(batch)} texts; pass one pair per text.")
            batch = list(zip(batch, pairs))
        limit = (max_length or self.model_max_length) if truncation not in (False, "do_not_truncate") else None
        encodings = self._encodings(batch, limit, add_special_tokens)
        ids, mask = self._pad([e.ids for e in encodings],
                              self._padded_length([e.ids for e in encodings], padding, max_length))
        columns = {"input_ids": ids}
        wants_types = self.config.get("tokenizer_class") in _TOKEN_TYPE_CLASSES
        if return_token_type_ids or (return_token_type_ids is None and wants_types):
            columns["token_type_ids"] = [e.type_ids + [0] * (len(row) - len(e.type_ids))
                                         for e, row in zip(encodings, ids)]
        columns["attention_mask"] = mask
        if return_tensors is None:
            return Encoding({k: v[0] if single else v for k, v in columns.items()})
        if len({len(r) for r in ids}) > 1:
            raise ValueError("Sequences differ in length; pass padding=True to return tensors.")
        make = (lambda rows: torch.tensor(rows, dtype=torch.long)) if return_tensors == "pt" else np.array
        return Encoding({k: make(v) for k, v in columns.items()})

    def encode(
        self, text: str, add_special_tokens: bool = True, truncation: bool = False, max_length: int | None = None
    ) -> list[int]:
        """Ids of one text, special tokens added, not truncated unless asked (transformers' defaults)."""
        limit = (max_length or self.model_max_length) if truncation else None
        return self._encode([text], limit, add_special_tokens)[0]

    def tokenize(self, text: str) -> list[str]:
        """The token strings of a text, without special tokens."""
        return self.backend.encode(text, add_special_tokens=False).tokens

    def convert_ids_to_tokens(self, ids: int | list[int], skip_special_tokens: bool = False) -> str | list[str]:
        if isinstance(ids, int):
            return self.backend.id_to_token(ids)
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.backend.id_to_token(int(i)) for i in ids if int(i) not in special]

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | None | list[int | None]:
        """Unknown tokens give the unk id (None without an unk token)."""
        if isinstance(tokens, str):
            found = self.backend.token_to_id(tokens)
            return self.unk_token_id if found is None else found
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    @property
    def all_special_tokens(self) -> list[str]:
        """The special tokens set on this tokenizer, each once, in transformers' role order."""
        roles = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
        tokens = [self._special[r] for r in roles if self._special.get(r)]
        extra = [t if isinstance(t, str) else t.get("content")
                 for t in self.config.get("additional_special_tokens") or []]
        return list(dict.fromkeys([*tokens, *extra]))

    @property
    def all_special_ids(self) -> list[int]:
        return [self.backend.token_to_id(t) for t in self.all_special_tokens]
