"""A `tokenizers`-backed tokenizer: load HF tokenizer folders, batch encode to tensors, decode, save.

Encodings and decodings equal transformers' for the same folder, so checkpoints and scores carry
over, without importing transformers at run time.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, TypeVar

from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

from encdec.base.errors import UsageError, one_line
from encdec.base.jsonfile import naming, read_json
from encdec.checkpoints.resolve import resolve_model_folder
from encdec.nn.config import max_positions_of
from encdec.tokenization.calls import Encoding, TokenizerAPI  # noqa: F401 - Encoding: its old import path
from encdec.tokenization.sentencepiece import SPM_FILES, SpmLayout, load_spm_folder, spm_layout

T = TypeVar("T")
ROLES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
# Tokens a role takes when no config names one and the vocabulary holds it (BERT, RoBERTa, GPT-2).
CONVENTIONAL = {
    "bos": ("<s>", "<|endoftext|>"),
    "eos": ("</s>", "<|endoftext|>"),
    "unk": ("[UNK]", "<unk>", "<|endoftext|>"),
    "sep": ("[SEP]", "</s>"),
    "pad": ("[PAD]", "<pad>"),
    "cls": ("[CLS]", "<s>"),
    "mask": ("[MASK]", "<mask>"),
}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json + merges.txt", *SPM_FILES)
DEFAULT_MODEL_MAX_LENGTH = 512
# Config keys that describe one saved copy, not the tokenizer; dropped when we save.
_STALE_KEYS = (
    "added_tokens_decoder", "name_or_path", "tokenizer_file", "auto_map", "special_tokens_map_file"
)


def _token_text(value: Any) -> str | None:
    """Special tokens are saved as strings or as AddedToken dicts with a "content" key."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def read_tokenizer_config(folder: Path) -> dict[str, Any]:
    """tokenizer_config.json with special_tokens_map.json on top, as transformers reads them; a
    value of the wrong type is one error naming its file."""
    config = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        part = read_json(folder / name, missing_ok=True)
        with naming(folder / name):
            check_tokenizer_config(part)
        config.update(part)
    return config


# tokenizer_config.json keys encdec reads -> (test, what the value must be)
_IS_FLAG = (lambda v: isinstance(v, bool), "true or false")
_CONFIG_VALUES: dict[str, tuple[Any, str]] = {
    "model_max_length": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "do_lower_case": _IS_FLAG, "tokenize_chinese_chars": _IS_FLAG,
    "add_prefix_space": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "clean_up_tokenization_spaces": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "strip_accents": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "tokenizer_class": (lambda v: v is None or isinstance(v, str), "a class name"),
    "additional_special_tokens": (lambda v: isinstance(v, list) and all(_is_token(t) for t in v),
                                  "a list of tokens (strings or {\"content\": ...} objects)"),
    "added_tokens_decoder": (lambda v: isinstance(v, dict) and all(
        str(k).isdigit() and isinstance(t, dict) and isinstance(t.get("content"), str) for k, t in v.items()),
        "an object of id -> {\"content\": ...}"),
    **{f"{role}_token": (lambda v: v is None or _is_token(v), "a token (a string or {\"content\": ...})")
       for role in ROLES},
}


def _is_token(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, dict) and isinstance(value.get("content"), str))


def check_tokenizer_config(config: dict[str, Any]) -> None:
    """Raise ValueError naming the first key whose value encdec cannot use."""
    for key, value in config.items():
        test, expected = _CONFIG_VALUES.get(key, (None, ""))
        if test is not None and not test(value):
            raise ValueError(f"{key!r} is {value!r} ({type(value).__name__}), not {expected}; fix the value "
                             "or save the tokenizer again")


def library_file(paths: str, read: Callable[[], T]) -> T:
    """read() of a file the `tokenizers` library parses; its errors (plain Exceptions from Rust)
    become one UsageError naming the file."""
    try:
        return read()
    except Exception as exc:  # the library raises bare Exceptions for unreadable files
        raise UsageError(f"{paths} cannot be read by the tokenizers library ({one_line(exc)}); restore the file "
                         "or save the tokenizer again.") from None


def _model_type(folder: Path, config: dict[str, Any]) -> str:
    """Lower-case hint of the family ("roberta", "gpt2", "bert"), from either config file."""
    model_config = read_json(folder / "config.json", missing_ok=True)
    return f"{model_config.get('model_type', '')} {config.get('tokenizer_class', '')}".lower()


