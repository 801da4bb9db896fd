"""EncoderDecoderModel: compose an encoder and a decoder, compute the seq2seq loss, and move
weights in and out of Hugging Face folders."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encdec.backbone import Backbone
from encdec.checkpoints import (
    Rule, _linear, backbone_rules, canonical_single_model_keys, check_complete, from_hf, load_checked,
    normalize_keys, prefixed, read_state_dict, report_warm_start, to_hf, untied, write_safetensors,
)
from encdec.config import BackboneConfig, EncoderDecoderConfig
from encdec.generation import GENERATION_CONFIG_NAME, GenerationConfig, current_generation_config, generate
from encdec.hub import resolve_model_dir
from encdec.loss import linear_cross_entropy
from encdec.modules import init_weights, padding_mask
from encdec.packing import PackedMask, Packing

# State-dict names of earlier encdec versions (BertDecoder's `.stack`, GPT2Decoder's wte/wpe) -> now,
# so Lightning .ckpt files written before the one-backbone refactor still load and resume.
_RENAMED = (("decoder.stack.", "decoder."), ("decoder.wte.", "decoder.embeddings.word."),
            ("decoder.wpe.", "decoder.embeddings.position."))


@dataclass
class Seq2SeqLMOutput:
    loss: Tensor | None = None
    logits: Tensor | None = None
    encoder_last_hidden_state: Tensor | None = None

    def __getitem__(self, i: int):  # tuple-style access, as in transformers: loss, logits = out[:2]
        return tuple(v for v in (self.loss, self.logits, self.encoder_last_hidden_state) if v is not None)[i]


def shift_right(labels: Tensor, pad_token_id: int, decoder_start_token_id: int) -> Tensor:
    """Decoder inputs from labels: start token first, labels moved one right, -100 -> pad."""
    shifted = labels.new_zeros(labels.shape)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


class EncoderDecoderModel(nn.Module):
    """An encoder and a decoder `Backbone` (any supported families) joined by cross-attention."""

    def __init__(self, config: EncoderDecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Backbone(config.encoder)
        self.decoder = Backbone(config.decoder)
        self.enc_to_dec_proj = None
        if config.encoder.hidden_size != config.decoder.hidden_size:
            self.enc_to_dec_proj = nn.Linear(config.encoder.hidden_size, config.decoder.hidden_size)
        self.loss_chunk_size: int | None = None  # rows per vocabulary chunk of the training loss (None: ~30 MB)
        self.init_weights()
        if config.tie_encoder_decoder:
            self.tie_encoder_decoder()
        self.generation_config = GenerationConfig.from_model_config(config)
        self.register_load_state_dict_pre_hook(_rename_old_keys)

    def init_weights(self) -> None:
        self.encoder.init_weights()
        self.decoder.init_weights()
        if self.enc_to_dec_proj is not None:
            init_weights(self.enc_to_dec_proj, self.config.decoder.initializer_range)

    def tie_encoder_decoder(self) -> None:
        """BERTShare: the encoder uses the decoder's Parameters wherever both have a weight of that
        name and shape (cross-attention and the LM head stay the decoder's own)."""
        if self.config.encoder.model_type != self.config.decoder.model_type:
            raise ValueError(
                "tie_encoder_decoder=True needs the same family on both sides (e.g. bert2bert, "
                f"roberta2roberta); got {self.config.encoder.model_type}2{self.config.decoder.model_type}."
            )
        for name, param in self.decoder.named_parameters():
            if name.startswith("head."):
                continue
            owner_name, _, attr = name.rpartition(".")
            try:
                owner = self.encoder.get_submodule(owner_name)
            except AttributeError:
                continue
            if isinstance(getattr(owner, attr, None), nn.Parameter) and getattr(owner, attr).shape == param.shape:
                setattr(owner, attr, param)

    def gradient_checkpointing_enable(self, enabled: bool = True) -> None:
        """Recompute each layer's activations in backward: less memory for long inputs, ~30% more compute."""
        for backbone in (self.encoder, self.decoder):
            backbone.gradient_checkpointing = enabled

    # ------------------------------------------------------------------ forward

    def encode(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Encoder hidden states (B, S, C_enc), before any projection to the decoder width."""
        return self.encoder(input_ids, attention_mask, token_type_ids)

    def memory(self, encoder_hidden: Tensor) -> Tensor:
        return encoder_hidden if self.enc_to_dec_proj is None else self.enc_to_dec_proj(encoder_hidden)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        decoder_input_ids: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        encoder_outputs: Any = None,
        labels: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        return_logits: bool = True,
        label_smoothing: float = 0.0,
    ) -> Seq2SeqLMOutput:
        """Logits for every decoder position, and the mean cross-entropy over labels != -100
        (label-smoothed as `F.cross_entropy(label_smoothing=...)` when asked: an encdec extension,
        the training objective of Seq2SeqTrainer's `label_smoothing_factor`).

        With labels and `return_logits=False` (the training fast path) encoder and decoder run on
        real tokens only and the vocabulary projection only on labelled positions, in chunks; the
        loss and gradients are the same, `encoder_last_hidden_state` is zero at padded positions."""
        if encoder_outputs is None and input_ids is None:
            raise ValueError("Pass input_ids (or precomputed encoder_outputs).")
        if labels is not None:
            self._check_labels(labels)
            if decoder_input_ids is None:
                decoder_input_ids = shift_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)
                if decoder_attention_mask is None:
                    decoder_attention_mask = decoder_input_ids.ne(self.config.pad_token_id).long()
        if decoder_input_ids is None:
            raise ValueError("Pass labels or decoder_input_ids: the decoder needs inputs.")
        if labels is not None and not return_logits:
            return self._packed_loss(
                input_ids, attention_mask, token_type_ids, encoder_outputs,
                decoder_input_ids, decoder_attention_mask, labels, label_smoothing,
            )
        encoder_hidden = self.encode(input_ids, attention_mask, token_type_ids) if encoder_outputs is None \
            else _hidden_of(encoder_outputs)
        memory = self.memory(encoder_hidden)
        hidden = self.decoder(
            decoder_input_ids, decoder_attention_mask,
            memory_kv=self.decoder.cross_kv(memory),
            memory_mask=padding_mask(attention_mask),
        )
        logits = self.decoder.logits(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100,
                label_smoothing=label_smoothing,
            )
        return Seq2SeqLMOutput(loss=loss, logits=logits, encoder_last_hidden_state=encoder_hidden)

    def _packed_loss(
        self,
        input_ids: Tensor | None,
        attention_mask: Tensor | None,
        token_type_ids: Tensor | None,
        encoder_outputs: Any,
        decoder_input_ids: Tensor,
        decoder_attention_mask: Tensor | None,
        labels: Tensor,
        label_smoothing: float = 0.0,
    ) -> Seq2SeqLMOutput:
        """The training fast path on packed tokens (see encdec.packing): the encoder computes only
        unpadded sources; the decoder only positions that carry a label or serve as a key."""
        encoder_hidden = None if encoder_outputs is None else _hidden_of(encoder_outputs)
        grid = input_ids if input_ids is not None else encoder_hidden[..., 0]
        source = Packing.from_mask(
            torch.ones_like(grid, dtype=torch.bool) if attention_mask is None else attention_mask
        )
        if encoder_hidden is None:
            packed_source = self.encoder(input_ids, attention_mask, token_type_ids, packing=source)  # (N_src, C)
        else:
            packed_source = source.pack(encoder_hidden)
        keys = torch.ones_like(labels, dtype=torch.bool) if decoder_attention_mask is None else decoder_attention_mask
        target = Packing.from_mask(keys.bool() | labels.ne(-100))
        hidden = self.decoder(
            decoder_input_ids, decoder_attention_mask,
            memory_kv=self.decoder.cross_kv(self.memory(packed_source)),
            memory_mask=PackedMask(target.lengths, source.lengths),
            packing=target,
        )  # (N_tgt, C)
        loss = self.labelled_loss(hidden, target.pack(labels), label_smoothing)
        if encoder_hidden is None:
            encoder_hidden = source.unpack(packed_source)
        return Seq2SeqLMOutput(loss=loss, encoder_last_hidden_state=encoder_hidden)

    def labelled_loss(self, hidden: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """Mean cross-entropy over labels != -100, projecting only those positions, a chunk of rows
        at a time, with the logits' gradients taken as each chunk is made (encdec.loss), so no
        logits are kept for backward."""
        keep = labels != -100
        features, weight, bias = self.decoder.projection(hidden[keep])  # (N, C)
        count = int(keep.sum())
        return linear_cross_entropy(
            features, weight, bias, labels[keep], self.loss_chunk_size, 1.0 / max(count, 1), label_smoothing,
        )

    def _check_labels(self, labels: Tensor) -> None:
        missing = [k for k in ("decoder_start_token_id", "pad_token_id") if getattr(self.config, k) is None]
        if missing:
            raise ValueError(
                f"model.config.{' and model.config.'.join(missing)} must be set to build decoder inputs from "
                "labels, e.g. model.config.decoder_start_token_id = tokenizer.cls_token_id and "
                "model.config.pad_token_id = tokenizer.pad_token_id."
            )
        vocab = self.config.decoder.vocab_size
        bad = (labels != -100) & ((labels < 0) | (labels >= vocab))
        if bad.any():
            raise ValueError(
                f"labels contain ids {sorted(set(labels[bad].tolist()))[:5]} outside the decoder vocabulary "
                f"[0, {vocab}); mask ignored positions with -100 and check that the labels were made "
                "with the decoder's tokenizer."
            )

    def check_tokenizers(self, encoder_tokenizer: Any, decoder_tokenizer: Any | None = None) -> None:
        """Fail early when a tokenizer can produce ids the model has no embedding for."""
        pairs = (("encoder", encoder_tokenizer), ("decoder", decoder_tokenizer or encoder_tokenizer))
        for side, tokenizer in pairs:
            model_vocab = getattr(self.config, side).vocab_size
            if tokenizer.vocab_size > model_vocab:
                raise ValueError(
                    f"The {side} tokenizer has {tokenizer.vocab_size} tokens but the {side} embeddings only "
                    f"{model_vocab}: this tokenizer does not belong to this model. Load the tokenizer saved "
                    "with the checkpoint (or give the encoder and decoder their own tokenizers)."
                )

    def generate(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Greedy search, sampling or beam search (see encdec.generation); token ids that start
        with decoder_start_token_id. kwargs are GenerationConfig fields, or `generator`."""
        return generate(self, input_ids, attention_mask, generation_config, **kwargs)

    # ------------------------------------------------------------------ Hugging Face checkpoints

    def hf_rules(self) -> list[Rule]:
        rules = prefixed(backbone_rules(self.config.encoder), "encoder.", "encoder.")
        rules += prefixed(backbone_rules(self.config.decoder), "decoder.", "decoder.")
        if self.enc_to_dec_proj is not None:
            rules += _linear("enc_to_dec_proj", "enc_to_dec_proj")
        return rules

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, config: EncoderDecoderConfig | None = None, strict: bool = True
    ) -> EncoderDecoderModel:
        """Load a folder written by `save_pretrained` here or in transformers (or a Hub id). A weight
        the model expects and the file lacks is an error (`strict=False`: a loud warning, and the
        weight stays random): a full checkpoint is not a warm start."""
        folder = resolve_model_dir(name_or_path)
        model = cls(config or EncoderDecoderConfig.from_pretrained(folder))
        hf = normalize_keys(read_state_dict(folder))
        rules = model.hf_rules()
        state, missing, unused = from_hf(hf, rules)
        load_checked(model, state, source=str(folder))
        check_complete(rules, untied(model, missing, state), unused, str(folder), strict)
        if model.config.tie_encoder_decoder:
            model.tie_encoder_decoder()
        if (folder / GENERATION_CONFIG_NAME).is_file():
            model.generation_config = GenerationConfig.load(folder)
        return model.eval()  # as transformers: loaded models start in eval mode (no dropout)

    @classmethod
    def from_encoder_decoder_pretrained(
        cls,
        encoder_pretrained_model_name_or_path: str | os.PathLike,
        decoder_pretrained_model_name_or_path: str | os.PathLike,
        **kwargs: Any,
    ) -> EncoderDecoderModel:
        """Warm-start from two single-model checkpoints; cross-attention (and enc_to_dec_proj) start
        random. `encoder_*` / `decoder_*` kwargs set fields of that side's config, the rest the top."""
        enc_kw, dec_kw, top_kw = _split_kwargs(kwargs)
        enc_dir = resolve_model_dir(encoder_pretrained_model_name_or_path)
        dec_dir = resolve_model_dir(decoder_pretrained_model_name_or_path)
        config = EncoderDecoderConfig.from_encoder_decoder_configs(
            _read_backbone_config(enc_dir, enc_kw), _read_backbone_config(dec_dir, dec_kw), **top_kw
        )
        model = cls(config)
        new, unused = [], []
        for side, folder in (("encoder", enc_dir), ("decoder", dec_dir)):
            side_cfg = getattr(config, side)
            hf = canonical_single_model_keys(read_state_dict(folder), side_cfg)
            state, missing, side_unused = from_hf(hf, backbone_rules(side_cfg))
            load_checked(getattr(model, side), state, source=str(folder))
            new += [f"{side}.{k}" for k in missing]
            unused += [f"{side} checkpoint: {k}" for k in side_unused]
        if model.enc_to_dec_proj is not None:
            new += ["enc_to_dec_proj.weight", "enc_to_dec_proj.bias"]
        report_warm_start(new, unused, "the pretrained encoder and decoder")
        if config.tie_encoder_decoder:
            model.tie_encoder_decoder()
        return model.eval()

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write config.json and model.safetensors in transformers' EncoderDecoderModel layout."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        hf = to_hf(self.state_dict(), self.hf_rules())
        write_safetensors(hf, folder / "model.safetensors")
        self.config.save_pretrained(folder)
        current_generation_config(self).save(folder)


def _rename_old_keys(module: nn.Module, state: dict[str, Tensor], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: old key names (`_RENAMED`) under `prefix` become current ones."""
    for key in [k for k in state if k.startswith(prefix)]:
        for old, new in _RENAMED:
            if key.startswith(prefix + old):
                state[prefix + new + key[len(prefix + old):]] = state.pop(key)
                break


def _hidden_of(encoder_outputs: Any) -> Tensor:
    """Accept a tensor, a tuple whose first item is the hidden states, or an object with
    `last_hidden_state` (what transformers code passes)."""
    if isinstance(encoder_outputs, Tensor):
        return encoder_outputs
    if hasattr(encoder_outputs, "last_hidden_state"):
        return encoder_outputs.last_hidden_state
    return encoder_outputs[0]


def _split_kwargs(kwargs: dict[str, Any]) -> tuple[dict, dict, dict]:
    """encoder_x -> encoder config, decoder_x -> decoder config, the rest (and
    decoder_start_token_id, which belongs to the top config) -> the top config."""
    enc, dec, top = {}, {}, {}
    for key, value in kwargs.items():
        if key.startswith("encoder_"):
            enc[key[len("encoder_"):]] = value
        elif key.startswith("decoder_") and key != "decoder_start_token_id":
            dec[key[len("decoder_"):]] = value
        else:
            top[key] = value
    top_fields = {f.name for f in fields(EncoderDecoderConfig)} - {"encoder", "decoder", "extra"}
    unknown = set(top) - top_fields
    if unknown:
        raise TypeError(
            f"Unknown arguments {sorted(unknown)}: use encoder_<field> / decoder_<field> for one side's "
            f"config, or one of {sorted(top_fields)}."
        )
    return enc, dec, top


def _read_backbone_config(folder: Path, overrides: dict[str, Any]) -> BackboneConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"No config.json in {folder}; is this a model folder?")
    config = BackboneConfig.from_dict(json.loads(path.read_text()))
    known = {f.name for f in fields(BackboneConfig)}
    for key, value in overrides.items():
        if key not in known:
            raise TypeError(f"Unknown config field {key!r}; known fields: {sorted(known - {'extra'})}.")
        setattr(config, key, value)
    return config
