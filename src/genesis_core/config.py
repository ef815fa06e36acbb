"""Strict, typed configuration: unknown keys are errors that name the path and the closest key."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import orjson
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from genesis_core.errors import ConfigError, as_written, clip, fault_message, unknown_key_hint

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config section: unknown keys rejected, values validated on assignment too.
    What a user wrote goes through ``parse_model``, which adds strict types."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _no_nul(value: str) -> str:
    """A NUL character (YAML's ``"\\0"``), which no path holds, refused: it ended in a traceback."""
    if "\0" in value:
        raise ValueError(f"{clip(repr(value))} holds a NUL character (\\0), which no path can")
    return value


def _user_path(value: str) -> str:
    """A path as a shell reads it: a leading ``~`` (or ``~user``) is that home folder. A config's
    ``data.path: ~/candles.csv`` was not found, and ``results_dir: ~/results`` made a folder named
    ``~`` where genesis ran."""
    value = _no_nul(value)
    return os.path.expanduser(value) if value.startswith("~") else value


UserPath = Annotated[str, AfterValidator(_user_path)]  # a file or folder a config names
PathText = Annotated[str, AfterValidator(_no_nul)]  # a URL or name that becomes a path (a storage's)


MAX_CONFIG_BYTES = 1 << 20  # a config is a page of YAML; a megabyte is not one


class _Checked(yaml.constructor.SafeConstructor):
    """YAML without the surprises: a duplicate key is an error, and dates stay the strings they
    were written as (``2021-01-01`` is a window bound, not a datetime)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *base' then overriding a key is YAML's own way to override, not a duplicate
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise ConfigError(f"line {line}: a key must be a plain value, not a {type(key).__name__}")
            if key in seen:
                raise ConfigError(f"key {key!r} given twice (lines {seen[key]} and {line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep)


class _Loader(_Checked, yaml.SafeLoader):
    """Python's parser: its errors say where and what."""


class _FastLoader(_Checked, yaml.CSafeLoader):
    """libyaml's parser (20 ms of a run's start, for its two configs, in Python's); a file it
    cannot parse is parsed again by ``_Loader`` for the error."""


# YAML 1.2's numbers. YAML 1.1 (PyYAML's) wants a dot and a signed exponent in a float, so 1e-4,
# 1e6 and 1.0e6 were text, then refused by strict types as "not a valid number", and -.5 was text;
# and it read 010 as 8 (octal) and 1:30 as 90 (base 60), silently. Octal is 0o10 here, and 1:30 text.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_INT = re.compile(r"^(?:[-+]?0b[01_]+|[-+]?0o[0-7_]+|[-+]?0x[0-9a-fA-F_]+|[-+]?[0-9][0-9_]*)$")
_NUMBERS = {"tag:yaml.org,2002:float": _FLOAT, "tag:yaml.org,2002:int": _INT}
_Loader.yaml_implicit_resolvers = _FastLoader.yaml_implicit_resolvers = {
    first: [(tag, _NUMBERS.get(tag, regex)) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _integer(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """An integer as ``_INT`` matched it: a leading zero is decimal (YAML 1.1 read 010 as octal 8)."""
    text = str(loader.construct_scalar(node)).replace("_", "")
    digits = text.lstrip("+-")
    value = int(digits, 0) if digits[:2].lower() in ("0b", "0o", "0x") else int(digits, 10)
    return -value if text.startswith("-") else value


_Checked.add_constructor("tag:yaml.org,2002:int", _integer)


MAX_CONFIG_NODES = 100_000  # values once YAML aliases are expanded: ten levels of ten aliases are 10^10


INT64 = (-(2**63), 2**63 - 1)  # the integers the engine, NumPy and the records' JSON (orjson) hold


def _unfit(tree: Any, prefix: str = "") -> str | None:
    """``path: why`` of the first value no config may hold, if any: NaN or infinity (JSON has
    none), or an integer past 64 bits (it failed deep in a compiled kernel or a record's write).
    ConfigError when the tree is too large once aliases are expanded (everything downstream walks
    it whole)."""
    stack: list[tuple[str, Any]] = [(prefix, tree)]
    walked = 0
    while stack:
        path, value = stack.pop()
        walked += 1
        if walked > MAX_CONFIG_NODES:
            raise ConfigError(f"more than {MAX_CONFIG_NODES:,} values once aliases are expanded; not a config file")
        if isinstance(value, float) and not math.isfinite(value):
            return f"{path or '(top level)'}: NaN and infinity are not config values (leave the key out, or null for none)"
        if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
            return f"{path or '(top level)'}: {value} is past the 64-bit integers Genesis-Core computes with ({INT64[0]} .. {INT64[1]})"
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        stack += [(f"{path}.{key}" if path else str(key), item) for key, item in items]
    return None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from disk, or ConfigError naming the file and what is wrong with it: not
    UTF-8, not YAML, a duplicate key, a NaN or infinity or an integer past 64 bits, empty, or not
    a mapping."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes; not a config file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (line {line}, byte {exc.start}); save it as UTF-8") from None
    try:
        try:
            loaded = yaml.load(text, Loader=_FastLoader)  # noqa: S506 - a CSafeLoader subclass
        except yaml.YAMLError:
            loaded = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass: its error, said better
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"{path}: not valid YAML{where}: {clip(what, 200)}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {clip(' '.join(str(exc).split()), 200)}") from None
    if loaded is None or loaded == {}:
        raise ConfigError(f"{path}: the config is empty; nothing would be chosen, every default silently used")
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
    try:
        bad = _unfit(loaded)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if bad:
        raise ConfigError(f"{path}: {bad}")
    return loaded


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot name a file or folder (a study, a symbol, a timeframe), or None:
    letters, digits, '.', '_' and '-', starting with a letter or digit, at most 100."""
    if NAME.fullmatch(value):
        return None
    return f"{clip(value)!r} is not a name: use letters, digits, '.', '_' and '-', starting with a letter or digit (at most 100)"


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
        member, is_tag = _step(current, loc[-1])
        if is_tag:  # a tagged union member's own check (low below high): the location ends at the member
            return list(member.model_fields), tuple(shown)
        current = next((a for a in map(_unwrap, get_args(current)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    known = list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []
    return known, (*shown, loc[-1])


_WORDS = frozenset({"string_type", "literal_error", "enum"})  # pydantic's errors where a word was expected


def describe_validation_error(model: type[BaseModel], error: ValidationError, prefix: str = "") -> str:
    """One line per problem: ``path: message`` plus 'did you mean' for unknown keys.

    ``prefix`` is where ``model`` sits in the whole config (``params``), so paths are complete.
    """
    lines = []
    for e in error.errors():
        known, loc = _locate(model, tuple(e["loc"])) if e["loc"] else ([], ())
        path = ".".join([prefix] * bool(prefix) + [str(p) for p in loc]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key{unknown_key_hint(str(loc[-1]), known)}")
        elif e["type"] == "value_error" and "error" in e.get("ctx", {}):  # our own validators' words, unprefixed
            lines.append(f"{path}: {e['ctx']['error']}")
        elif e["type"] in _WORDS and isinstance(e.get("input"), bool):
            lines.append(f"{path}: {e['msg']}, not {as_written(e['input'])}: YAML reads an unquoted yes, no, on or off as true or "
                         "false: quote it")
        else:
            lines.append(f"{path}: {fault_message(e)}")
    if len(lines) == 1:
        return f"invalid configuration: {lines[0]}"
    return "invalid configuration:\n  " + "\n  ".join(lines)


def parse_model(model: type[M], data: Any, prefix: str = "") -> M:
    """Validate ``data`` (plain JSON types, as YAML gives) into ``model`` or raise ConfigError with
    a readable message. Strict types, validated as JSON: lists fill tuples and strings enums, but
    ``true`` or ``'10'`` is never a number."""
    try:
        text = json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix or 'config'}: not plain data ({exc})") from None
    try:  # the walk only where orjson finds an integer past 53 bits (5 µs: a regex over the text took 30 µs a trial)
        orjson.dumps(data, option=orjson.OPT_STRICT_INTEGER | orjson.OPT_NON_STR_KEYS)
        bad = None
    except TypeError:
        bad = _unfit(data, prefix)
    if bad:
        raise ConfigError(f"invalid configuration: {bad}")
    try:
        return model.model_validate_json(text, strict=True)
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
