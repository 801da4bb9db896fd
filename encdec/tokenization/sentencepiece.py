"""SentencePiece model files (`spiece.model`, `sentencepiece.bpe.model`) as `tokenizers` pipelines.

The `.model` file is a small protobuf: the pieces with scores and types, the trainer settings (model
type, special ids) and the normaliser (a precompiled character map and whitespace rules). We read
it with a few lines of protobuf wire-format decoding and build the same pipeline in `tokenizers`, so
encoding runs in the same fast backend as every other tokenizer and needs neither `sentencepiece`
nor `protobuf` at run time. The id layout differs by checkpoint family: bert-generation uses the
SentencePiece ids as they are; XLM-R and CamemBERT shift them behind fairseq's special tokens.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

from encdec.base.errors import UsageError, one_line

SPM_FILES = ("spiece.model", "sentencepiece.bpe.model")
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # SentencePiece piece types
UNIGRAM, BPE = 1, 2  # TrainerSpec.model_type
SPACE = "\u2581"  # "▁", SentencePiece's visible space


@dataclass
class SpmModel:
    """The parts of a SentencePiece ModelProto that decide encoding and decoding."""

    pieces: list[tuple[str, float, int]] = field(default_factory=list)  # (piece, score, type)
    model_type: int = UNIGRAM
    unk_id: int = 0
    byte_fallback: bool = False
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True


# ---------------------------------------------------------------- protobuf wire format


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(data: bytes) -> list[tuple[int, Any]]:
    """(field number, value) pairs of one message: ints for varints, bytes for length-delimited,
    floats for 32-bit fields (the only fixed-width fields this format uses)."""
    out, i = [], 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = data[i:i + size], i + size
        elif wire == 5:
            value, i = struct.unpack("<f", data[i:i + 4])[0], i + 4
        elif wire == 1:
            value, i = struct.unpack("<d", data[i:i + 8])[0], i + 8
        else:
            raise ValueError(f"Unexpected protobuf wire type {wire}: not a SentencePiece model file.")
        out.append((number, value))
    return out


def _signed(value: int) -> int:
    """int32 fields are varints in two's complement over 64 bits (pad_id = -1)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def read_spm_model(path: Path) -> SpmModel:
    """Decode ModelProto: 1 pieces {1 piece, 2 score, 3 type}; 2 trainer_spec {3 model_type,
    35 byte_fallback, 40 unk_id}; 3 normalizer_spec {2 precompiled_charsmap, 3 add_dummy_prefix,
    4 remove_extra_whitespaces}."""
    spm = SpmModel()
    try:
        top = _fields(path.read_bytes())
    except (IndexError, struct.error, ValueError) as err:
        raise ValueError(f"{path} is not a readable SentencePiece model ({err}); re-download it.") from err
    for number, value in top:
        if number == 1:
            piece = dict(_fields(value))
            spm.pieces.append((piece.get(1, b"").decode("utf-8"), float(piece.get(2, 0.0)), piece.get(3, NORMAL)))
        elif number == 2:
            trainer = dict(_fields(value))
            spm.model_type = trainer.get(3, UNIGRAM)
            spm.byte_fallback = bool(trainer.get(35, 0))
            spm.unk_id = _signed(trainer.get(40, 0))
        elif number == 3:
            normalizer = dict(_fields(value))
            spm.precompiled_charsmap = normalizer.get(2, b"")
            spm.add_dummy_prefix = bool(normalizer.get(3, 1))
            spm.remove_extra_whitespaces = bool(normalizer.get(4, 1))
    if spm.model_type not in (UNIGRAM, BPE):
        raise ValueError(f"{path}: SentencePiece model type {spm.model_type} is not supported (Unigram and BPE are).")
    return spm


# ---------------------------------------------------------------- id layouts per checkpoint family


@dataclass(frozen=True)
class SpmLayout:
    """How a family places its special tokens around the SentencePiece vocabulary."""

    head: tuple[tuple[str, float], ...] = ()  # pieces placed before the SentencePiece ones
    skip: int = 0  # SentencePiece pieces left out at the start (replaced by `head`)
    tail: tuple[str, ...] = ()  # pieces appended after them
    unk_id: int | None = None  # None: the model's own
    template: bool = False  # wrap as <s> A </s> (pairs: <s> A </s></s> B </s>)
    specials: dict[str, str | None] = field(default_factory=dict)  # the tokenizer class's defaults
    # transformers' fast classes (XLM-R, CamemBERT) read every .model as Unigram, BPE ones too.
    unigram: bool = False
    # transformers' slow classes (BertGenerationTokenizer) run SentencePiece itself: they read the
    # .model even beside a tokenizer.json, and decode by joining pieces and stripping both ends.
    slow: bool = False