def _wordpiece(folder: Path, config: dict[str, Any]) -> Backend:
    """BERT pipeline from vocab.txt: the same normaliser, splitter, decoder and [CLS] A [SEP]."""
    vocab = library_file(f"{folder / 'vocab.txt'}", lambda: models.WordPiece.read_file(str(folder / "vocab.txt")))
    unk = _token_text(config.get("unk_token")) or "[UNK]"
    backend = Backend(models.WordPiece(vocab, unk_token=unk))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"),
        lowercase=config.get("do_lower_case", True),
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    cls = _token_text(config.get("cls_token")) or "[CLS]"
    sep = _token_text(config.get("sep_token")) or "[SEP]"
    if cls not in vocab or sep not in vocab:
        raise UsageError(f"{folder / 'vocab.txt'} lacks {cls!r} or {sep!r} (a truncated file?); restore it, or name "
                         "the tokens it uses in tokenizer_config.json.")
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    return backend


def _uses_roberta_template(vocab: dict[str, int], family: str) -> bool:
    """RoBERTa wraps text in <s> ... </s>; GPT-2 adds nothing."""
    if "roberta" in family:
        return True
    return "gpt2" not in family and "<s>" in vocab and "</s>" in vocab


def _byte_level_bpe(folder: Path, config: dict[str, Any], family: str) -> Backend:
    """GPT-2 / RoBERTa pipeline from vocab.json + merges.txt (byte-level BPE)."""
    read_json(folder / "vocab.json")  # a broken JSON file is named on its own
    bpe = library_file(f"{folder / 'vocab.json'} with {folder / 'merges.txt'}",
                       lambda: models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
    backend = Backend(bpe)
    prefix_space = bool(config.get("add_prefix_space", False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    backend.decoder = decoders.ByteLevel()
    vocab = backend.get_vocab()
    if _uses_roberta_template(vocab, family):
        backend.post_processor = processors.RobertaProcessing(
            ("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]), add_prefix_space=prefix_space
        )
    return backend


def _sentencepiece(folder: Path, config: dict[str, Any]) -> tuple[Backend, SpmLayout, Path] | None:
    model_type = read_json(folder / "config.json", missing_ok=True).get("model_type")
    return load_spm_folder(folder, config.get("tokenizer_class"), model_type)


def _add_saved_tokens(backend: Backend, config: dict[str, Any]) -> Backend:
    """Tokens transformers saved in tokenizer_config.json's added_tokens_decoder (e.g. the
    BertGenerationTokenizer's "<::::>" beyond the SentencePiece vocabulary), at their ids."""
    for index, spec in sorted((int(i), t) for i, t in (config.get("added_tokens_decoder") or {}).items()):
        flags = {k: bool(spec.get(k, False)) for k in ("single_word", "lstrip", "rstrip", "normalized", "special")}
        token = AddedToken(spec["content"], **flags)
        at_its_id = backend.token_to_id(token.content) == index
        if at_its_id or index == backend.get_vocab_size(with_added_tokens=True):
            (backend.add_special_tokens if token.special else backend.add_tokens)([token])
    return backend


def _build_backend(folder: Path, config: dict[str, Any]) -> tuple[Backend, SpmLayout | None, Path | None]:
    """Prefer tokenizer.json (exact pipeline); else rebuild it from older files, with the tokens
    transformers saved beside them."""
    spm_first = _reads_spm_first(config) and any((folder / name).is_file() for name in SPM_FILES)
    if (folder / "tokenizer.json").is_file() and not spm_first:
        path = folder / "tokenizer.json"
        return library_file(str(path), lambda: Backend.from_file(str(path))), None, None
    backend, layout, spm_file = _rebuild_backend(folder, config)
    return _add_saved_tokens(backend, config), layout, spm_file


def _reads_spm_first(config: dict[str, Any]) -> bool:
    """transformers' slow SentencePiece classes read the .model even beside a tokenizer.json."""
    layout = spm_layout(config.get("tokenizer_class"), None)
    return layout is not None and layout.slow


def _rebuild_backend(folder: Path, config: dict[str, Any]) -> tuple[Backend, SpmLayout | None, Path | None]:
    """The pipeline from vocab.txt, vocab.json + merges.txt or a SentencePiece model (then also its
    layout and file)."""
    if _reads_spm_first(config) and (built := _sentencepiece(folder, config)):
        return built
    if (folder / "vocab.txt").is_file():
        return _wordpiece(folder, config), None, None
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return _byte_level_bpe(folder, config, _model_type(folder, config)), None, None
    if built := _sentencepiece(folder, config):
        return built
    raise FileNotFoundError(f"No tokenizer files in {folder}: looked for {', '.join(TOKENIZER_FILES)}.")


def _special_tokens(
    config: dict[str, Any], vocab: dict[str, int], defaults: dict[str, str | None]
) -> dict[str, str | None]:
    """Tokens named in the config win (an explicit null stays None), then the tokenizer class's
    defaults, else conventional ones in the vocab."""
    specials = {}
    for role in ROLES:
        key = f"{role}_token"
        if key in config:
            specials[role] = _token_text(config[key])
        elif role in defaults:
            specials[role] = defaults[role]
        else:
            specials[role] = next((t for t in CONVENTIONAL[role] if t in vocab), None)
    return specials


def _max_length(folder: Path, config: dict[str, Any]) -> int:
    """tokenizer_config's limit unless absent or a "no limit" sentinel; then the model's positions."""
    value = config.get("model_max_length")
    if isinstance(value, (int, float)) and 0 < value < 1_000_000:
        return int(value)
    with naming(folder / "config.json"):
        return max_positions_of(read_json(folder / "config.json", missing_ok=True)) or DEFAULT_MODEL_MAX_LENGTH


def _as_rows(ids: Any) -> list[list[int]]:
    """Tensors, arrays or lists to lists of ints; negative ids (-100 label padding) are dropped."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [[int(i) for i in row if i >= 0] for row in ids]


def clean_up_spaces(text: str) -> str:
    """Remove the spaces WordPiece decoding leaves before punctuation and English contractions."""
    for spaced, joined in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'")):
        text = text.replace(spaced, joined)
    for suffix in ("n't", "'m", "'s", "'ve", "'re"):
        text = text.replace(" " + suffix, suffix)
    return text


class Tokenizer(TokenizerAPI):
    """A `tokenizers.Tokenizer` plus special tokens, limits and the HF folder format."""

    def __init__(
        self,
        backend: Backend,
        special_tokens: dict[str, str | None] | None = None,
        model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces: bool = False,
        config: dict[str, Any] | None = None,
        strip_decoded: bool = False,
        sentencepiece_file: Path | None = None,
    ):
        """`strip_decoded`: strip decoded text at both ends, as SentencePiece-run (slow) classes do;
        `sentencepiece_file`: the .model file, copied by `save_pretrained` for transformers' sake."""
        # Presets (sentence-transformers ships padding and truncation) would change every encoding.
        backend.no_padding()
        backend.no_truncation()
        self.backend = backend
        self.model_max_length = model_max_length
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.config = dict(config or {})
        self._special = {role: None for role in ROLES}
        self._special.update(special_tokens or {})
        self._mark_special(self.config.get("additional_special_tokens") or [])
        self.strip_decoded = strip_decoded
        self.sentencepiece_file = sentencepiece_file

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, revision: str | None = None, **special_tokens: str | None
    ) -> Tokenizer:
        """Load from a folder, mirror, HF cache or the Hub (see `encdec.checkpoints.resolve`: also .gguf files).
        Keyword overrides of special tokens as in transformers: `pad_token="<pad>"`, ..."""
        allowed = {f"{role}_token" for role in ROLES}
        unknown = sorted(set(special_tokens) - allowed)
        if unknown:
            raise TypeError(
                f"Unknown tokenizer argument(s) {unknown}; the special-token overrides are {sorted(allowed)}."
            )
        folder = resolve_model_folder(name_or_path, revision)
        config = {**read_tokenizer_config(folder), **special_tokens}
        backend, layout, spm_file = _build_backend(folder, config)
        vocab = backend.get_vocab(with_added_tokens=True)
        return cls(
            backend,
            special_tokens=_special_tokens(config, vocab, layout.specials if layout else {}),
            model_max_length=_max_length(folder, config),
            clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
            config=config,
            strip_decoded=bool(layout and layout.slow),
            sentencepiece_file=spm_file,
        )

    def _mark_special(self, extra: list[Any]) -> None:
        """Special tokens are never split from text and are dropped by skip_special_tokens."""
        known = {t.content for t in self.backend.get_added_tokens_decoder().values()}
        texts = [t for t in [*self._special.values(), *map(_token_text, extra)] if t and t not in known]
        self.backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in texts])

    # ---- vocabulary ----------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Size including added tokens: the number of rows the embedding matrix needs."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, index: int) -> str | None:
        return self.backend.id_to_token(index)

    def special_tokens(self) -> dict[str, str | None]:
        """Role -> token text, e.g. {"pad": "[PAD]", "bos": None, ...}."""
        return dict(self._special)

    def _set_special(self, role: str, token: str | None) -> None:
        self._special[role] = token
        if token is not None:
            self._mark_special([])  # a token new to the vocabulary is added, as transformers does

    def _set_special_id(self, role: str, index: int | None) -> None:
        token = None if index is None else self.backend.id_to_token(int(index))
        if index is not None and token is None:
            raise ValueError(f"{role}_token_id={index} is outside the vocabulary (size {self.vocab_size}).")
        self._special[role] = token

    # ---- encoding ------------------------------------------------------------------------------
    def _encode(self, batch: list, limit: int | None, add_special_tokens: bool) -> list[list[int]]:
        """Batch-encode in parallel (texts, or (text, pair) tuples); the library's truncation keeps
        the special tokens in place."""
        return [e.ids for e in self._encodings(batch, limit, add_special_tokens)]

    def _encodings(self, batch: list, limit: int | None, add_special_tokens: bool) -> list:
        if limit is not None:
            self.backend.enable_truncation(limit)
        try:
            return self.backend.encode_batch(batch, add_special_tokens=add_special_tokens)
        finally:
            self.backend.no_truncation()

    def _padded_length(self, rows: list[list[int]], padding: bool | str, max_length: int | None) -> int:
        """Length to pad to: the longest row, max_length for padding="max_length", or no padding."""
        if padding in (False, "do_not_pad"):
            return 0
        if padding in (True, "longest"):
            return max((len(r) for r in rows), default=0)
        if padding == "max_length":
            return max_length or self.model_max_length
        raise ValueError(f"padding={padding!r}; use True, False, 'longest', 'max_length' or 'do_not_pad'.")

    def _pad(self, rows: list[list[int]], target: int) -> tuple[list[list[int]], list[list[int]]]:
        needs_pad = any(len(r) < target for r in rows)
        if needs_pad and self.pad_token_id is None:
            raise ValueError(
                "Padding needs a pad token, and this tokenizer has none. For GPT-2 set "
                "`tokenizer.pad_token_id = tokenizer.eos_token_id`, or pass padding=False."
            )
        gaps = [max(target - len(r), 0) for r in rows]
        ids = [r + [self.pad_token_id] * g for r, g in zip(rows, gaps)]
        mask = [[1] * len(r) + [0] * g for r, g in zip(rows, gaps)]
        return ids, mask

    # ---- decoding ------------------------------------------------------------------------------
    def batch_decode(self, ids: Any, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        """Token ids (tensor or lists, one row per text) back to text, as transformers decodes them.
        `clean_up_tokenization_spaces`: None follows the tokenizer's config (transformers' default)."""
        texts = self.backend.decode_batch(_as_rows(ids), skip_special_tokens=skip_special_tokens)
        clean_up = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None \
            else clean_up_tokenization_spaces
        # transformers applies the clean-up only when asked, and never to BPE output.
        if clean_up and not isinstance(self.backend.model, models.BPE):
            texts = [clean_up_spaces(t) for t in texts]
        return [t.strip() for t in texts] if self.strip_decoded else texts

    def decode(self, ids: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
               ) -> str:
        """One sequence of token ids back to text."""
        row = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return self.batch_decode([row], skip_special_tokens, clean_up_tokenization_spaces)[0]

    # ---- saving --------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json (transformers reads them)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(folder / "tokenizer.json"))
        if self.sentencepiece_file is not None and self.sentencepiece_file.parent.resolve() != folder.resolve():
            shutil.copyfile(self.sentencepiece_file, folder / self.sentencepiece_file.name)
        specials = {f"{role}_token": t for role, t in self._special.items() if t is not None}
        dropped = {*_STALE_KEYS, *(f"{role}_token" for role in ROLES)}
        config = {k: v for k, v in self.config.items() if k not in dropped}
        config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        config.update(
            model_max_length=self.model_max_length,
            clean_up_tokenization_spaces=self.clean_up_tokenization_spaces,
            **specials,
        )
        _write_json(folder / "tokenizer_config.json", config)
        _write_json(folder / "special_tokens_map.json", specials)
        return folder

    def __repr__(self) -> str:
        named = ", ".join(f"{r}={t!r}" for r, t in self._special.items() if t is not None)
        return f"Tokenizer(vocab_size={self.vocab_size}, {named})"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _special_property(role: str, as_id: bool) -> property:
    """`pad_token` / `pad_token_id` style accessors; setting one updates the other."""

    def get(self: Tokenizer) -> str | int | None:
        token = self._special[role]
        return token if not as_id or token is None else self.backend.token_to_id(token)

    def set_(self: Tokenizer, value: Any) -> None:
        (self._set_special_id if as_id else self._set_special)(role, value)

    what = "id of the " if as_id else ""
    return property(get, set_, doc=f"The {what}{role} token, or None when the tokenizer has none.")


for _role in ROLES:
    setattr(Tokenizer, f"{_role}_token", _special_property(_role, as_id=False))
    setattr(Tokenizer, f"{_role}_token_id", _special_property(_role, as_id=True))


def load_tokenizer(name_or_path: str | os.PathLike, revision: str | None = None,
                   **special_tokens: str | None) -> Tokenizer:
    """Load a tokenizer by folder or Hub id (same as `Tokenizer.from_pretrained`)."""
    return Tokenizer.from_pretrained(name_or_path, revision, **special_tokens)
