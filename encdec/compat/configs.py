"""transformers' config class names (`BertConfig`, `GPT2Config`, ...), one object per family,
derived from the `hf_config` of each `FAMILIES` row."""

from __future__ import annotations

import os
from typing import Any

from encdec.base.jsonfile import naming, read_config_json
from encdec.checkpoints.resolve import resolve_model_folder
from encdec.nn.config import BackboneConfig
from encdec.nn.families import FAMILIES


class FamilyConfig:
    """transformers' config class of a family (`BertConfig`, ...) as one object: calling it builds a
    BackboneConfig from transformers' keyword names and defaults, `isinstance(config, BertConfig)`
    holds for configs of that family, and `from_pretrained` / `from_dict` read that family's files."""

    def __init__(self, model_type: str, name: str) -> None:
        self.model_type, self.__name__, self.__qualname__ = model_type, name, name
        self.__doc__ = f"A {model_type} config from transformers' keyword names and defaults."

    def __call__(self, **kwargs: Any) -> BackboneConfig:
        return self.from_dict(kwargs)

    def __instancecheck__(self, obj: Any) -> bool:
        return isinstance(obj, BackboneConfig) and obj.model_type == self.model_type

    def __repr__(self) -> str:
        return f"<encdec config {self.__name__}>"

    def from_dict(self, hf: dict[str, Any]) -> BackboneConfig:
        if hf.get("model_type", self.model_type) != self.model_type:
            raise ValueError(f"{self.__name__} reads {self.model_type} configs, got model_type {hf['model_type']!r}; "
                             "use that family's config class or BackboneConfig.from_dict.")
        return BackboneConfig.from_dict({**hf, "model_type": self.model_type})

    def from_pretrained(self, name_or_path: str | os.PathLike, **kwargs: Any) -> BackboneConfig:
        """config.json of a single-model folder (local, mirror, cache or Hub); kwargs override fields."""
        folder = resolve_model_folder(name_or_path)
        with naming(folder / "config.json"):
            return self.from_dict({**read_config_json(folder), **kwargs})


CONFIG_CLASSES: dict[str, FamilyConfig] = {f.hf_config: FamilyConfig(t, f.hf_config) for t, f in FAMILIES.items()}
globals().update(CONFIG_CLASSES)
