"""A run's folder and its metadata file: ``RunFolder`` owns every path in ``<results>/runs/<study>/``."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import itertools
import os
import re
import socket
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import orjson
from pydantic import ValidationError

from genesis_core.backtest import BacktestConfig
from genesis_core.errors import ConfigError, clip, problems
from genesis_core.files import atomic_write, is_whole, read_file, remove_stale_temporaries, sync_all
from genesis_core.records._base import Part, Record, SchemaError, iso, read_record
from genesis_core.records._trial import BestTrial, TrialArtifact, TrialRow
from genesis_core.records._validation import ValidationReport, WalkForwardReport


class CheckRecord(Part):
    name: str
    status: Literal["pass", "warn", "fail"]
    detail: str


class PreflightRecord(Part):
    """What preflight said before a session."""

    ok: bool
    failed: int
    warnings: int
    checks: list[CheckRecord]


class PreflightSkipped(Part):
    """The session started without preflight (``--skip-preflight``)."""

    skipped: Literal[True] = True


def preflight_warnings(record: PreflightRecord | PreflightSkipped | None) -> list[str]:
    """What preflight warned of before a session, one line per check."""
    return [f"preflight {c.name}: {c.detail}" for c in getattr(record, "checks", []) if c.status == "warn"]


class Session(Part):
    """One ``genesis optimize`` process's share of a run."""

    started: str
    finished: str
    seconds: float
    workers: int
    max_trials: int | None
    interrupted: bool
    signal: str | None = None  # what interrupted it: SIGINT (Ctrl-C) or SIGTERM
    stopped_reason: str | None
    widened: int
    notes: list[str]
    failed_workers: list[int | None]
    preflight: PreflightRecord | PreflightSkipped | None
    slot: int = 0  # 0 alone; another when it joined sessions already at work on the study
    sampler_seeds: list[int] = []  # one per worker process (empty without meta.sampler.kwargs.seed)

    def cautions(self) -> list[str]:
        """What its trials should be read with: preflight's warnings (or that it was skipped), its notes."""
        skipped = ["started without preflight (--skip-preflight)"] if isinstance(self.preflight, PreflightSkipped) else []
        return skipped + preflight_warnings(self.preflight) + self.notes


class CacheStats(Part):
    total_trials: int
    cache_hits: int  # duplicates of earlier trials of this study
    hit_rate: float
    unique_backtests: int  # backtests run for this study
    reused_from_other_studies: int = 0  # trials of this study whose result another study had measured


class BestRef(Part):
    number: int
    production_score: float


class RunRecord(Record):
    """``run.json``: what a run was made with and what it holds, session by session.

    ``config`` is the study config as validated (the whole optimizer YAML, defaults filled in);
    the layer that owns each section parses it (``genesis_core.workflow.StudyConfig``)."""

    SCHEMA = 2
    study_name: str
    storage: str
    signature: dict[str, str] | None
    search_space: dict[str, dict[str, Any]]
    config: dict[str, Any]
    fixed_config: BacktestConfig
    versions: dict[str, str]
    sessions: list[Session]
    cache: CacheStats
    states: dict[str, int]
    outcomes: dict[str, int]
    best_trial: BestRef | None
    identical_outcomes: int
    run_id: str | None = None  # the study's (``genesis_run_id``): whose run the folder is; None in a file written before

    @classmethod
    def upgrade(cls, raw: Any, version: int) -> Any:
        if version == 0 and isinstance(raw, dict) and "optimizer_config" in raw:
            raw = {k: v for k, v in raw.items() if k != "optimizer_config"} | {"config": raw["optimizer_config"]}
        return super().upgrade(raw, version)


_TRIAL_FILE = re.compile(r"\d{6,}\.json")
_T = TypeVar("_T")


class _NotATrialRow(ValueError):
    """A line of trials.csv read whole that holds no trial's row."""


def _whole_rows(reader: csv.DictReader[str]) -> Iterator[dict[str, str]]:
    """``reader``'s rows, each with a cell under every column and none past the last (a row cut
    short ended in a TypeError traceback, one too long in an AttributeError)."""
    columns = len(reader.fieldnames or ())
    for row in reader:
        if None in row or None in row.values():  # how DictReader marks a row longer or shorter than its header
            cells = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or ())
            raise _NotATrialRow(f"{cells} cell(s) under a header of {columns}")
        yield row


