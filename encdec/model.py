"""EncoderDecoderModel: compose an encoder and a decoder, compute the seq2seq loss, and move
weights in and out of Hugging Face folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from encdec.checkpoints.files import read_state_dict, write_safetensors
from encdec.checkpoints.keymaps import (
    Rule,
    backbone_rules,
    canonical_single_model_keys,
    encoder_decoder_rules,
    file_names,
    from_hf,
    linear_rule,
    normalize_keys,
    split_optional,
    to_hf,
)
from encdec.checkpoints.reports import check_complete, load_checked, report_fresh_optional, report_warm_start, untied
from encdec.checkpoints.resolve import resolve_model_folder
from encdec.compat.encoder_decoder import (
    TransformersAPI,
    compose,
    explicit_forward,
    hidden_of,
    read_backbone_config,
    split_side_kwargs,
    wants_explicit,
)
from encdec.compat.generate_extras import GenerateOutput, generate_output, prepare, transition_scores
from encdec.compat.outputs import Seq2SeqLMOutput
from encdec.compat.pretrained import apply_load_options, cache_argument, split_load_options
from encdec.generation.beam import SearchRecord
from encdec.generation.generate import current_generation_config, generate
from encdec.generation.settings import GENERATION_CONFIG_NAME, GenerationConfig
from encdec.nn.backbone import Backbone
from encdec.nn.config import EncoderDecoderConfig
from encdec.nn.layers import init_weights
from encdec.nn.loss import linear_cross_entropy, logits_loss
from encdec.nn.masks import padding_mask
from encdec.nn.packing import PackedMask, Packing

# State-dict names of earlier encdec versions (BertDecoder's `.stack`, GPT2Decoder's wte/wpe) -> now,
# so Lightning .ckpt files written before the one-backbone refactor still load and resume.
_RENAMED = (("decoder.stack.", "decoder."), ("decoder.wte.", "decoder.embeddings.word."),
            ("decoder.wpe.", "decoder.embeddings.position."))


def shift_right(labels: Tensor, pad_token_id: int, decoder_start_token_id: int) -> Tensor:
    """Decoder inputs from labels: start token first, labels moved one right, -100 -> pad."""
    shifted = labels.new_zeros(labels.shape)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


class EncoderDecoderModel(TransformersAPI, nn.Module):
    """An encoder and a decoder `Backbone` (any supported families) joined by cross-attention."""

    def __init__(
        self,
        config: EncoderDecoderConfig | None = None,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ) -> None:
        """From a config (random weights), or from encdec encoder/decoder modules (kept as they are)."""
        super().__init__()
        config, given_encoder, given_decoder = compose(config, encoder, decoder)
        self.config = config
        self.encoder = given_encoder or Backbone(config.encoder, lm_head=False)
        self.decoder = given_decoder or Backbone(config.decoder)
        self.enc_to_dec_proj = None
        widths = config.encoder.hidden_size, config.decoder.hidden_size
        if widths[0] != widths[1] and config.decoder.cross_attention_hidden_size is None:
            self.enc_to_dec_proj = nn.Linear(config.encoder.hidden_size, config.decoder.hidden_size)
        self.loss_chunk_size: int | None = None  # rows per vocabulary chunk of the training loss (None: ~30 MB)
        self.quantized: str | None = None  # "int8" on a serving copy (encdec.serving.int8): never saved
        if given_encoder is None:
            self.encoder.init_weights()
            freeze_cross_attention(self.encoder)
        if given_decoder is None:
            self.decoder.init_weights()
        if self.enc_to_dec_proj is not None:
            init_weights(self.enc_to_dec_proj, self.config.decoder.initializer_range)
        if given_decoder is None and config.decoder.cross_attention_kind == "copy":
            self.decoder.copy_self_to_cross_attention()
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
        past_key_values: Any = None,
        inputs_embeds: Tensor | None = None,
        decoder_inputs_embeds: Tensor | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        token_type_ids: Tensor | None = None,
        return_logits: bool = True,
        cache_position: Tensor | None = None,
        label_smoothing: float = 0.0,
        cache: Any = None,
    ) -> Seq2SeqLMOutput | tuple:
        """Logits for every decoder position, and the mean cross-entropy over labels != -100;
        transformers' arguments and output fields (encdec.compat.outputs). Calls that ask for a cache
        (use_cache / past_key_values), attentions, hidden states or embeddings run the explicit
        attention path (encdec.compat.explicit); the others SDPA. `label_smoothing` (an encdec extension,
        the objective of Seq2SeqTrainer's `label_smoothing_factor`) smooths the loss as
        `F.cross_entropy(label_smoothing=...)` on the SDPA and fast paths.

        With labels and `return_logits=False` (the training fast path) encoder and decoder run on
        real tokens only and the vocabulary projection only on labelled positions, in chunks; the
        loss and gradients are the same, `encoder_last_hidden_state` is zero at padded positions."""
        if encoder_outputs is None and input_ids is None and inputs_embeds is None:
            raise ValueError("Pass input_ids (or inputs_embeds, or precomputed encoder_outputs).")
        past_key_values = cache_argument(past_key_values, cache)
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (self.config.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        use_cache = bool(use_cache) or past_key_values is not None
        if labels is not None:
            self._check_labels(labels, build_inputs=decoder_input_ids is None and decoder_inputs_embeds is None)
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = shift_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)
                if decoder_attention_mask is None:
                    decoder_attention_mask = decoder_input_ids.ne(self.config.pad_token_id).long()
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            raise ValueError("Pass labels or decoder_input_ids: the decoder needs inputs.")
        if wants_explicit(use_cache=use_cache, a=output_attentions, h=output_hidden_states, e=inputs_embeds,
                          d=decoder_inputs_embeds):
            if label_smoothing:
                raise ValueError("label_smoothing applies to the SDPA and training fast paths: call without "
                                 "use_cache / output_attentions / output_hidden_states / *_embeds.")
            out = explicit_forward(
                self, input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                inputs_embeds=inputs_embeds, encoder_outputs=encoder_outputs, decoder_input_ids=decoder_input_ids,
                decoder_attention_mask=decoder_attention_mask, decoder_inputs_embeds=decoder_inputs_embeds,
                past_key_values=past_key_values, use_cache=use_cache, output_attentions=output_attentions,
                output_hidden_states=output_hidden_states, labels=labels, cache_position=cache_position,
            )
            return out if return_dict else out.to_tuple()
        if labels is not None and not return_logits:
            packable = self.config.encoder.packable and self.config.decoder.packable
            out = (self._packed_loss if packable else self._padded_loss)(
                input_ids, attention_mask, token_type_ids, encoder_outputs,
                decoder_input_ids, decoder_attention_mask, labels, label_smoothing,
            )
            return out if return_dict else out.to_tuple()
        encoder_hidden, hidden = self._decode(input_ids, attention_mask, token_type_ids, encoder_outputs,
                                              decoder_input_ids, decoder_attention_mask)
        logits = self.decoder.logits(hidden)
        loss = None
        if labels is not None:
            loss = logits_loss(logits, labels, label_smoothing)
        out = Seq2SeqLMOutput(loss=loss, logits=logits, encoder_last_hidden_state=encoder_hidden)
        return out if return_dict else out.to_tuple()

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
        """The training fast path on packed tokens (see encdec.nn.packing): the encoder computes only
        unpadded sources; the decoder only positions that carry a label or serve as a key."""
        encoder_hidden = None if encoder_outputs is None else hidden_of(encoder_outputs)
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

    def _decode(self, input_ids, attention_mask, token_type_ids, encoder_outputs, decoder_input_ids,
                decoder_attention_mask) -> tuple[Tensor, Tensor]:
        """(encoder hidden states, decoder hidden states) of a padded batch: the SDPA path."""
        encoder_hidden = self.encode(input_ids, attention_mask, token_type_ids) if encoder_outputs is None \
            else hidden_of(encoder_outputs)
        hidden = self.decoder(decoder_input_ids, decoder_attention_mask,
                              memory_kv=self.decoder.cross_kv(self.memory(encoder_hidden)),
                              memory_mask=padding_mask(attention_mask))
        return encoder_hidden, hidden

    def _padded_loss(self, input_ids, attention_mask, token_type_ids, encoder_outputs, decoder_input_ids,
                     decoder_attention_mask, labels, label_smoothing: float = 0.0) -> Seq2SeqLMOutput:
        """The training fast path for models that cannot run packed (soft-capped scores, merged
        cross-attention): the padded forward, projecting only labelled positions."""
        encoder_hidden, hidden = self._decode(input_ids, attention_mask, token_type_ids, encoder_outputs,
                                              decoder_input_ids, decoder_attention_mask)
        loss = self.labelled_loss(hidden, labels, label_smoothing)
        return Seq2SeqLMOutput(loss=loss, encoder_last_hidden_state=encoder_hidden)

    def labelled_loss(self, hidden: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """Mean cross-entropy over labels != -100, projecting only those positions, a chunk of rows
        at a time, with the logits' gradients taken as each chunk is made (encdec.nn.loss), so no
        logits are kept for backward."""
        keep = labels != -100
        if self.decoder.config.final_logit_softcapping:  # capped logits: no fused projection + loss
            return logits_loss(self.decoder.logits(hidden[keep]), labels[keep], label_smoothing)
        features, weight, bias = self.decoder.projection(hidden[keep])  # (N, C)
        count = int(keep.sum())
        return linear_cross_entropy(
            features, weight, bias, labels[keep], self.loss_chunk_size, 1.0 / max(count, 1), label_smoothing,
        )

    def _check_labels(self, labels: Tensor, build_inputs: bool = True) -> None:
        missing = [k for k in ("decoder_start_token_id", "pad_token_id") if getattr(self.config, k) is None]
        if missing and build_inputs:
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
        generation_config: Any = None,
        **kwargs: Any,
    ) -> Tensor | GenerateOutput:
        """Greedy search, sampling or beam search (see encdec.generation.generate); token ids that start
        with decoder_start_token_id. kwargs are GenerationConfig fields, `generator`, or the
        transformers options of encdec.compat.generate_extras (return_dict_in_generate, output_scores,
        bad_words_ids, forced_bos/eos_token_id) and `streamer`; `generation_config` may be
        transformers' own."""
        generation_config, kwargs, flags = prepare(generation_config, kwargs)
        if not flags["return_dict_in_generate"]:
            return generate(self, input_ids, attention_mask, generation_config, **kwargs)
        record = SearchRecord()
        sequences = generate(self, input_ids, attention_mask, generation_config, record=record, **kwargs)
        return generate_output(self, input_ids, attention_mask, sequences, flags["output_scores"], record)

    def compute_transition_scores(self, sequences: Tensor, scores: tuple[Tensor, ...],
                                  beam_indices: Tensor | None = None, normalize_logits: bool = False) -> Tensor:
        """transformers' per-token scores of generate()'s output (encdec.compat.generate_extras)."""
        return transition_scores(sequences, scores, beam_indices, normalize_logits)

    # ------------------------------------------------------------------ Hugging Face checkpoints

    def hf_rules(self) -> list[Rule]:
        rules = encoder_decoder_rules(self.config)
        if self.enc_to_dec_proj is not None:
            rules += linear_rule("enc_to_dec_proj", "enc_to_dec_proj")
        return rules

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        config: EncoderDecoderConfig | None = None,
        strict: bool = True,
        **kwargs: Any,
    ) -> EncoderDecoderModel | tuple[EncoderDecoderModel, dict[str, list]]:
        """Load a folder written by `save_pretrained` here or in transformers (or a Hub id). A weight
        the model expects and the file lacks is an error (`strict=False`: a loud warning, and the
        weight stays random): a full checkpoint is not a warm start. kwargs: transformers' loading
        options (dtype / torch_dtype, device_map, attn_implementation, output_loading_info) and
        top-level config fields."""
        options, overrides = split_load_options(kwargs)
        folder = resolve_model_folder(name_or_path)
        config = config or EncoderDecoderConfig.from_pretrained(folder)
        for key, value in overrides.items():
            setattr(config, key, value)
        model = cls(config)
        hf = normalize_keys(read_state_dict(folder))
        rules = model.hf_rules()
        state, missing, unused = from_hf(hf, rules)
        load_checked(model, state, source=str(folder))
        missing = untied(model, missing, state)
        check_complete(rules, missing, unused, str(folder), strict)
        if model.config.tie_encoder_decoder:
            model.tie_encoder_decoder()
        if (folder / GENERATION_CONFIG_NAME).is_file():
            model.generation_config = GenerationConfig.load(folder)
        model = apply_load_options(model, options).eval()  # as transformers: loaded models start in eval mode
        if options.get("output_loading_info"):
            info = dict(missing_keys=file_names(rules, missing), unexpected_keys=unused, mismatched_keys=[],
                        error_msgs=[])
            return model, info
        return model

    @classmethod
    def from_encoder_decoder_pretrained(
        cls,
        encoder_pretrained_model_name_or_path: str | os.PathLike | None = None,
        decoder_pretrained_model_name_or_path: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> EncoderDecoderModel:
        """Warm-start from two single-model checkpoints; cross-attention (and enc_to_dec_proj) start
        random. `encoder_*` / `decoder_*` kwargs set fields of that side's config, the rest the top;
        `encoder_model=` / `decoder_model=` pass an encdec module instead of a folder for that side.
        `cross_attention_init` adds cross-attention to a decoder-only LM: "gated" (default: the LM
        exactly at step 0), "random", "copy" (from self-attention) or "merged" (no new weights)."""
        modules = {side: kwargs.pop(f"{side}_model", None) for side in ("encoder", "decoder")}
        kind = kwargs.pop("cross_attention_init", None)
        enc_kw, dec_kw, top_kw = split_side_kwargs(kwargs)
        if kind is not None:
            dec_kw["cross_attention_init"] = kind
        paths = {"encoder": encoder_pretrained_model_name_or_path, "decoder": decoder_pretrained_model_name_or_path}
        for side, path in paths.items():
            if path is None and modules[side] is None:
                raise ValueError(
                    f"No {side}: pass {side}_pretrained_model_name_or_path (a folder or Hub id) "
                    f"or {side}_model=<module>."
                )
        dirs = {side: resolve_model_folder(p) for side, p in paths.items() if modules[side] is None}
        configs = {
            side: read_backbone_config(dirs[side], kw) if side in dirs else modules[side].config
            for side, kw in (("encoder", enc_kw), ("decoder", dec_kw))
        }
        config = EncoderDecoderConfig.from_encoder_decoder_configs(configs["encoder"], configs["decoder"], **top_kw)
        model = cls(config, **{side: m for side, m in modules.items() if m is not None})
        new, unused = [], []
        for side, folder in dirs.items():
            side_cfg = getattr(config, side)
            hf = canonical_single_model_keys(read_state_dict(folder), side_cfg)
            rules = backbone_rules(side_cfg)
            state, missing, side_unused = from_hf(hf, rules)
            load_checked(getattr(model, side), state, source=str(folder))
            missing, optional = split_optional(rules, missing)
            report_fresh_optional(file_names(rules, optional), f"the {side} checkpoint {folder}")
            new += [f"{side}.{k}" for k in missing]
            unused += [f"{side} checkpoint: {k}" for k in side_unused]
        if model.enc_to_dec_proj is not None:
            new += ["enc_to_dec_proj.weight", "enc_to_dec_proj.bias"]
        if "decoder" in dirs and config.decoder.cross_attention_kind == "copy":
            model.decoder.copy_self_to_cross_attention()  # from the loaded self-attention, not the random one
            new = [k if ".cross_attn" not in k else f"{k} (copied from self-attention)" for k in new]
        report_warm_start(new, unused, "the pretrained encoder and decoder")
        if config.tie_encoder_decoder:
            model.tie_encoder_decoder()
        return model.eval()

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write config.json and model.safetensors in transformers' EncoderDecoderModel layout."""
        if self.quantized:
            raise ValueError(f"This is a {self.quantized} serving copy (dtype={self.quantized}); "
                             "save the floating-point model instead.")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        hf = to_hf(self.state_dict(), self.hf_rules())
        write_safetensors(hf, folder / "model.safetensors")
        self.config.save_pretrained(folder)
        current_generation_config(self).save(folder)


def freeze_cross_attention(encoder: Backbone) -> None:
    """An encoder never receives memory: cross-attention its config asks for (a config shared with
    the decoder) is loaded and saved but never run, so frozen, as the pooler is."""
    for layer in encoder.layers:
        for name in ("cross_attn", "cross_attn_norm"):
            if hasattr(layer, name):
                getattr(layer, name).requires_grad_(False)


def _rename_old_keys(module: nn.Module, state: dict[str, Tensor], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: old key names (`_RENAMED`) under `prefix` become current ones."""
    for key in [k for k in state if k.startswith(prefix)]:
        for old, new in _RENAMED:
            if key.startswith(prefix + old):
                state[prefix + new + key[len(prefix + old):]] = state.pop(key)
                break
