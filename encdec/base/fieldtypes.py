"""Values read from files (config.json, generation_config.json) checked against a dataclass's field
types, so a wrong type is one message naming the field instead of a TypeError deep in the model."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Callable


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# the type names our config annotations use -> (test, how a message names it)
_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (_is_int, "an integer"),
    "float": (lambda v: _is_int(v) or isinstance(v, float), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "None": (lambda v: v is None, "null"),
    "list[int]": (lambda v: isinstance(v, (list, tuple)) and all(_is_int(i) for i in v), "a list of integers"),
}


def wrong_type(name: str, value: Any, annotation: str) -> str | None:
    """What is wrong with `value` for a field annotated `annotation` ("int | None", ...), or None
    when it fits (or the annotation is one this module does not check)."""
    kinds = [kind.strip() for kind in annotation.split("|")]
    if any(kind not in _KINDS for kind in kinds):
        return None
    if any(_KINDS[kind][0](value) for kind in kinds):
        return None
    expected = " or ".join(_KINDS[kind][1] for kind in kinds)
    return f"{name!r} is {value!r} ({type(value).__name__}), not {expected}"


def check_field_types(obj: Any, skip: tuple[str, ...] = ("extra",)) -> None:
    """Raise ValueError naming the first field of a dataclass instance whose value has the wrong type."""
    for f in fields(obj):
        if f.name not in skip:
            problem = wrong_type(f.name, getattr(obj, f.name), str(f.type))
            if problem:
                raise ValueError(f"{problem}; fix the value")