def _number(row: dict[str, str]) -> int:
    """A row's trial number, read from its number column alone: ``TrialRow.from_csv`` parses every
    cell (7.7 s of 172,800 rows, for a staleness check that needs only these)."""
    try:
        return int(row["number"])
    except ValueError:
        raise _NotATrialRow(f"number {clip(row['number'])} is not a whole number") from None


def _leads_outside(path: Path, within: Path | None) -> bool:
    """Whether ``path`` resolves outside ``within`` (a link out of a served folder); never without one."""
    return within is not None and not path.resolve().is_relative_to(within.resolve())


def _trial_name(number: int) -> str:
    """Trial ``number``'s artifact, inside the run folder (the name ``_TRIAL_FILE`` matches)."""
    return f"trials/{number:06d}.json"
RUN_FILE = "run.json"
WALK_FORWARD_FILE = "walk_forward.json"
CRASHES_FILE = "crashes.json"


class Mirror(Protocol):
    """A second home for a run's files, which every machine of a fleet reaches (the study's database)."""

    def put(self, run: str, files: dict[str, bytes]) -> None:
        """Store ``files`` (path inside the run folder -> content) of ``run``, all or none."""
        ...

    def pull(self, run: str, folder: Path, trials: bool | Collection[str] = True) -> int:
        """Write the run's files into ``folder`` (trial artifacts already there are kept; none without
        ``trials``, only those named when it names some); how many it holds."""
        ...


