"""User sampler classes for tests, named as a config names them (``tests.user_samplers:Class``)."""

from __future__ import annotations

from typing import Any

import optuna


class TakesAnyKeyword(optuna.samplers.RandomSampler):
    """Takes a keyword of its own from ``**kwargs``: its keywords cannot be known from its signature."""

    def __init__(self, **kwargs: Any) -> None:
        self.jitter = kwargs.pop("jitter")
        super().__init__(**kwargs)


class NamesItsKeywords(optuna.samplers.RandomSampler):
    def __init__(self, seed: int | None = None, jitter: float = 0.0) -> None:
        self.jitter = jitter
        super().__init__(seed=seed)


class NoSignature(optuna.samplers.RandomSampler):
    """Its ``__init__`` has no signature to read, as a compiled class's may not."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    __init__.__signature__ = "not a signature"  # type: ignore[attr-defined]
