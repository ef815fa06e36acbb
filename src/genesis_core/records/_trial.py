"""A backtest's result file, a trial's artifact, the best trial, and a row of trials.csv."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic

from genesis_core import __version__
from genesis_core.backtest import BacktestConfig, BacktestResult
from genesis_core.data import format_times, format_ts
from genesis_core.engine import EXIT_REASONS
from genesis_core.files import read_file
from genesis_core.records._base import Part, Record, finite
from genesis_core.scoring import Outcome, Score

Metrics = dict[str, float | int | None]  # None: not a finite number (the backtest is INVALID_NUMERIC)
TRIAL_METRICS = ("num_trades", "total_return", "sharpe", "max_drawdown", "profit_factor", "win_rate", "classic_score")  # in trials.csv
Trace = dict[str, int | dict[str, int]]


class WindowInfo(Part):
    first_bar: str
    last_bar: str
    bars: int
    warmup_bars: int
    timeframe: str


class TradeRecord(Part):
    """One closed trade; a number is None when the arithmetic left finite floats (absurd prices)."""

    entry_time: str
    exit_time: str
    side: str
    entry_price: float | None
    exit_price: float | None
    units: float | None
    pnl: float | None  # net of fees and carry
    fees: float | None
    bars_held: int
    exit_reason: str
    carry: float | None = 0.0  # borrow or funding paid while held (costs.carry_bps_per_day; negative: received)


class ScoreRecord(Part):
    """A trial's outcome class and its feasibility (phase 1) and production (phase 2) scores."""

    outcome: Outcome
    feasibility: float
    production: float
    constraints_failed: list[str]

    @classmethod
    def of(cls, score: Score) -> ScoreRecord:
        return cls(outcome=score.outcome, feasibility=score.feasibility, production=score.production,
                   constraints_failed=list(score.constraints_failed))


class Series(Part):
    """Equity at each decision bar's close and the drawdown from its running peak (a fraction)."""

    time: list[str]
    equity: list[float | None]
    drawdown: list[float | None]


@dataclass(frozen=True)
class BacktestLook:
    """A result ``genesis backtest`` kept in a results folder: which config ran on which bars."""

    config: str  # its fingerprint
    symbol: str | None  # data.symbol, if the config declares it
    data_file: str  # the data file's fingerprint
    timeframe: str
    first_bar: str
    last_bar: str


def backtest_looks(results_dir: Path) -> list[BacktestLook]:
    """The results in ``results_dir``/backtests (where ``genesis backtest`` writes them); a file
    that is not one is left out."""
    looks = []
    for path in sorted((results_dir / "backtests").glob("*.json")):
        try:
            raw = json.loads(read_file(path))
            data, window, prints = raw["effective_config"]["data"], raw["window"], raw["fingerprints"]
            symbol = data.get("symbol")
            looks.append(BacktestLook(str(prints["config"]), symbol if isinstance(symbol, str) else None, str(prints["data_file"]),
                                      str(window["timeframe"]), str(window["first_bar"]), str(window["last_bar"])))
        except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
            continue
    return looks


def other_bars(path: str, ran_on: str | None, now: str) -> str | None:
    """Why a stored backtest's numbers are not those of its config re-run on its window in ``path``,
    whose bars fingerprint ``now`` where they fingerprinted ``ran_on`` (None: not recorded, or the same bars)."""
    if ran_on is None or ran_on == now:
        return None
    return f"the bars of its window in {path} are not those it ran on (the file was changed or replaced)"


