"""Strict, typed configuration: unknown keys are errors that name the path and the closest key."""

from __future__ import annotations

import difflib
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from genesis_core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config section: unknown keys rejected, values validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _step(annotation: Any, part: Any) -> tuple[Any, bool]:
    """Follow one error-location part; returns the next annotation and whether ``part`` was a
    discriminator tag (pydantic puts the tag of a tagged union into the location)."""
    annotation = _unwrap(annotation)
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(part)
        return (field.annotation if field else None), False
    if origin in (dict, list, tuple):
        return (get_args(annotation)[-1] if get_args(annotation) else None), False
    if origin in (Union, UnionType):
        models = [_unwrap(a) for a in get_args(annotation) if isinstance(_unwrap(a), type) and issubclass(_unwrap(a), BaseModel)]
        for m in models:
            tag = m.model_fields.get("type")
            if tag is not None and part in get_args(tag.annotation):
                return m, True
        return (_step(models[0], part) if models else (None, False))
    return None, False


def _locate(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[str], tuple[Any, ...]]:
    """Known keys where the last part of ``loc`` was given, and ``loc`` without union tags."""
    current: Any = model
    shown: list[Any] = []
    for part in loc[:-1]:
        current, is_tag = _step(current, part)
        if not is_tag:
            shown.append(part)
        if current is None:
            return [], (*shown, loc[-1])
    current = _unwrap(current)
    if get_origin(current) in (Union, UnionType):
        current = next((a for a in map(_unwrap, get_args(current)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    known = list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []
    return known, (*shown, loc[-1])


def describe_validation_error(model: type[BaseModel], error: ValidationError, prefix: str = "") -> str:
    """One line per problem: ``path: message`` plus 'did you mean' for unknown keys.

    ``prefix`` is where ``model`` sits in the whole config (``params``), so paths are complete.
    """
    lines = []
    for e in error.errors():
        known, loc = _locate(model, tuple(e["loc"])) if e["loc"] else ([], ())
        path = ".".join([prefix] * bool(prefix) + [str(p) for p in loc]) or "(top level)"
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else (f"; known keys: {', '.join(known)}" if known else "")
            lines.append(f"{path}: unknown key{hint}")
        else:
            lines.append(f"{path}: {e['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def parse_model(model: type[M], data: Any, prefix: str = "") -> M:
    """Validate ``data`` into ``model`` or raise ConfigError with a readable message."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(model, exc, prefix)) from None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; values of ``override`` win, lists are replaced whole."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
