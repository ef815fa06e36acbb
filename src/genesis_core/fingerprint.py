"""Canonical JSON and sha256 fingerprints, the one way every object in Genesis-Core is identified."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def _normalise(value: Any) -> Any:
    """Turn a value into plain JSON types so that equal configs always serialise identically."""
    kind = type(value)  # the plain types first, by identity: a config is thousands of them
    if kind is str or value is None:
        return value
    if kind is dict:
        return {str(k): _normalise(v) for k, v in value.items()}
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(f"cannot fingerprint a non-finite float: {value}")
        return 0.0 if value == 0.0 else value
    if kind is int or kind is bool:
        return value
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"cannot fingerprint a non-finite float: {f}")
        return 0.0 if f == 0.0 else f  # -0.0 and 0.0 are the same parameter
    if isinstance(value, Path):
        return value.as_posix()
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot fingerprint a value of type {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, floats as shortest round-trip repr."""
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def strict_json(value: Any, indent: int | None = 2) -> str:
    """The JSON every output of Genesis-Core is: strict (NaN or infinity is a bug, never written)."""
    return json.dumps(value, indent=indent, allow_nan=False)


ABSENT = "(absent)"


def differences(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted path, a's value, b's value) wherever two JSON trees differ canonically; a key
    missing on one side shows as ABSENT."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += differences(a.get(key, ABSENT), b.get(key, ABSENT), f"{path}.{key}" if path else str(key))
        return out
    return [] if canonical_json(a) == canonical_json(b) else [(path, a, b)]


def fingerprint(value: Any) -> str:
    """sha256 hex digest of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def fingerprint_arrays(*arrays: np.ndarray, label: str = "") -> str:
    """sha256 over a label and the little-endian bytes of each array (dtype and shape included)."""
    h = hashlib.sha256(label.encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


@functools.cache
def code_version() -> str:
    """Hash of the package's own source, so a result records exactly which code produced it (once
    a process: ``package_source`` is what is on disk now)."""
    return package_source()


def package_source() -> str:
    """Hash of the package's source as it is on disk now (2.5 ms)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()