class BacktestRecord(Record):
    """What ``genesis backtest`` writes: enough to re-run it (the effective config) and to prove
    what produced it (fingerprints of config, data window, data file and resources; code version)."""

    SCHEMA = 3
    genesis_core_version: str
    code_version: str
    effective_config: BacktestConfig
    fingerprints: dict[str, str]  # config, data_window, data_file, resource:<name>
    window: WindowInfo
    metrics: Metrics
    trace: Trace
    trades: list[TradeRecord] | None = None  # left out of trial artifacts
    series: Series | None = None  # per decision bar; left out of trial artifacts (a re-run gives it exactly)
    not_finite: list[str] = []  # metrics that came out NaN or infinite (stored as null): the outcome is INVALID_NUMERIC
    score: ScoreRecord | None = None  # `genesis backtest`: outcome and scores under the default scoring
    # `genesis backtest`: what buying at the window's first open and holding to its last close made (left out elsewhere:
    # trial artifacts and cache entries are as they were)
    buy_and_hold: float | None = pydantic.Field(None, exclude_if=lambda v: v is None)

    @classmethod
    def upgrade(cls, raw: Any, version: int) -> Any:
        """Version 2 -> 3: the engine's exits gained ``liquidation`` (an account cannot lose more than
        it holds), which a backtest before it never had: 0. Unmigrated, every trial of an older run
        differed from its re-run (``genesis check-equivalence``) by that count alone."""
        if version == 2 and isinstance(raw, dict):
            trace = raw.get("trace")
            if isinstance(trace, dict) and isinstance(trace.get("exits"), dict):
                raw = {**raw, "trace": {**trace, "exits": {**trace["exits"], "liquidation": trace["exits"].get("liquidation", 0)}}}
            return {**raw, "schema_version": 3}
        return super().upgrade(raw, version)

    @property
    def trial_metrics(self) -> Metrics:
        """The metrics a study's trials carry (and trials.csv shows)."""
        return {k: self.metrics[k] for k in TRIAL_METRICS}


def backtest_record(result: BacktestResult, trades: bool = True) -> BacktestRecord:
    """The record of one backtest result; ``trades`` also keeps its trades and per-bar series."""
    w = result.window
    return BacktestRecord(
        genesis_core_version=__version__,
        code_version=result.code,
        effective_config=result.config,
        fingerprints={"config": result.config_fingerprint, "data_window": w.fingerprint,
                      "data_file": result.data_file_fingerprint,
                      **{f"resource:{k}": v for k, v in sorted(result.resources.items())}},
        window=WindowInfo(first_bar=w.first_bar, last_bar=w.last_bar, bars=w.bars, warmup_bars=w.start_index,
                          timeframe=w.candles.timeframe),
        metrics=finite_metrics(result.metrics),
        trace=result.trace,
        trades=_trades(result) if trades else None,
        series=_series(result) if trades else None,
        not_finite=not_finite_metrics(result.metrics),
    )


def finite_metrics(metrics: dict[str, float | int]) -> Metrics:
    """Metrics as a record holds them: a NaN or infinity becomes None."""
    return {k: v if isinstance(v, int) else finite(v) for k, v in metrics.items()}


def not_finite_metrics(metrics: dict[str, float | int]) -> list[str]:
    """The metrics that came out NaN or infinite (a record holds them as None): the backtest is INVALID_NUMERIC."""
    return [k for k, v in metrics.items() if not math.isfinite(v)]


def _series(result: BacktestResult) -> Series:
    ts, equity, drawdown = result.curve()
    return Series(time=format_times(ts), equity=[finite(float(e)) for e in equity],
                  drawdown=[finite(float(d)) for d in drawdown])


def _trades(result: BacktestResult) -> list[TradeRecord]:
    ts = result.window.candles.timestamps
    return [TradeRecord(
        entry_time=format_ts(ts[int(t["entry_bar"])]), exit_time=format_ts(ts[int(t["exit_bar"])]),
        side="long" if t["side"] > 0 else "short", entry_price=finite(float(t["entry_price"])),
        exit_price=finite(float(t["exit_price"])), units=finite(float(t["units"])), pnl=finite(float(t["pnl"])),
        fees=finite(float(t["fees"])), bars_held=int(t["exit_bar"] - t["entry_bar"]),
        exit_reason=EXIT_REASONS[int(t["exit_reason"])], carry=finite(float(t["carry"])),
    ) for t in result.engine.trades]


