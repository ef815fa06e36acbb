"""What every result file is: a pydantic model with a schema version, read and written whole.

A file of an older schema version is migrated on read (each record says how, version by
version); a newer one, or one that does not fit its model, is refused with the path, the
version and what is wrong, never half read.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from genesis_core.errors import GenesisError, clip, problems
from genesis_core.files import atomic_write, read_file

R = TypeVar("R", bound="Record")


class SchemaError(GenesisError):
    """A result file this version cannot read: the message names the file and its schema version."""

    exit_code = 2


class Part(BaseModel):
    """A section of a record: unknown keys are refused. Written as strict JSON: a value that is not
    a finite number is null (``finite`` makes it None first, where a record may hold one)."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="null")


def finite(value: float) -> float | None:
    """``value``, or None when it is NaN or infinite (strict JSON has no such numbers)."""
    return value if math.isfinite(value) else None


def formatted(value: Any, spec: str = ",.4f") -> str:
    """A number for a table or a page: ``spec`` for floats (a metric of ``metrics.SHARES``: its
    percentage), '-' for one that is not finite (stored as null); anything else as text."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


class Record(Part):
    """A whole result file. ``SCHEMA`` is the version this code writes; ``upgrade`` migrates the
    raw JSON of an older version one step (version n -> n + 1), or raises SchemaError."""

    SCHEMA: ClassVar[int] = 1
    schema_version: int = 1

    def model_post_init(self, context: Any) -> None:
        if "schema_version" not in self.model_fields_set:
            self.schema_version = self.SCHEMA  # what this code writes

    @classmethod
    def upgrade(cls, raw: Any, version: int) -> Any:
        """Version 0 is the shape written before schema versions existed (unchanged unless
        overridden); version 1 named three different things 'score' (``renamed_scores``)."""
        if version == 0 and isinstance(raw, dict):
            return {"schema_version": 1, **raw}
        if version == 1 and isinstance(raw, dict):
            return {**renamed_scores(raw), "schema_version": 2}
        raise SchemaError(f"no migration of a {cls.__name__} from schema version {version}")


_PHASES = {"phase1": "feasibility", "phase2": "production"}
_FLAT = {"score_phase1": "feasibility_score", "score_phase2": "production_score"}


def renamed_scores(node: Any, key: str | None = None) -> Any:
    """Schema 1 -> 2: the backtest's composite metric ``score`` is ``classic_score``; a score
    record's ``phase1``/``phase2`` are ``feasibility``/``production``; a window result's ``score``
    and a ``score_phase2`` are ``production_score`` (``score_phase1``: ``feasibility_score``)."""
    if isinstance(node, list):
        return [renamed_scores(v, key) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        child = k
        if key == "metrics" and k == "score":
            k = "classic_score"
        elif key == "metrics" and k in ("explore", "validation"):
            child = "metrics"  # a champion's metrics: {explore: metrics, validation: [metrics]}
        elif k in _PHASES and "outcome" in node:
            k = _PHASES[k]
        elif k == "score" and isinstance(v, int | float):
            k = "production_score"
        k = _FLAT.get(k, k)
        out[k] = 2 if k == "schema_version" and v == 1 else renamed_scores(v, child)  # nested records too
    return out


def _not_finite(text: str) -> NoReturn:
    raise ValueError(f"{clip(text)} is not a finite number (Genesis-Core writes strict JSON)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        _not_finite(text)
    return value


def _strict_json(data: bytes) -> Any:
    """A record's JSON as Genesis-Core writes it, every number finite. Python's parser also reads
    NaN, Infinity and 1e400 (as inf), which a file edited by hand may hold, and a number so read
    ended `runs list --json` in a traceback. orjson refuses them (and reads a record in half the
    time); what it refuses is read again by Python's parser, each number checked, to say why (or to
    read what only Python reads, a lone surrogate's escape)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data, parse_constant=_not_finite, parse_float=_finite)


def read_record(path: Path, model: type[R]) -> R:
    """``path`` as ``model``, migrated from an older schema version if need be."""
    try:
        raw = _strict_json(read_file(path))
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read: {exc.strerror}") from None
    except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested 100,000 deep
        raise SchemaError(f"{path}: not valid JSON: {exc}") from None
    version = written = raw.get("schema_version", 0) if isinstance(raw, dict) else 0
    if not isinstance(version, int) or version > model.SCHEMA:
        raise SchemaError(f"{path}: {model.__name__} of schema version {version!r}, newer than this genesis-core "
                          f"reads (up to {model.SCHEMA}); upgrade genesis-core")
    try:
        while version < model.SCHEMA:
            raw = model.upgrade(raw, version)
            version += 1
    except SchemaError as exc:
        raise SchemaError(f"{path}: {exc}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise SchemaError(f"{path}: not a valid {model.__name__} (schema version {written}): {problems(exc)}") from None


def write_record(path: Path, record: Record, indent: int | None = 1) -> None:
    """Write ``record`` atomically (see ``genesis_core.files``)."""
    atomic_write(path, record.model_dump_json(indent=indent))


def iso(seconds: float, precise: bool = False) -> str:
    """A clock reading as ISO-8601 UTC (microseconds when ``precise``)."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ" if precise else "%Y-%m-%dT%H:%M:%SZ")
