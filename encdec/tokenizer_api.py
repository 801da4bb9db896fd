"""transformers' tokenizer conveniences on top of `encdec.tokenizer.Tokenizer`: `encode`, `tokenize`,
token <-> id conversions, `get_vocab`, the special ids, and `BatchEncoding.to(device)`.

(`Tokenizer.__call__` keeps encdec's defaults, padding and truncation on; see the README.)
"""

from __future__ import annotations

from typing import Any

import torch


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
        extra = [t if isinstance(t, str) else t.get("content") for t in self.config.get("additional_special_tokens") or []]
        return list(dict.fromkeys([*tokens, *extra]))

    @property
    def all_special_ids(self) -> list[int]:
        return [self.backend.token_to_id(t) for t in self.all_special_tokens]