class CachedFrom(Part):
    """Where a trial's result was measured when another study had evaluated the same config."""

    study: str
    trial: int


class TrialArtifact(BacktestRecord):
    """``trials/NNNNNN.json``: one evaluated trial; its effective config alone re-runs it."""

    trial_number: int
    params: dict[str, Any]  # dotted path inside params -> value
    score: ScoreRecord
    pruned: str | None = None
    cached_from: CachedFrom | None = None  # the result is another study's evaluation of the same config

    @classmethod
    def of(cls, record: BacktestRecord, trial_number: int, params: dict[str, Any], score: ScoreRecord,
           pruned: str | None, cached_from: CachedFrom | None = None) -> TrialArtifact:
        """The artifact of a trial whose backtest gave ``record`` (measured here or by another study).
        Built from parts already validated (a record, typed arguments), so not validated again:
        a sweep makes thousands a second."""
        return cls.model_construct(**{**dict(record), "trial_number": trial_number, "params": params, "score": score,
                                      "pruned": pruned, "cached_from": cached_from})

    @property
    def record(self) -> BacktestRecord:
        """The record the artifact was made from (``of``): its backtest's, without a score."""
        return BacktestRecord.model_construct(**{**{k: getattr(self, k) for k in BacktestRecord.model_fields}, "score": None})

    @staticmethod
    def json_of(record_json: str, trial_number: int, params: dict[str, Any], score: ScoreRecord,
                pruned: str | None = None, cached_from: CachedFrom | None = None) -> str:
        """``of(record, ...).model_dump_json()`` from ``record``'s JSON (a trial's record as
        ``measure`` makes it, without a score), without the record's model: a sweep's process
        receives each point's record as its JSON, and writes it into the artifact and the cache
        entry as it is. An artifact's JSON is its record's, the score set, then its own fields."""
        head = record_json.removesuffix(_NO_SCORE)
        if head == record_json:
            raise ValueError("not the JSON of a trial's record: it ends with a score")
        fields: dict[str, Any] = {"trial_number": trial_number, "params": params, "pruned": pruned, "cached_from": cached_from}
        own = _ArtifactFields.model_construct(**fields).model_dump_json()
        return f'{head}"score":{score.model_dump_json()},{own[1:]}'


_NO_SCORE = '"score":null}'  # the end of a record's JSON when it has no score: its last field
# the fields an artifact adds to its record, in its order (serialised as the artifact's own)
_ArtifactFields = pydantic.create_model(  # type: ignore[call-overload]
    "_ArtifactFields", __base__=Part,
    **{name: (f.annotation, f) for name, f in TrialArtifact.model_fields.items() if name not in BacktestRecord.model_fields})


class BestTrial(Record):
    """``best_trial.json``: the best evaluated VALID trial by production score."""

    SCHEMA = 3
    number: int
    objective: float | None  # what Optuna was told: its production score
    production_score: float
    params: dict[str, Any]
    result: TrialArtifact

    @classmethod
    def upgrade(cls, raw: Any, version: int) -> Any:
        if version == 2 and isinstance(raw, dict):  # its trial's record alone changed
            return {**raw, "result": TrialArtifact.upgrade(raw["result"], version), "schema_version": 3}
        if version == 1 and isinstance(raw, dict) and "value" in raw:
            raw = {**{k: v for k, v in raw.items() if k != "value"}, "objective": raw["value"]}
        raw = super().upgrade(raw, version)
        raw["result"] = TrialArtifact.upgrade(raw["result"], version)
        return raw


SWEPT = 0  # the phase of a sweep's trials: points of a grid, random or Sobol sweep, sampled by neither phase


