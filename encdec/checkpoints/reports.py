"""Loading mapped weights into a model and saying what happened: shape errors that name the config,
weights the file lacks (an error for a full checkpoint, a log line for a warm start or an optional
pooler) and weights nothing used."""

from __future__ import annotations

import logging
import re

from torch import Tensor, nn

from encdec.checkpoints.keymaps import Rule, file_names, split_optional

logger = logging.getLogger("encdec")


def load_checked(module: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """load_state_dict with a readable error when shapes disagree with the config."""
    own = module.state_dict()
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise ValueError(
            f"Weights in {source} do not fit the config ({len(bad)} tensors), e.g. "
            + "; ".join(bad[:4]) + ". The config.json does not describe these weights: use the config "
            "saved with them, or drop the overrides that change sizes."
        )
    module.load_state_dict(state, strict=False)


def untied(model: nn.Module, missing: list[str], loaded: dict[str, Tensor]) -> list[str]:
    """Missing keys less tied duplicates: a shared Parameter (tie_encoder_decoder) loaded under
    its other name is not missing."""
    params = model.state_dict(keep_vars=True)
    loaded_ids = {id(params[k]) for k in loaded if k in params}
    return [k for k in missing if id(params.get(k)) not in loaded_ids]


def check_complete(rules: list[Rule], missing: list[str], unused: list[str], source: str, strict: bool) -> None:
    """A full checkpoint must hold every weight: name what is absent in the file's own key names.
    Optional weights (the pooler) are the exception: reported as fresh, as transformers does."""
    if unused:
        logger.warning("Weights in %s that this model does not use: %s", source,
                       ", ".join(collapse_layer_indices(unused)))
    missing, optional = split_optional(rules, missing)
    report_fresh_optional(file_names(rules, optional), source)
    if not missing:
        return
    names = ", ".join(collapse_layer_indices(file_names(rules, missing)))
    if strict:
        raise ValueError(
            f"{source} lacks weights this model needs: {names}. The config.json does not describe this file "
            "(another family or size?): fix its model_type / sizes, or pass strict=False to load anyway "
            "with these weights random."
        )
    logger.warning("%s\nstrict=False: %s lacks %s; they stay RANDOM, the model is not the saved one.\n%s",
                   "!" * 80, source, names, "!" * 80)


def report_fresh_optional(names: list[str], source: str) -> None:
    """Name the optional weights a file lacks (transformers lists them as missing and newly initialised)."""
    if names:
        logger.info("Not in %s, newly initialised (never run in an encoder-decoder, so nothing changes): %s",
                    source, ", ".join(collapse_layer_indices(names)))


def report_warm_start(new: list[str], unused: list[str], source: str) -> None:
    if new:
        logger.info(
            "Newly initialised from scratch (expected for cross-attention when warm-starting; train "
            "before use): %s", ", ".join(collapse_layer_indices(new)),
        )
    if unused:
        logger.info("Weights in %s that this model does not use: %s", source, ", ".join(collapse_layer_indices(unused)))


def collapse_layer_indices(keys: list[str]) -> list[str]:
    """'layers.0.x', 'layers.1.x' -> 'layers.*.x', so a report lists each kind of weight once."""
    return list(dict.fromkeys(re.sub(r"\.(\d+)\.", ".*.", k) for k in keys))