_FAIRSEQ_SPECIALS = dict(bos="<s>", eos="</s>", unk="<unk>", sep="</s>", pad="<pad>", cls="<s>", mask="<mask>")
SPM_LAYOUTS = {
    "bert-generation": SpmLayout(specials=dict(
        bos="<s>", eos="</s>", unk="<unk>", pad="<pad>", sep="<::::>", cls=None, mask=None,
    ), slow=True),
    "xlm-roberta": SpmLayout(
        head=(("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)), skip=3, tail=("<mask>",),
        unk_id=3, template=True, specials=_FAIRSEQ_SPECIALS, unigram=True,
    ),
    "camembert": SpmLayout(
        head=(("<s>NOTUSED", 0.0), ("<pad>", 0.0), ("</s>NOTUSED", 0.0), ("<unk>", 0.0), ("<unk>NOTUSED", -100.0)),
        skip=1, tail=("<mask>",), unk_id=3, template=True, specials=_FAIRSEQ_SPECIALS, unigram=True,
    ),
}
# tokenizer_config.json's tokenizer_class -> layout (model_type in config.json works too).
SPM_CLASSES = {
    "BertGenerationTokenizer": "bert-generation", "XLMRobertaTokenizer": "xlm-roberta",
    "XLMRobertaTokenizerFast": "xlm-roberta", "CamembertTokenizer": "camembert", "CamembertTokenizerFast": "camembert",
}


def spm_layout(tokenizer_class: str | None, model_type: str | None, folder: Path | None = None) -> SpmLayout | None:
    """The layout named by tokenizer_config.json, else by config.json's model_type; without a
    folder, None when neither names one (with a folder, that is an error)."""
    name = SPM_CLASSES.get(tokenizer_class or "") or (model_type if model_type in SPM_LAYOUTS else None)
    if name is None and folder is not None:
        raise ValueError(
            f"{folder} holds a SentencePiece model for tokenizer_class {tokenizer_class!r} / model_type "
            f"{model_type!r}; encdec knows the layouts of {', '.join(SPM_CLASSES)}. Set tokenizer_class in "
            "tokenizer_config.json to one of them, or save the tokenizer as tokenizer.json with transformers."
        )
    return SPM_LAYOUTS.get(name)


# ---------------------------------------------------------------- the tokenizers pipeline


def spm_backend(spm: SpmModel, layout: SpmLayout) -> Backend:
    """A `tokenizers` pipeline that encodes and decodes as SentencePiece does, in the layout's ids."""
    vocab = [*layout.head, *((p, s) for p, s, _ in spm.pieces[layout.skip:]), *((t, 0.0) for t in layout.tail)]
    unk_id = spm.unk_id if layout.unk_id is None else layout.unk_id
    if spm.model_type == UNIGRAM or layout.unigram:
        backend = Backend(models.Unigram(vocab, unk_id=unk_id, byte_fallback=spm.byte_fallback))
    else:
        ids = {piece: i for i, (piece, _) in enumerate(vocab)}
        backend = Backend(models.BPE(ids, _merges(ids), unk_token=vocab[unk_id][0], byte_fallback=spm.byte_fallback,
                                     fuse_unk=True))
    backend.normalizer = _normalizer(spm)
    prepend = "always" if spm.add_dummy_prefix else "never"
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme=prepend, split=True)
    steps = [decoders.ByteFallback(), decoders.Fuse()] if spm.byte_fallback else []
    backend.decoder = decoders.Sequence([*steps, decoders.Metaspace(replacement=SPACE, prepend_scheme=prepend)])
    if layout.template:
        ids = backend.get_vocab()
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])],
        )
    return backend


def load_spm_folder(
    folder: Path, tokenizer_class: str | None, model_type: str | None
) -> tuple[Backend, SpmLayout, Path] | None:
    """The folder's SentencePiece model as a pipeline in its family's layout (and the layout and
    file), or None when the folder has none. Control pieces become special tokens: SentencePiece
    never splits them from text and drops them when decoding."""
    path = next((folder / name for name in SPM_FILES if (folder / name).is_file()), None)
    if path is None:
        return None
    layout = spm_layout(tokenizer_class, model_type, folder)
    try:
        spm = read_spm_model(path)
        backend = spm_backend(spm, layout)
    except UsageError:
        raise
    except Exception as exc:  # a damaged file fails anywhere in decoding it, or in the tokenizers library
        raise UsageError(f"{path} is not a readable SentencePiece model ({one_line(exc)}); re-download it.") from None
    control = [p for p, _, kind in spm.pieces[layout.skip:] if kind == CONTROL]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    return backend, layout, path


def _normalizer(spm: SpmModel) -> normalizers.Normalizer:
    """The precompiled character map, then SentencePiece's whitespace rule: strip the ends and
    collapse runs of spaces."""
    steps = [normalizers.Precompiled(spm.precompiled_charsmap)] if spm.precompiled_charsmap else []
    if spm.remove_extra_whitespaces:
        steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    return normalizers.Sequence(steps)


def _merges(ids: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges from the vocabulary alone: every split of a piece into two pieces, ordered by the
    rank of the merged piece (SentencePiece's BPE scores follow that order)."""
    merges = []
    for piece, rank in sorted(ids.items(), key=lambda item: item[1]):
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                merges.append((rank, ids[left], ids[right], left, right))
    return [(left, right) for *_, left, right in sorted(merges)]
