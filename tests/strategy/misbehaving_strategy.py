"""A user strategy with a bug chosen by its ``bug`` parameter, selected as
``tests.strategy.misbehaving_strategy:Misbehaving``: what it returns must be refused in one line."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np

from genesis_core.config import StrictModel
from genesis_core.features import FeatureStore
from genesis_core.strategy import Decisions, Strategy, StrategyTrace

_2023 = 1672531200  # 2023-01-01T00:00:00Z
_DECIDED: dict[int, int] = {}  # windows each process decided (by pid: a forked child starts from none)


class MisbehavingParams(StrictModel):
    bug: str = "none"
    period: int = 20  # of the SMA it trades around


class Misbehaving(Strategy):
    name = "misbehaving"
    Params = MisbehavingParams

    def warmup_bars(self, params: MisbehavingParams, timeframe_seconds: int) -> Any:
        if params.bug == "warmup raises":
            return {"sma": 20}["ema"]
        return {"warmup -5": -5, "warmup 20.5": 20.5, "warmup True": True}.get(params.bug, params.period)

    def resources(self, params: MisbehavingParams) -> Any:
        if params.bug == "resources raises":
            return {"model": {}["model"]}
        return {"model": 3} if params.bug == "resources ints" else {}

    def trained_on(self, params: MisbehavingParams) -> Any:
        if params.bug == "trained_on raises":
            return [{"model": 1}["fitted"]]
        return {"trained_on None": None, "trained_on dicts": [{"first_bar": "2020-01-01"}]}.get(params.bug, [])

    def decide(self, features: FeatureStore, params: MisbehavingParams, start: int) -> Any:
        c = features.candles
        spins = 0
        while params.bug == "never ends":  # a loop whose end condition these parameters never meet
            spins += 1
        if params.bug == "raises" or (params.bug == "raises on 2023" and c.timestamps[-1] >= _2023):
            return len(c) / 0
        if params.bug == "prints":  # a user's debugging: Python's print, and what compiled code's printf writes
            print("deciding on", len(c), "bars")
            os.write(1, b"a kernel's printf\n")
        if params.bug == "exits":
            sys.exit(3)  # a script's habit: it ended the whole run, every trial before it unrecorded
        decided = _DECIDED[os.getpid()] = _DECIDED.get(os.getpid(), 0) + 1
        worker = multiprocessing.parent_process() is not None
        if (params.bug == "crashes at period 17" and params.period == 17) or (
                params.bug == "crashes in a worker process" and worker) or (
                params.bug == "crashes in a worker process's third trial" and worker and decided == 3) or (
                params.bug == "crashes on 2023" and c.timestamps[-1] >= _2023):
            ctypes.string_at(0)  # as compiled code with a bug does (numba checks no bounds): it reads address 0, SIGSEGV
        if params.bug.startswith("crashes in a worker process"):
            time.sleep(0.2)  # the main process, slow, leaves the first trials to the others
        signal = {"peeks at the next bar": np.append(c.close[1:], c.close[-1]) - c.close,  # the bar after each: shift(-1)
                  "the window's mean": c.close - c.close[start:].mean(),  # a statistic of bars to come
                  "coin flips": np.random.default_rng().standard_normal(len(c)),  # unseeded: not deterministic
                  }.get(params.bug, c.close - features.get(f"sma:{params.period}"))
        side = np.where(np.arange(len(c)) >= start, np.sign(np.nan_to_num(signal)), 0).astype(np.int8)
        trace = {
            "candidates 3.5": StrategyTrace(len(c) - start, 0, 10, 3.5),
            "signals -1": StrategyTrace(len(c) - start, 0, -1, 0),
            "blocked list": StrategyTrace(len(c) - start, 0, 0, 0, [("cooldown", 1)]),
            "blocked 'many'": StrategyTrace(len(c) - start, 0, 0, 0, {"cooldown": "many"}),
        }.get(params.bug, StrategyTrace(len(c) - start, 0, int((side != 0).sum()), int((side != 0).sum())))
        decisions = replace(Decisions.empty(len(c), trace), side=side, size=np.full(len(c), 0.5))
        return {"a tuple": (side, decisions.size), "None": None, "a trace of a dict": replace(decisions, trace={})}.get(
            params.bug, decisions)
