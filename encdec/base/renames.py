"""Hydra `_target_`s of the flat layout (before the layer packages) -> where they live now, so run
configs written by older versions (inside every Lightning .ckpt, and in users' own yaml files) still
instantiate. A table, not shim modules: the old module names stay free."""

from __future__ import annotations

from collections.abc import MutableMapping, MutableSequence
from typing import Any

OLD_MODULES = {
    "encdec.parts": "encdec.serving.parts", "encdec.data": "encdec.data.datamodule",
    "encdec.lightning": "encdec.training.module", "encdec.callbacks": "encdec.training.callbacks",
    "encdec.schedules": "encdec.training.schedules", "encdec.run_records": "encdec.training.run_records",
    "encdec.batching": "encdec.data.batching", "encdec.sample_data": "encdec.data.sample_data",
}


def current_target(target: str) -> str:
    """The importable path of a `_target_` that may name a module of the flat layout."""
    module, _, name = target.rpartition(".")
    return f"{OLD_MODULES[module]}.{name}" if module in OLD_MODULES else target


def upgrade_targets(tree: Any) -> list[str]:
    """Rewrite, in place, every old `_target_` in a config tree (dicts / DictConfigs and lists);
    returns the old targets it rewrote."""
    changed: list[str] = []
    if isinstance(tree, MutableMapping):
        target = tree.get("_target_")
        if isinstance(target, str) and current_target(target) != target:
            tree["_target_"] = current_target(target)
            changed.append(target)
        for value in tree.values():
            changed += upgrade_targets(value)
    elif isinstance(tree, MutableSequence):
        for value in tree:
            changed += upgrade_targets(value)
    return changed
