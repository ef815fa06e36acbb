"""Strict, typed configuration: unknown keys are errors that name the path and the closest key."""

from __future__ import annotations

import difflib
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from genesis_core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config section: unknown keys rejected, values validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Known field names of the (nested) model at ``loc``, for suggestions."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return []
        annotation = fields[part].annotation
        current = next(
            (a for a in (annotation, *getattr(annotation, "__args__", ())) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def describe_validation_error(model: type[BaseModel], error: ValidationError, prefix: str = "") -> str:
    """One line per problem: ``path: message`` plus 'did you mean' for unknown keys.

    ``prefix`` is where ``model`` sits in the whole config (``params``), so paths are complete.
    """
    lines = []
    for e in error.errors():
        loc = tuple(e["loc"])
        path = ".".join([prefix] * bool(prefix) + [str(p) for p in loc]) or "(top level)"
        if e["type"] == "extra_forbidden":
            known = _fields_at(model, loc[:-1])
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
