"""Champion files: ``ChampionStore`` owns ``<results>/champions/{symbol}_{timeframe}.json``, its
history and the lock that serialises promotions across processes."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from genesis_core.backtest import BacktestConfig
from genesis_core.config import name_problem
from genesis_core.errors import ConfigError, GenesisError, clip
from genesis_core.files import remove_stale_temporaries
from genesis_core.records._base import Part, Record, iso, read_record, write_record
from genesis_core.records._trial import Metrics
from genesis_core.records._validation import WindowRef


class ValidationWindowRef(WindowRef):
    start: str
    end: str


class ChampionData(Part):
    file: str  # the data file's fingerprint
    path: str
    explore: WindowRef
    validation: list[ValidationWindowRef]


class ChampionScores(Part):
    explore: float
    validation: float
    ranking: str


class ChampionMetrics(Part):
    explore: Metrics
    validation: list[Metrics]


class RunRef(Part):
    study: str
    run_dir: str
    trial: int


class ChampionRecord(Record):
    """The promoted effective config of (symbol, timeframe) and what it was measured on."""

    SCHEMA = 2
    symbol: str
    timeframe: str
    config_fingerprint: str
    effective_config: BacktestConfig
    data: ChampionData
    scores: ChampionScores
    metrics: ChampionMetrics
    run: RunRef
    code_version: str
    created: str


class GateRecord(Part):
    name: str
    passed: bool
    detail: str


class HistoryEntry(Part):
    """A promotion, refusal, rollback or recovery; installs carry the whole champion they installed.
    An install is written ``pending`` before the champion file and marked ``done`` after it, so the
    history always names the champion; a pending one is resolved by what the champion file holds."""

    time: str
    action: Literal["promote", "reject", "rollback", "recovered"]
    reason: str
    state: Literal["pending", "done", "failed"] = "done"
    run: str | None = None
    study: str | None = None
    trial: int | None = None
    current: str | None = None  # the champion's fingerprint when this happened
    config_fingerprint: str | None = None
    gates: list[GateRecord] = []
    previous: str | None = None
    champion: ChampionRecord | None = None


class ChampionHistory(Record):
    SCHEMA = 2
    entries: list[HistoryEntry] = []

    @classmethod
    def upgrade(cls, raw: Any, version: int) -> Any:
        if version == 0 and isinstance(raw, list):  # a bare list of entries
            entries = [{**e, "champion": ChampionRecord.upgrade(e["champion"], 0)} if e.get("champion") else e for e in raw]
            return {"schema_version": 1, "entries": entries}
        return super().upgrade(raw, version)


class ChampionWriteError(GenesisError):
    """A promotion or rollback that could not be written whole: the message says what did happen."""

    exit_code = 1


class ChampionStore:
    """The champion of one (symbol, timeframe) in a results folder. Files are replaced atomically
    (fsync'd); an install's history entry is written pending, then the champion, then the entry is
    marked done: the champion and its history change together or not at all, as every read of
    the history shows. ``clock`` gives the recorded times."""

    def __init__(self, results_dir: str | Path, symbol: str, timeframe: str, clock: Callable[[], float] = time.time) -> None:
        for name in (symbol, timeframe):  # they name the files: never a path
            problem = name_problem(name)
            if problem:
                raise ConfigError(f"champion of {clip(symbol)} {clip(timeframe)}: {problem}")
        self.results_dir = Path(results_dir)
        self.symbol = symbol
        self.timeframe = timeframe
        self.clock = clock
        folder = self.results_dir / "champions"
        self.path = folder / f"{symbol}_{timeframe}.json"
        self.history_path = folder / f"{symbol}_{timeframe}.history.json"
        self._lock_path = folder / ".lock"

    def now(self) -> str:
        return iso(self.clock(), precise=True)

    def load(self) -> ChampionRecord | None:
        return read_record(self.path, ChampionRecord) if self.path.exists() else None

    def _stored_history(self) -> list[HistoryEntry]:
        return read_record(self.history_path, ChampionHistory).entries if self.history_path.exists() else []

    def history(self) -> list[HistoryEntry]:
        """Every entry, oldest first; an install left pending by an interrupted write is shown as
        done if the champion file holds what it installed, as failed if not (and stored so by the
        next promotion or rollback)."""
        return self._resolved(self._stored_history(), self.load())

    @staticmethod
    def _resolved(entries: list[HistoryEntry], current: ChampionRecord | None) -> list[HistoryEntry]:
        out = []
        for e in entries:
            if e.state == "pending":
                installed = e.champion is not None and current is not None and e.champion.created == current.created
                e = e.model_copy(update={"state": "done" if installed else "failed"})
            out.append(e)
        return out

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One promotion or rollback at a time per results folder, across processes; what a writer
        killed mid-write left behind is removed first."""
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_path.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            remove_stale_temporaries(self._lock_path.parent)
            yield

    def record(self, entry: HistoryEntry, install: ChampionRecord | None = None) -> None:
        """Append ``entry`` to the history; for an install, write it pending, replace the champion,
        then mark it done. ChampionWriteError says what happened when a write fails."""
        entries = self._stored_history()
        if install is None:
            try:
                write_record(self.history_path, ChampionHistory(entries=[*entries, entry]))
            except OSError as exc:
                raise ChampionWriteError(f"nothing changed: the {entry.action} could not be recorded in "
                                         f"{self.history_path}: {exc}") from None
            return
        try:
            write_record(self.history_path, ChampionHistory(entries=[*entries, entry.model_copy(update={"state": "pending"})]))
        except OSError as exc:
            raise ChampionWriteError(f"nothing changed: cannot write {self.history_path}: {exc}") from None
        try:
            write_record(self.path, install)
        except OSError as exc:
            raise ChampionWriteError(f"the champion was not replaced (cannot write {self.path}: {exc}); its history entry "
                                     "reads as failed") from None
        try:
            write_record(self.history_path, ChampionHistory(entries=[*entries, entry.model_copy(update={"state": "done"})]))
        except OSError as exc:
            raise ChampionWriteError(f"the champion WAS replaced ({install.config_fingerprint[:12]}), but its history entry "
                                     f"could not be marked done ({exc}); it reads as done and is stored so by the next "
                                     "promotion or rollback") from None

    def reconcile(self) -> ChampionRecord | None:
        """The current champion, after storing the resolved state of a pending install, and after
        recording the champion in the history if its install entry is missing (a champion written by
        an older version that died between the two files)."""
        current = self.load()
        stored = self._stored_history()
        resolved = self._resolved(stored, current)
        if resolved != stored:
            write_record(self.history_path, ChampionHistory(entries=resolved))
        installs = [e.champion for e in resolved if e.champion is not None and e.state == "done"]
        last = installs[-1] if installs else None
        if current is not None and (last is None or last.created != current.created):
            self.record(HistoryEntry(
                time=self.now(), action="recovered", config_fingerprint=current.config_fingerprint,
                reason="the champion file was written but its history entry was lost (interrupted promotion); recorded now",
                previous=None if last is None else last.config_fingerprint, champion=current,
                run=current.run.run_dir, trial=current.run.trial,
            ))
        return current