@dataclass(frozen=True)
class RunFolder:
    """The one owner of a run's files: run.json, trials.csv, best_trial.json, trials/NNNNNN.json,
    validation.json, crashes.json and, for walk-forward, walk_forward.json and the fold configs. Every write is
    atomic, and also goes to ``mirror`` when there is one. ``clock`` gives the times recorded in them."""

    path: Path
    clock: Callable[[], float] = field(default=time.time, compare=False)
    # a folder no read may leave: a symlink that resolves outside it is refused (a server's served folder)
    within: Path | None = field(default=None, compare=False)
    mirror: Mirror | None = field(default=None, compare=False)

    def sync(self, trials: bool | Collection[int] = True) -> int:
        """Bring the folder up to date from the mirror (other machines' files; the trial artifacts only
        with ``trials``, or those of the trials it lists); how many files it holds there."""
        if self.mirror is None:
            return 0
        return self.mirror.pull(self.name, self.path, trials if isinstance(trials, bool) else {_trial_name(n) for n in trials})

    def _write(self, name: str, text: str, durable: bool = True) -> Path:
        """``text`` as the file ``name`` (a path inside the run folder), here (on disk when this
        returns, unless not ``durable``: see ``atomic_write``) and in the mirror."""
        path = self.path / name
        atomic_write(path, text, durable)
        if self.mirror is not None:
            self.mirror.put(self.name, {name: text.encode()})
        return path

    def _at(self, *parts: str) -> Path:
        """The path of a file of this run; SchemaError if ``within`` is set and it resolves outside."""
        path = self.path.joinpath(*parts)
        if _leads_outside(path, self.within):
            raise SchemaError(f"{path} leads outside the served folder; not read")
        return path

    @classmethod
    def of(cls, results_dir: str | Path, study_name: str, mirror: Mirror | None = None) -> RunFolder:
        return cls(Path(results_dir) / "runs" / study_name, mirror=mirror)

    @classmethod
    def find(cls, run: str | Path, results_dir: str | Path = "results", walk_forward: bool = False) -> RunFolder:
        """A run given as a folder or as a study name under ``<results_dir>/runs``; with
        ``walk_forward``, a walk-forward's folder (``<study>-walk-forward``) too."""
        names = (RUN_FILE, WALK_FORWARD_FILE) if walk_forward else (RUN_FILE,)
        candidates = [cls(Path(run)), cls(Path(results_dir) / "runs" / str(run))]
        for candidate in candidates:
            if any((candidate.path / name).exists() for name in names):
                return candidate
        for candidate in candidates:
            if (unended := candidate.unended()) is not None:
                raise ConfigError(unended)
        raise ConfigError(f"no run at {run} (looked for {' or '.join(names)} there and under {results_dir}/runs/)")

    def fold(self, run_dir: str) -> RunFolder:
        """A walk-forward fold's run: the sibling folder named like ``run_dir`` (which was written
        relative to wherever the walk-forward ran)."""
        return RunFolder(self.path.parent / Path(run_dir).name, within=self.within)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def results_dir(self) -> Path:
        return self.path.parent.parent

    def now(self, precise: bool = False) -> str:
        return iso(self.clock(), precise)

    def exists(self) -> bool:
        return self._at(RUN_FILE).exists()

    def unended(self) -> str | None:
        """What to say of a run folder that holds trial artifacts but no run.json (a first session
        writes it as it ends), where 'no run' had the user look for a run they could see was there."""
        trials = self._at("trials")
        if self.exists() or not trials.is_dir():
            return None
        done = sum(1 for p in trials.iterdir() if p.suffix == ".json")
        return (f"{self.path} has no run.json yet: its first session writes it as it ends, and is still running (its {done:,} "
                "trial artifacts so far are in trials/) or was stopped before its end (the same genesis optimize or sweep "
                "goes on from its trials and writes it)")

    # run.json
    def read_run(self) -> RunRecord:
        return read_record(self._at(RUN_FILE), RunRecord)

    def read_run_if_any(self) -> RunRecord | None:
        return self.read_run() if self.exists() else None

    @contextlib.contextmanager
    def run_lock(self) -> Iterator[None]:
        """Hold run.json for a read-modify-write: another process of this machine waits (a lock on
        ``run.json.lock``, released by the system if the holder dies)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "run.json.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def write_run(self, record: RunRecord) -> None:
        self._write(RUN_FILE, record.model_dump_json(indent=1))

    # trials/NNNNNN.json: evaluated trials only
    def trial_path(self, number: int) -> Path:
        return self._at(_trial_name(number))

    def write_trial(self, artifact: TrialArtifact, durable: bool = True) -> None:
        self._write(_trial_name(artifact.trial_number), artifact.model_dump_json(), durable)

    def write_trials(self, artifacts: list[tuple[int, str]]) -> None:
        """Many trials' artifacts (trial number, JSON: ``TrialArtifact.json_of``), all durable when
        this returns (one flush for the batch)."""
        files = {_trial_name(number): text for number, text in artifacts}
        for name, text in files.items():
            atomic_write(self.path / name, text, durable=False)
        sync_all()
        if self.mirror is not None and files:
            self.mirror.put(self.name, {name: text.encode() for name, text in files.items()})

    def has_trial(self, number: int) -> bool:
        return self.trial_path(number).exists()

    def lost_trials(self, numbers: list[int]) -> list[int]:
        """Those of ``numbers`` whose artifact is missing or not whole (``is_whole``)."""
        return [n for n in numbers if not is_whole(self.trial_path(n))]

    def read_trial(self, number: int) -> TrialArtifact:
        return read_record(self.trial_path(number), TrialArtifact)

    def trial_numbers(self) -> list[int]:
        """Numbers of the trial artifacts here, in order. Files not named like one, and symlinks
        (every artifact is written as a plain file), are not ours."""
        folder = self._at("trials")
        if not folder.is_dir():
            return []
        with os.scandir(folder) as entries:  # a directory entry knows its type: no stat a file (1.6 s of 172,800)
            names = sorted(e.name for e in entries if _TRIAL_FILE.fullmatch(e.name) and e.is_file(follow_symlinks=False))
        return [int(n.removesuffix(".json")) for n in names]

    def evaluated_numbers(self, rows: list[TrialRow] | None = None) -> list[int]:
        """The trials of this run (trials.csv lists them: its ``rows``, when read already) that have
        an artifact here; any other file in trials/ is foreign and left alone."""
        ours = {r.number for r in rows} if rows is not None else self._read_trials(lambda rows: set(map(_number, rows)))
        return [n for n in self.trial_numbers() if n in ours]

    def remove_stale_temporaries(self) -> int:
        """Remove what writers killed mid-write left behind (see ``genesis_core.files``); returns how many."""
        return len(remove_stale_temporaries(self.path)) + len(remove_stale_temporaries(self.path / "trials"))

    def in_flight_path(self, pid: int) -> Path:
        """Where sweep process ``pid`` of this machine says which point it is evaluating (see
        ``genesis_core.optimizer._sweep``)."""
        return self.path / f"sweep-{socket.gethostname()}-{pid}.inflight"

    def in_flight_pids(self) -> list[int]:
        """The processes of this machine with a sweep's in-flight file here, dead or alive."""
        prefix = f"sweep-{socket.gethostname()}-"
        try:
            names = [e.name for e in os.scandir(self.path) if e.name.startswith(prefix) and e.name.endswith(".inflight")]
        except FileNotFoundError:
            return []
        return [int(pid) for pid in (n[len(prefix):-len(".inflight")] for n in names) if pid.isdigit()]

    # crashes.json
    @property
    def crashes_path(self) -> Path:
        return self._at(CRASHES_FILE)

    def read_crashes(self) -> dict[str, str]:
        """The backtests whose compiled code crashed validation's or promotion's process (``validation._crashes``): their
        keys and why. A file that cannot be read is none: a crash it held is found again, at the cost
        of one more."""
        try:
            crashes = orjson.loads(self.crashes_path.read_bytes())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in crashes.items() if isinstance(v, str)} if isinstance(crashes, dict) else {}

    def add_crashes(self, crashes: dict[str, str]) -> None:
        with self.run_lock():  # two commands that each found one keep both
            self._write(CRASHES_FILE, orjson.dumps(self.read_crashes() | crashes, option=orjson.OPT_INDENT_2).decode())

    # trials.csv
    def write_trials_table(self, cells: list[dict[str, Any]]) -> None:
        """Rows as ``TrialRow.cells`` makes them."""
        # each once, in the order first seen; a session that ran no trial (its time out before the first) the header
        # alone, as a table its readers know: an empty line was 'not a trials table' to the session's own end
        columns = list(dict.fromkeys(k for c in cells for k in c)) or list(TrialRow(number=0, state="").to_csv())
        buf = io.StringIO()
        writer = csv.writer(buf)  # DictWriter's per-row check for unknown keys cannot fail here: 0.1 s of 10,000 rows
        writer.writerow(columns)
        writer.writerows([c.get(k) for k in columns] for c in cells)
        self._write("trials.csv", buf.getvalue())

    def read_trials_table(self, only: Collection[str] | None = None, numbers: Collection[int] | None = None) -> list[TrialRow]:
        """The rows (with ``only``, of those columns: ``TrialRow.from_csv``; with ``numbers``, of those
        trials alone); SchemaError naming the file, and the line of a row that is no trial's (a file
        edited or cut short by hand: other runs' validations read it too, which it ended in a traceback)."""
        if numbers is None:
            return self._read_trials(lambda rows: [TrialRow.from_csv(row, only) for row in rows])
        wanted = set(numbers)

        def read(rows: Iterator[dict[str, str]]) -> list[TrialRow]:  # till the last wanted: a run's first row at once
            found = []
            for row in itertools.takewhile(lambda _: wanted, rows):
                if (number := _number(row)) in wanted:
                    wanted.discard(number)
                    found.append(TrialRow.from_csv(row, only))
            return found

        return self._read_trials(read)

    def _read_trials(self, read: Callable[[Iterator[dict[str, str]]], _T]) -> _T:
        """What ``read`` makes of trials.csv's rows, its errors said as ``read_trials_table`` says them."""
        path = self._at("trials.csv")
        reader = None
        try:
            with io.TextIOWrapper(io.BytesIO(read_file(path)), newline="") as fh:
                reader = csv.DictReader(fh)
                if reader.fieldnames is not None and "number" not in reader.fieldnames:
                    raise SchemaError(f"{path}: line 1 names no number column: not a trials table")
                return read(_whole_rows(reader))
        except OSError as exc:
            raise SchemaError(f"{path}: cannot read: {exc.strerror}") from None
        except (ValidationError, _NotATrialRow) as exc:
            detail = problems(exc) if isinstance(exc, ValidationError) else str(exc)
            raise SchemaError(f"{path}: line {reader and reader.line_num} is not a trial's row: {detail}") from None
        except (csv.Error, ValueError) as exc:  # a NUL byte, bytes that are not UTF-8
            raise SchemaError(f"{path}: line {reader and reader.line_num + 1}: not a trials table: {exc}") from None

    # best_trial.json
    def write_best(self, best: BestTrial) -> None:
        self._write("best_trial.json", best.model_dump_json(indent=1))

    def read_best(self) -> BestTrial:
        return read_record(self._at("best_trial.json"), BestTrial)

    # validation.json
    @property
    def validation_path(self) -> Path:
        return self._at("validation.json")

    def is_validated(self) -> bool:
        return self.validation_path.exists()

    def write_validation(self, report: ValidationReport) -> None:
        self._write("validation.json", report.model_dump_json(indent=1))

    def read_validation(self) -> ValidationReport:
        if not self.is_validated():
            raise ConfigError(f"{self.path} has not been validated: run `genesis validate {self.path}` first")
        return read_record(self.validation_path, ValidationReport)

    def stale(self, report: ValidationReport, rows: list[TrialRow] | None = None) -> str | None:
        """Why ``report`` is not of this run as it is now: made before its later trials (trials.csv's
        ``rows``, when read already)."""
        now = len(self.evaluated_numbers(rows))
        return (None if now == report.evaluated_trials
                else f"validation.json was made of {report.evaluated_trials:,} evaluated trial(s), the run now has {now:,}")

    # walk-forward: <study>-walk-forward/
    @property
    def walk_forward_path(self) -> Path:
        return self._at(WALK_FORWARD_FILE)

    def fold_config_path(self, fold: int) -> Path:
        return self.path / f"fold{fold}.yaml"

    def write_fold_config(self, fold: int, text: str) -> Path:
        return self._write(self.fold_config_path(fold).name, text)

    def is_walk_forward(self) -> bool:
        return self.walk_forward_path.exists()

    def write_walk_forward(self, report: WalkForwardReport) -> None:
        self._write(WALK_FORWARD_FILE, report.model_dump_json(indent=1))

    def read_walk_forward(self) -> WalkForwardReport:
        return read_record(self.walk_forward_path, WalkForwardReport)


