"""transformers' single-model class names (`BertModel`, `GPT2LMHeadModel`, ...) as thin constructors
of the one `Backbone`, so code written against transformers runs with the import switched.

Each name is a row of `CLASSES` (family, with an LM head or not); `SingleModel` holds the backbone
and gives it transformers' forward, `from_pretrained` and `save_pretrained` of a single-model
folder (the same files transformers reads and writes).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

from torch import Tensor, nn

from encdec.base.jsonfile import naming, read_config_json
from encdec.checkpoints.files import read_state_dict, write_safetensors
from encdec.checkpoints.keymaps import (
    backbone_rules,
    canonical_single_model_keys,
    file_names,
    from_hf,
    split_optional,
    to_hf,
)
from encdec.checkpoints.reports import load_checked, report_fresh_optional, report_warm_start
from encdec.checkpoints.resolve import resolve_model_folder
from encdec.compat.explicit import Cache, rope_of, run_explicit
from encdec.compat.outputs import BaseModelOutput, BaseModelOutputWithPooling, CausalLMOutput
from encdec.compat.pretrained import (
    apply_load_options,
    cache_argument,
    count_parameters,
    output_embeddings,
    split_load_options,
)
from encdec.nn.backbone import Backbone
from encdec.nn.config import BackboneConfig
from encdec.nn.families import FAMILIES
from encdec.nn.loss import logits_loss
from encdec.nn.masks import padding_mask

# transformers class name -> (model_type, has an LM head: a decoder), from the FAMILIES rows
CLASSES: dict[str, tuple[str, bool]] = {
    name: (model_type, lm_head)
    for model_type, family in FAMILIES.items()
    for name, lm_head in ((family.hf_encoder, False), (family.hf_decoder, True))
    if name is not None
}


class SingleModel(nn.Module):
    """One backbone under a transformers class name. An LM-head class is a decoder (causal, with
    cross-attention when its config asks for it); a base-model class is a bidirectional encoder."""

    model_type: ClassVar[str] = "bert"
    lm_head: ClassVar[bool] = False

    def __init__(self, config: BackboneConfig | None = None, *, _backbone: Backbone | None = None) -> None:
        super().__init__()
        if _backbone is not None:  # a view of a backbone that lives elsewhere (get_encoder)
            self.config, self.backbone = _backbone.config, _backbone
            return
        config = config if config is not None else BackboneConfig.from_dict({"model_type": self.model_type})
        if config.model_type != self.model_type:
            raise ValueError(
                f"{type(self).__name__} needs a {self.model_type} config, got model_type {config.model_type!r}; "
                f"use the class of that family."
            )
        if self.lm_head and not config.is_decoder:
            config.is_decoder = True  # our LM head is the decoder's: causal, as transformers' causal LMs are used
        self.config = config
        self.backbone = Backbone(config, lm_head=self.lm_head)
        self.backbone.init_weights()
        if hasattr(self.backbone, "pooler"):
            self.backbone.pooler.requires_grad_(True)  # on its own a base model trains its pooler (transformers)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache_position: Tensor | None = None,
        cache: Cache | None = None,
    ) -> BaseModelOutput | CausalLMOutput | tuple:
        """transformers' forward of the class: hidden states (base model) or logits and the
        next-token loss (LM head: position t predicts labels[t + 1])."""
        config = self.config
        past_key_values = cache_argument(past_key_values, cache)
        cache = past_key_values if past_key_values is not None else (Cache() if use_cache else None)
        past = cache.get_seq_length() if cache is not None else 0
        x = self.backbone.embeddings(input_ids, token_type_ids, past, position_ids=position_ids,
                                     inputs_embeds=inputs_embeds)
        memory_kv = None
        if encoder_hidden_states is not None:
            if not config.add_cross_attention:
                raise ValueError("encoder_hidden_states needs cross-attention: "
                                 "build the config with add_cross_attention=True.")
            memory_kv = (cache.cross_kv if cache is not None and cache.cross_kv
                         else self.backbone.cross_kv(encoder_hidden_states))
            if cache is not None:
                cache.cross_kv = memory_kv
        hidden, trace = run_explicit(
            self.backbone, x, attention_mask, memory_kv=memory_kv, memory_mask=padding_mask(encoder_attention_mask),
            cache=cache, past_length=past, rope=rope_of(self.backbone, x, past, position_ids),
            hidden_states=config.output_hidden_states if output_hidden_states is None else output_hidden_states,
            attentions=config.output_attentions if output_attentions is None else output_attentions,
        )
        parts = dict(past_key_values=cache, hidden_states=trace.hidden_states, attentions=trace.attentions,
                     cross_attentions=trace.cross_attentions)
        if self.lm_head:
            logits = self.backbone.logits(hidden)
            loss = None
            if labels is not None:
                loss = logits_loss(logits[:, :-1], labels[:, 1:])
            out = CausalLMOutput(loss=loss, logits=logits, **parts)
        elif hasattr(self.backbone, "pooler"):
            pooled = self.backbone.pooler(hidden[:, 0]).tanh()
            out = BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled, **parts)
        else:
            out = BaseModelOutput(last_hidden_state=hidden, **parts)
        return out if (config.use_return_dict if return_dict is None else return_dict) else out.to_tuple()

    # ---------------------------------------------------------------- transformers' conveniences

    def get_input_embeddings(self) -> nn.Embedding:
        return self.backbone.embeddings.word

    def get_output_embeddings(self) -> SimpleNamespace | None:
        return output_embeddings(self.backbone) if self.lm_head else None

    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Embedding:
        self.backbone.resize_token_embeddings(new_num_tokens)
        return self.get_input_embeddings()

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        return count_parameters(self, only_trainable, exclude_embeddings)

    @property
    def device(self):
        return next(self.parameters()).device

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    # ---------------------------------------------------------------- single-model folders

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> SingleModel:
        """A single-model folder of this family (ours or transformers'); kwargs set config fields
        (e.g. is_decoder=True, add_cross_attention=True) or are transformers' loading options."""
        options, overrides = split_load_options(kwargs)
        folder = resolve_model_folder(name_or_path)
        with naming(folder / "config.json"):
            config = BackboneConfig.from_dict(read_config_json(folder))
        for key, value in overrides.items():
            setattr(config, key, value)
        if cls.lm_head:
            config.is_decoder = True
        model = cls(config)
        hf = canonical_single_model_keys(read_state_dict(folder), config, lm_head=cls.lm_head)
        rules = backbone_rules(config, lm_head=cls.lm_head)
        state, missing, unused = from_hf(hf, rules)
        load_checked(model.backbone, state, source=str(folder))
        new, optional = split_optional(rules, missing)
        report_fresh_optional(file_names(rules, optional), str(folder))
        report_warm_start(new, unused, str(folder))
        model = apply_load_options(model, options).eval()
        if options.get("output_loading_info"):
            info = dict(missing_keys=file_names(rules, missing), unexpected_keys=unused, mismatched_keys=[],
                        error_msgs=[])
            return model, info
        return model

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """config.json and model.safetensors in transformers' layout of this class. A decoder-only
        LM that was given cross-attention (get_decoder() of a composed model) saves its LM weights
        only: transformers' class has no cross-attention to hold the rest."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = self.config
        if config.family.causal_lm and config.add_cross_attention:
            config = copy.deepcopy(config)
            config.add_cross_attention, config.cross_attention_init = False, None
        rules = backbone_rules(config, lm_head=self.lm_head)
        write_safetensors(to_hf(self.backbone.state_dict(), rules), folder / "model.safetensors")
        data = dict(config.to_dict(), architectures=[type(self).__name__])
        (folder / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _named(name: str, model_type: str, lm_head: bool) -> type[SingleModel]:
    doc = (f"transformers' {name}: a {model_type} {'decoder with an LM head' if lm_head else 'encoder'} "
           "(encdec Backbone).")
    return type(name, (SingleModel,),
                {"model_type": model_type, "lm_head": lm_head, "__doc__": doc, "__module__": __name__})


globals().update({name: _named(name, *row) for name, row in CLASSES.items()})


def view(backbone: Backbone) -> SingleModel:
    """The transformers-named class of a backbone, sharing its parameters (get_encoder/get_decoder)."""
    for name, (model_type, lm_head) in CLASSES.items():
        if model_type == backbone.config.model_type and lm_head == backbone.has_lm_head:
            return globals()[name](_backbone=backbone)
    raise ValueError(f"No transformers class name for a {backbone.config.model_type} backbone.")