class TrialRow(Part):
    """One row of ``trials.csv`` (every trial of the study, whatever its state)."""

    number: int
    state: str
    outcome: str | None = None
    objective: float | None = None  # what Optuna was told (the production score; see PhasedSampler)
    phase: int | None = None  # 1 feasibility first, 2 production (the scoring phase that sampled it), or SWEPT
    feasibility_score: float | None = None
    production_score: float | None = None
    cached: bool | None = None  # answered as a duplicate of an earlier trial of this study
    cache_reused_from: int | None = None
    cached_from: str | None = None  # "study#trial": another study's evaluation of the same config, reused
    constraints_failed: list[str] = []
    pruned: str | None = None
    params: dict[str, Any] = {}
    metrics: dict[str, float | int | None] = {}
    config_fingerprint: str | None = None
    same_outcome_as: int | None = None
    fail_reason: str | None = None
    duration_ms: float | None = None

    def to_csv(self) -> dict[str, Any]:
        return self.cells(vars(self))

    @staticmethod
    def cells(fields: dict[str, Any]) -> dict[str, Any]:
        """The CSV cells of a row's fields (every field, as the model holds them): params as
        ``param:<path>`` columns, metrics by name, None as empty. A study's rows are written from
        its trials without a model each (a tenth of a 10,000-point sweep's records)."""
        cells = {k: fields[k] for k in _HEAD}
        cells["constraints_failed"] = ";".join(fields["constraints_failed"])
        cells["pruned"] = fields["pruned"]
        cells.update({f"param:{p}": json.dumps(v) if isinstance(v, list | dict) else v for p, v in fields["params"].items()})
        cells.update(fields["metrics"])
        cells.update({k: fields[k] for k in _TAIL})
        return cells

    @classmethod
    def from_csv(cls, cells: dict[str, str], only: Collection[str] | None = None) -> TrialRow:
        """A row of trials.csv; with ``only``, of those columns (and number and state) alone, the other
        fields at their defaults: half the time, and a quarter less memory, where a few columns are read."""
        cells = {_OLD_COLUMNS.get(k, k): v for k, v in cells.items()}  # a trials.csv written before the renames
        if only is not None:
            cells = {k: v for k, v in cells.items() if k in only or k in _KEY}
        failed = cells.get("constraints_failed", "")
        return cls.model_validate({  # typed columns are converted by the model, the rest by _cell
            **{k: v or None for k, v in cells.items() if k in _TYPED},
            "constraints_failed": failed.split(";") if failed else [],
            "params": {k.removeprefix("param:"): _cell(v) for k, v in cells.items() if k.startswith("param:")},
            "metrics": {m: _cell(cells[m]) for m in TRIAL_METRICS if m in cells},
        })


def failures(reasons: list[str | None]) -> str | None:
    """The failed trials of a study (each FAIL's reason, None where it recorded none) in one line:
    how many, and the two commonest reasons with their counts; None when none failed. Unsaid, a
    strategy's bug in a region of the space passed for a quiet search (trials.csv has each reason)."""
    if not reasons:
        return None
    common = Counter(reason or "no reason recorded" for reason in reasons).most_common()
    return (f"{len(reasons):,} trial(s) failed (trials.csv fail_reason): " + "; ".join(f"{n:,}× {why}" for why, n in common[:2])
            + ("; ..." if len(common) > 2 else ""))


# trials.csv's columns around the four spread by ``TrialRow.cells`` (constraints_failed, pruned,
# params, metrics), in the fields' order
_FIELDS = tuple(TrialRow.model_fields)
_HEAD, _TAIL = _FIELDS[:_FIELDS.index("constraints_failed")], _FIELDS[_FIELDS.index("metrics") + 1:]
_TYPED = frozenset(_FIELDS) - {"params", "metrics", "constraints_failed"}  # one column each (model_fields: 2 s of a 163,000-row read)
_KEY = ("number", "state")  # what a row cannot be read without
_OLD_COLUMNS = {"value": "objective", "score_phase1": "feasibility_score", "score_phase2": "production_score",
                "score": "classic_score"}


def _cell(text: str) -> Any:
    """A CSV cell back to the value written: empty -> None, then bool, int, float, JSON, text."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for parse in (int, float, json.loads):
        try:
            return parse(text)
        except (ValueError, RecursionError):  # RecursionError: a cell of arrays nested 65,000 deep
            continue
    return text