@dataclass(frozen=True)
class RunListing:
    """A finished run found in a results folder."""

    name: str
    run: RunRecord
    validation: ValidationReport | None

    def summary(self) -> dict[str, Any]:
        """What a list of runs shows of one (``genesis runs list``, the MCP server's list_runs tool)."""
        r, v = self.run, self.validation
        return {"run": self.name, "study": r.study_name, "trials": r.cache.total_trials,
                "best_trial": r.best_trial and r.best_trial.model_dump(), "last_session": r.sessions[-1].finished,
                "validation": None if v is None else {"passed": v.passed, "best": v.best}}


def walk_forwards(results_dir: Path, within: Path | None = None) -> tuple[list[tuple[str, WalkForwardReport]], list[str]]:
    """The walk-forwards under ``<results_dir>/runs`` (folders holding walk_forward.json) by name,
    and why each that could not be read was left out, as ``finished_runs`` says of runs (those that
    lead outside ``within``, unsaid)."""
    found, unreadable = [], []
    for path in sorted((Path(results_dir) / "runs").glob(f"*/{WALK_FORWARD_FILE}")):
        if _leads_outside(path, within):
            continue
        try:
            found.append((path.parent.name, read_record(path, WalkForwardReport)))
        except SchemaError as exc:
            unreadable.append(str(exc))
    return found, unreadable


def finished_runs(results_dir: Path, within: Path | None = None) -> tuple[list[RunListing], list[str]]:
    """The finished runs under ``<results_dir>/runs``, newest session first, and why each run that
    could not be read was left out (a damaged file, a newer schema, a link to a device). Folders
    without a run, or (with ``within``) that lead outside it, are left out unsaid."""
    folder = Path(results_dir) / "runs"
    found, unreadable = [], []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        run_folder = RunFolder(path, within=within)
        try:
            if _leads_outside(path, within) or not run_folder.exists():
                continue
            run = run_folder.read_run()
            validation = run_folder.read_validation() if run_folder.is_validated() else None
        except SchemaError as exc:
            unreadable.append(str(exc))
            continue
        if run.sessions:
            found.append(RunListing(path.name, run, validation))
    return sorted(found, key=lambda r: r.run.sessions[-1].finished, reverse=True), unreadable

