"""Extension points chosen by name: built-ins in a registry, or a user's ``package.module:attr``.

Strategies, score functions and samplers are all resolved here, so each says the same thing when
a name is unknown (the known names) or an import fails (what could not be imported).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from typing import Any

from genesis_core.errors import ConfigError


def load_object(name: str, kind: str) -> Any:
    """The attribute named by ``package.module:attr``; ConfigError saying why it cannot be had."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{kind} {name!r}: expected package.module:attr")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{kind} {name!r}: cannot import {module_name}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{kind} {name!r}: cannot import {attr} from {module_name}: no such attribute") from None


def resolve(name: str, registry: Mapping[str, Any], kind: str) -> Any:
    """A registered ``kind`` by name, or a user's object by ``package.module:attr``."""
    if ":" in name:
        return load_object(name, kind)
    if name not in registry:
        close = difflib.get_close_matches(name, list(registry), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown {kind} {name!r}; {hint}known: {', '.join(sorted(registry))} (or package.module:attr)")
    return registry[name]
