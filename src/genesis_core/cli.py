"""The ``genesis`` command line: rich tables for people, ``--json`` for machines, exit code 2 for bad input."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich import box
from rich.columns import Columns
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from genesis_core import __version__
from genesis_core.errors import ConfigError, DataError, GenesisError, clip, report_crashes
from genesis_core.files import atomic_write, written_as
from genesis_core.fingerprint import strict_json

if TYPE_CHECKING:  # the commands import what they use when they run, so `genesis --help` starts fast
    from genesis_core.backtest import Backtester, BacktestResult
    from genesis_core.champion import Decision
    from genesis_core.data.exchange import Fetched
    from genesis_core.optimizer import OnProgress
    from genesis_core.optimizer import Progress as OptimizerProgress
    from genesis_core.records import (
        BacktestRecord,
        PreflightRecord,
        RunFolder,
        TrialArtifact,
        ValidationReport,
        WalkForwardReport,
    )
    from genesis_core.study import StudyConfig
    from genesis_core.workflow import PreflightFailed

app = typer.Typer(help="Genesis-Core: find and promote strategy parameters without fooling yourself.", no_args_is_help=True, rich_markup_mode="markdown")
model_app = typer.Typer(help="Train signal models and show what one was trained on.", no_args_is_help=True)
data_app = typer.Typer(help="Candle files: check them, download and update them from exchanges, list them.", no_args_is_help=True)
storage_app = typer.Typer(help="The study storage of a fleet: serve a database to many workers.", no_args_is_help=True)
champion_app = typer.Typer(help="The promoted config per symbol and timeframe: show, promote, history, rollback.",
                           no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(data_app, name="data")
app.add_typer(storage_app, name="storage")
app.add_typer(champion_app, name="champion")
runs_app = typer.Typer(help="Optimizer runs in a results folder: list them, show one or one of its trials.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
Symbol = Annotated[str, typer.Option(help="Symbol of the champion.")]
Timeframe = Annotated[str, typer.Option(help="Timeframe of the champion.")]
ResultsDir = Annotated[Path, typer.Option(help="Results folder holding champions/.")]

# Piped output gets a fixed width wide enough for the trade table, instead of rich's 80 columns,
# and its lines whole (a log's line of a warning or a figure cut at 120 columns is found by no grep).
out = Console(width=None if sys.stdout.isatty() else 120, soft_wrap=not sys.stdout.isatty())
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120, soft_wrap=not sys.stderr.isatty())
F = TypeVar("F", bound=Callable[..., Any])


# what a disk says when a file cannot be written however the command is given: full, over quota, a
# file too large, failing, read-only
BAR_REDRAW_SECONDS = 0.1  # a count bar (``_count_bar``) is redrawn at most this often
_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})
# a path given that cannot be written as asked: a file where a folder is needed, a folder given as a
# file, no permission, a folder no file can be made in (/proc). They ended in tracebacks (`--out` a
# folder, a results_dir that is a file, `--report /proc/x.html`).
_PATH_ERRORS = frozenset({errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ENOENT})


def _handle_errors(fn: F) -> F:
    """Turn GenesisError, and a disk that cannot be written, into one clear line on stderr and an
    exit code, never a traceback."""

    def fail(message: str, code: int) -> typer.Exit:
        # the message may quote hostile input: escaped (never markup), and not hard-wrapped
        err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
        return typer.Exit(code)

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _json_only(kwargs.get("as_json") is True):
                return fn(*args, **kwargs)
        except GenesisError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except OSError as exc:
            if exc.errno in _PATH_ERRORS and exc.filename:
                raise fail(_path_error(exc), 2) from None
            if exc.errno not in _DISK_ERRORS:
                raise
            raise fail(_disk_error(exc), 2) from None

    return wrapper  # type: ignore[return-value]


_json_out: list[tuple[Any, int | None]] = []  # while a --json command runs: stdout as it was, and its descriptor if diverted


@contextlib.contextmanager
def _json_only(active: bool) -> Iterator[None]:
    """While a --json command runs, what else would reach stdout (a user strategy's print, a
    compiled kernel's printf, a forked worker's) goes to stderr: stdout holds the JSON alone
    (``_write_json``), where such a line ended up before it and the JSON read as none."""
    if not active:
        yield
        return
    stdout = sys.stdout
    stdout.flush()
    try:
        real = os.dup(1) if stdout.fileno() == 1 else None
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):  # not the process's fd 1 (a test's capture)
        real = None
    if real is not None:
        os.dup2(2, 1)
    _json_out.append((stdout, real))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _json_out.pop()
        if real is not None:
            sys.stdout.flush()
            os.dup2(real, 1)
            os.close(real)


def _write_json(text: str) -> None:
    """``text`` (a command's JSON) to stdout, diverted or not (``_json_only``)."""
    if not _json_out:
        sys.stdout.write(text)
        return
    stdout, real = _json_out[-1]
    if real is None:
        stdout.write(text)
        return
    data = text.encode()
    while data:
        data = data[os.write(real, data):]


def _disk_error(exc: OSError) -> str:
    return f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc.strerror)


def _path_error(exc: OSError) -> str:
    """The path a write could not take, as the user gave it (not a writer's temporary name), and why."""
    path = Path(written_as(str(exc.filename)))
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            wanted = "" if blocking == path else f" (for {clip(str(path), 300)})"
            return f"{clip(str(blocking), 300)} is a file, where a folder is needed{wanted}"
    if exc.errno == errno.EISDIR:
        return f"{clip(str(path), 300)} is a folder, where a file is needed"
    return f"{clip(str(path), 300)}: {exc.strerror}"


def _write_csv(path: Path, columns: list[str], rows: Iterable[Iterable[Any]]) -> None:
    """A CSV file written atomically, rows of cells under ``columns``; None cells are empty. Not a
    dict a row: a million 1m bars' equity took 2.5 s so."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def _table(**options: Any) -> Table:
    """A table for ``out``: under 100 columns without lines between its columns and without padding,
    which took 31 of a validation table's columns: in a terminal of 80 the boxed table cut every
    score to ``-7.…`` and every timestamp to ``2026-12-…``."""
    compact: dict[str, Any] = {"box": box.SIMPLE_HEAD, "show_edge": False, "padding": 0} if out.width < 100 else {}
    return Table(**compact, **options)


def _fmt(value: Any, spec: str = ",.4f") -> str:
    """``records.formatted``, imported when a table is printed (the records import the engine)."""
    from genesis_core.records import formatted

    return formatted(value, spec)


def _metrics_table(metrics: dict[str, Any]) -> Table:
    """A backtest's or a trial's metrics, a row each: the fractions (``metrics.SHARES``) as percentages."""
    from genesis_core.metrics import SHARES

    table = _table(title="Metrics", show_header=False)
    for k, v in metrics.items():
        table.add_row(k, _fmt(v, SHARES.get(k, ",.4f")))
    return table


RunStorage = Annotated[str | None, typer.Option("--storage", help="The study's database (postgresql://...): the run's files "
                                                                   "are pulled from it first, and what is written goes back.")]


@app.command()
@_handle_errors
def backtest(
    config_file: Annotated[Path | None, typer.Argument(metavar="CONFIG", show_default=False,
                                                       help="The same as --config.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Strategy YAML (strategy, params, data, costs), or a "
                                                "result JSON holding an effective config (a trial artifact, best_trial.json).")] = None,
    champion: Annotated[bool, typer.Option("--champion", help="Run the current champion's effective config.")] = False,
    trial: Annotated[str | None, typer.Option("--trial", help="Re-run a stored trial: RUN:N (a run folder or study name "
                                              "under results/runs, and the trial number).")] = None,
    symbol: Annotated[str, typer.Option(help="With --champion: the champion's symbol.")] = "BTCUSD",
    timeframe: Annotated[str, typer.Option(help="With --champion: the champion's timeframe.")] = "1h",
    results_dir: Annotated[Path, typer.Option(help="With --champion: the results folder holding champions/.")] = Path("results"),
    data: Annotated[str | None, typer.Option(help="Candle file; overrides data.path.")] = None,
    start: Annotated[str | None, typer.Option(help="First bar, inclusive (ISO date/time, UTC).")] = None,
    end: Annotated[str | None, typer.Option(help="Last bar, inclusive; a bare date means the whole day.")] = None,
    output: Annotated[Path | None, typer.Option("--out", help="Result JSON path (default: results/backtests/...).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result JSON instead of tables.")] = False,
    trades: Annotated[int, typer.Option(help="How many of the last trades to show.")] = 10,
    trades_csv: Annotated[Path | None, typer.Option("--trades-csv", help="Also write every trade to this CSV file.")] = None,
    equity_csv: Annotated[Path | None, typer.Option("--equity-csv", help="Also write the equity and drawdown per bar to this CSV file.")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Also write an HTML page: price with entries and exits, equity, "
                                                "drawdown, the decision trace, the trades (self-contained, works offline).")] = None,
    storage: RunStorage = None,
) -> None:
    """Backtest a strategy config (or the champion) on candles and write a result JSON."""
    from genesis_core.backtest import CACHE, Backtester, build_config
    from genesis_core.config import read_config_file
    from genesis_core.records import ChampionStore, ScoreRecord, TradeRecord, backtest_record, other_bars
    from genesis_core.scoring import Constraints, Scoring, score

    overrides: dict[str, Any] = {"data": {k: v for k, v in (("path", data), ("start", start), ("end", end)) if v is not None}}
    if sum((config_file is not None, config is not None, champion, trial is not None)) != 1:
        raise typer.BadParameter("give one of CONFIG (or --config), --champion or --trial")
    config = config or config_file
    seen: list[tuple[str, str, str]] = []  # bars the config was searched or chosen on (``seen_problems``)
    ran_on: tuple[str, Any] = ("", None)  # what ran this config on its window before, and its bars' fingerprint then
    if champion:
        store = ChampionStore(results_dir, symbol, timeframe)
        current = store.load()
        if current is None:
            raise ConfigError(f"no {symbol} {timeframe} champion at {store.path} (see `genesis champion promote`)")
        base = current.effective_config.model_dump(mode="json")
        d, study = current.data, current.run.study
        seen = [(d.explore.first_bar, d.explore.last_bar, f"the explore window of the search that found the champion ({study})"),
                *((v.first_bar, v.last_bar, f"a validation window the champion was chosen on ({study})") for v in d.validation)]
        ran_on = ("the champion", d.explore.data_window)
    elif trial is not None:
        artifact = _trial_artifact(trial, results_dir, storage)
        base = artifact.effective_config.model_dump(mode="json")
        seen = _searched(artifact.window.first_bar, artifact.window.last_bar, trial)
        ran_on = (f"trial {trial}", artifact.fingerprints.get("data_window"))
    else:
        assert config is not None
        base = read_config_file(config)
        stored = base.get("result", base)  # best_trial.json holds its trial under "result"
        if isinstance(stored, dict) and "effective_config" in stored:
            base = stored["effective_config"]  # a result file: what it was run with
            prints = stored.get("fingerprints")
            ran_on = (str(config), prints.get("data_window") if isinstance(prints, dict) else None)
            window = stored.get("window")
            if "trial_number" in stored and isinstance(window, dict) and all(isinstance(window.get(k), str) for k in ("first_bar", "last_bar")):
                seen = _searched(window["first_bar"], window["last_bar"], stored["trial_number"])  # a trial's
    if data is not None and base.get("workdir") not in (None, os.getcwd()):  # read from here, not where a stored config ran
        overrides["data"]["path"] = os.path.abspath(os.path.expanduser(data))
    with _saying_what_became("run the same command again") as watch:  # each file is written whole, or not at all
        for given in (output, trades_csv, equity_csv, report):
            if given is not None:
                watch(given)
        cfg = build_config(base, overrides=overrides)
        bt = Backtester(CACHE)
        result = bt.run(cfg)
        candles = result.window.source or result.window.candles
        sc = ScoreRecord.of(score(result.metrics, result.trace, Scoring(), Constraints()))
        record = backtest_record(result).model_copy(update={"score": sc, "buy_and_hold": result.window.held_return})
        cautions = _cautions(bt, result, record, seen)  # before any file: what they refuse (data of another market) writes none
        other = None if overrides["data"] else other_bars(cfg.data.path, ran_on[1], result.window.fingerprint)
        if other is not None:
            cautions.append(f"{ran_on[0]}: {other}: the numbers here are of the bars there now, not its stored ones")
        text = strict_json(record.model_dump(mode="json")) + "\n"  # the file's, and --json's (a million bars' took 1.7 s)
        path = output or Path("results/backtests") / f"{cfg.strategy}-{result.config_fingerprint[:10]}-{result.window.fingerprint[:10]}.json"
        watch(path)
        atomic_write(path, text)
        if trades_csv is not None:
            columns = list(TradeRecord.model_fields)
            _write_csv(trades_csv, columns, ([getattr(t, c) for c in columns] for t in record.trades or []))
        if equity_csv is not None and record.series is not None:
            ser = record.series
            _write_csv(equity_csv, ["time", "equity", "drawdown"], zip(ser.time, ser.equity, ser.drawdown, strict=True))
        if report is not None:
            from genesis_core.report import backtest_report

            atomic_write(report, backtest_report(result, record, cautions))
    if as_json:
        _write_json(text)
        for line in cautions:  # stdout stays the JSON alone
            err.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)
        return
    w = record.window
    out.print(
        f"[bold]{cfg.strategy}[/] on {candles.source} ({w.timeframe}): {w.first_bar} .. {w.last_bar}, "
        f"{w.bars:,} bars + {w.warmup_bars} warm-up"
    )
    out.print(f"outcome {sc.outcome.value}, production score {sc.production:.2f} (what the optimizer ranks by, default "
              f"scoring), feasibility {sc.feasibility:.2f}; classic_score is the composite metric below")
    made = record.metrics.get("total_return")
    out.print(f"market: buying at the first bar's open and holding made {result.window.held_return:+.2%} over the "
              f"window" + ("" if made is None else f"; this strategy {made:+.2%} (total_return)"))
    if cfg.costs.carry_bps_per_day.charged:
        out.print(f"costs: {cfg.costs.describe()}: {float(result.engine.trades['carry'].sum()):,.2f} paid over the trades")
    for line in cautions:
        err.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)
    metrics = _metrics_table(record.metrics)
    trace = _table(title="Decision trace", show_header=False)
    for k, v in result.trace.items():
        if isinstance(v, dict):
            for sub, n in v.items():
                trace.add_row(f"{k}.{sub}", str(n))
        else:
            trace.add_row(k, str(v))
    out.print(Columns([metrics, trace]))
    all_trades = record.trades or []
    rows = all_trades[-trades:] if trades > 0 else []
    if rows:
        table = _table(title=f"Last {len(rows)} of {len(all_trades)} trades")
        for col in ("entry (UTC)", "exit (UTC)", "side", "entry", "exit", "pnl", "bars", "reason"):
            table.add_column(col, justify="left" if col in ("side", "reason") else "right")
        for t in rows:
            table.add_row(
                t.entry_time[:16].replace("T", " "), t.exit_time[:16].replace("T", " "), t.side,
                _fmt(t.entry_price, ",.1f"), _fmt(t.exit_price, ",.1f"), _fmt(t.pnl, ",.2f"), str(t.bars_held), t.exit_reason,
            )
        out.print(table)
    out.print(f"config fingerprint {result.config_fingerprint[:16]}  data window {result.window.fingerprint[:16]}")
    out.print(f"result written to {path}", soft_wrap=True)
    if report is not None:
        out.print(f"report written to {report}", soft_wrap=True)


def _searched(first: str, last: str, trial: object) -> list[tuple[str, str, str]]:
    """A trial's explore window, the bars its search fitted it on (``seen_problems``)."""
    return [(first, last, f"the explore window of the search that found trial {trial}")]


def _cautions(bt: Backtester, result: BacktestResult, record: BacktestRecord, seen: list[tuple[str, str, str]]) -> list[str]:
    """What a backtest's numbers should be read with: holes and bad ticks in its window, fills
    beyond the market's volume or costing nothing, a profit made by one trade, a strategy that
    reads the future, a model fitted on its bars or after them or fed a constant, bars the config
    was searched or chosen on (``seen``), cold indicators or indicators that still remember where
    their warm-up began, numbers beyond the arithmetic, a liquidation."""
    from genesis_core.backtest import (
        BEST_TRADE_SHARE,
        data_symbol,
        dead_inputs,
        free_borrow,
        free_trading,
        lookahead,
        one_trade,
        seen_problems,
        thin_fill,
        trained_on,
        training_problems,
        warmup_dependence,
    )

    cfg, decisions = result.config, result.window.decisions
    lines = []
    if (gaps := result.window.gaps()).count:
        lines.append(f"window has {gaps.describe(decisions.timeframe_seconds)}")
    if (spikes := decisions.spikes()).count:
        lines.append(f"window has {spikes.describe()}")
    lines += [line for line in (thin_fill(result), free_trading(result), free_borrow(bt, result)) if line is not None]
    if (rests := one_trade(result)) is not None:
        lines.append(f"the profit rests on one trade ({rests[1]}): a validation window like this fails "
                     f"(validation.constraints.max_best_trade_share: {BEST_TRADE_SHARE:g})")
    try:
        ahead = lookahead(bt, cfg)
    except GenesisError as exc:
        ahead = f"not checked: the window cut short does not run: {exc}"
    if ahead is not None:
        lines.append(f"lookahead: {ahead}")
    try:
        _, early = warmup_dependence(bt, cfg)
    except GenesisError as exc:
        early = f"not checked: the window with a longer warm-up does not run: {exc}"
    if early is not None:
        lines.append(f"warm-up: {early}")
    candles, trained = result.window.candles, trained_on(cfg)
    leaks, others = training_problems(trained, candles, data_symbol(cfg, candles), [("the backtest window", *result.window.span, True)])
    lines += leaks + others + dead_inputs(trained, bt.features(result.window), result.window.start_index)
    lines += seen_problems(result.window.span, seen)
    if result.trace["warmup_bars_in_window"]:
        lines.append(f"{result.trace['warmup_bars_in_window']} bars of the window still had cold indicators; raise data.warmup_bars")
    if record.not_finite:
        lines.append(f"INVALID_NUMERIC: {', '.join(record.not_finite)} not finite numbers (written as null); the prices or "
                     "sizes are beyond what the arithmetic holds")
    lines += [f"the account was liquidated at {t.exit_time}: its {t.side} from {t.entry_time} lost all the equity at "
              f"{t.exit_price:,.2f} (entry {t.entry_price:,.2f}); nothing traded after it"
              for t in record.trades or [] if t.exit_reason == "liquidation"]
    return lines


def _run_folder(run: str, results_dir: Path = Path("results"), storage: str | None = None,
                walk_forward: bool = False, trials: bool | Collection[int] = True) -> RunFolder:
    """The run's folder; with a database ``storage``, its files (without ``trials``, not its trial
    artifacts; when it lists trials, theirs only) pulled from there into ``<results_dir>/runs/<run>``
    (or the folder given) first, and its writes mirrored back."""
    from genesis_core.optimizer import RunFiles, redact, shares_files
    from genesis_core.records import RunFolder

    if storage is None:
        return RunFolder.find(run, results_dir, walk_forward)
    if not shares_files(storage):
        raise ConfigError(f"--storage {redact(storage)}: only a database server holds runs' files (postgresql://... or "
                          "journal+postgresql://...)")
    files = RunFiles.of(storage)
    given = Path(run)
    folder = RunFolder(given if given.is_dir() else Path(results_dir) / "runs" / run, mirror=files)
    if not folder.sync(trials):
        known = ", ".join(files.runs()) or "none"
        raise ConfigError(f"no run {folder.name} in {redact(storage)} (its runs: {known})")
    return folder


def _run_ref(folder: RunFolder) -> str:
    """How a command suggested to the user names ``folder``: its study name where commands look by
    default (``results/runs/<name>`` here), else its path (`backtest --trial t:41` of a run under
    another results folder said "no run at t")."""
    default = Path("results") / "runs" / folder.name
    return folder.name if default.is_dir() and default.resolve() == folder.path.resolve() else shlex.quote(str(folder.path))


def _trial_artifact(ref: str, results_dir: Path, storage: str | None = None) -> TrialArtifact:
    """The artifact of ``RUN:N``, or ConfigError saying why there is none."""
    run, sep, number = ref.rpartition(":")
    if not sep or not number.isdigit():
        raise ConfigError(f"--trial {ref!r}: expected RUN:N, e.g. reference-2022:41")
    n = int(number)
    folder = _run_folder(run, results_dir, storage, trials={n})
    if not folder.has_trial(n):
        rows = {r.number: r for r in folder.read_trials_table()}
        if n not in rows:
            raise ConfigError(f"run {run} has no trial {n} " + (f"(its trials are 0..{max(rows)})" if rows else "(it has none yet)"))
        row = rows[n]
        hint = f"; it repeats trial {row.cache_reused_from}: use {run}:{row.cache_reused_from}" if row.cache_reused_from is not None \
            else f" (state {row.state}{', ' + row.fail_reason if row.fail_reason else ''})"
        raise ConfigError(f"trial {n} of {run} has no artifact{hint}")
    return folder.read_trial(n)


@app.command()
@_handle_errors
def optimize(
    config: Annotated[Path, typer.Argument(help="Optimizer YAML (meta, parameters, constraints, scoring).")],
    storage: Annotated[str | None, typer.Option(help="Storage URL (sqlite:///... or postgresql://...); overrides meta.storage.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes on this machine; overrides meta.n_workers.")] = None,
    max_trials: Annotated[int | None, typer.Option(help="Total trials in the study; overrides meta.stop.max_trials.")] = None,
    study: Annotated[str | None, typer.Option(help="Run this study instead of meta.study_name's (a sweep's --study).")] = None,
    force_resume: Annotated[bool, typer.Option("--force-resume", help="Resume although the study signature differs (recorded).")] = False,
    backfill_signature: Annotated[bool, typer.Option("--backfill-signature", help="Adopt the current signature for a study that has none.")] = False,
    skip_preflight: Annotated[bool, typer.Option("--skip-preflight", help="Start without the preflight checks (recorded in run.json).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
    proxy: Annotated[str | None, typer.Option(help="HOST:PORT of a `genesis storage serve` gRPC proxy for the --storage "
                                              "database: the study's calls go through it; overrides meta.proxy.")] = None,
) -> None:
    """Preflight, search parameters with Optuna (resumable, cached), then validate and promote if enabled."""
    from genesis_core.optimizer import RunOptions, StorageUnavailable
    from genesis_core.study import load_study_config
    from genesis_core.workflow import PreflightFailed, run

    cfg = load_study_config(config)
    if proxy is not None:
        cfg = _with_meta(cfg, "proxy", proxy, "--proxy")
    if study is not None:
        cfg = _with_meta(cfg, "study_name", study, "--study")
    options = RunOptions(workers, max_trials, force_resume, backfill_signature, deaf_once_stopped=True)
    try:
        with _progress_bar(not as_json) as on_progress:
            summary = run(cfg, options, storage, skip_preflight, on_progress)
    except StorageUnavailable as exc:
        resume = f"genesis optimize {config}" + (f" --storage {storage}" if storage else "") + (f" --study {study}" if study else "")
        raise StorageUnavailable(f"{exc}; resume with: {resume}  (trials left running are recovered then)") from None
    except PreflightFailed as exc:
        _print_failed(exc, as_json)
        raise
    e = summary.explore
    if as_json:
        _write_json(summary.model_dump_json(indent=2) + "\n")
    else:
        s = e.session
        out.print(f"{e.cache.total_trials} trials in the study; this session {s.seconds} s with {s.workers} worker(s)")
        out.print(f"trials: {_counts(e.states)}; outcomes: {_counts(e.outcomes)}")
        out.print(f"cache: {e.cache.cache_hits:,} duplicates answered ({e.cache.hit_rate:.1%}), "
                  f"{e.cache.unique_backtests:,} backtests run, {e.cache.reused_from_other_studies:,} reused from other studies")
        if e.best_trial:
            out.print(f"best trial #{e.best_trial.number}: production score {e.best_trial.production_score:.4f}")
        out.print(f"artifacts in {e.run_dir}")
    for line in summary.cautions():
        err.print(f"[yellow]warning:[/] {escape(line)}")
    if e.session.stopped_reason:
        err.print(f"[yellow]explore stopped early:[/] {e.session.stopped_reason}")
    if e.session.interrupted:
        stopped_by = signal.Signals[e.session.signal or "SIGINT"]
        err.print(f"interrupted; resume with: genesis optimize {config}  (the study resumes where it stopped; {stopped_by.name})")
        raise typer.Exit(128 + stopped_by.value)  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM
    if not as_json and summary.validation is not None:
        from genesis_core.records import RunFolder

        _print_validation(RunFolder(Path(e.run_dir)).read_validation())
    if not as_json and summary.promotion is not None:
        p = summary.promotion
        out.print(("[green]promoted[/]: " if p.promoted else "[yellow]not promoted[/]: ") + p.reason)
    # a study of no trial at all ran out of time before its first (a Ctrl-C exits above)
    _exit_if_none_evaluated(e.states, "every trial failed: see the warning above" if any(e.states.values()) else
                            "none ran: the run's time (meta.stop: timeout_seconds or end_at) was up before its first")


@app.command()
@_handle_errors
def sweep(
    config: Annotated[Path, typer.Argument(help="Optimizer YAML: its parameters are the space swept.")],
    method: Annotated[str, typer.Option(help="grid, random or sobol.")] = "sobol",
    points: Annotated[int, typer.Option(help="Points of a random or Sobol sweep.")] = 1024,
    levels: Annotated[int, typer.Option(help="Grid: values per numeric parameter, spread over its range "
                                              "(every choice of a categorical).")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of a random or Sobol sweep.")] = 0,
    workers: Annotated[int | None, typer.Option(help="Processes, this one included (default: every core).")] = None,
    storage: Annotated[str | None, typer.Option(help="Storage URL; overrides meta.storage.")] = None,
    study: Annotated[str | None, typer.Option(help="Add the trials to this study instead of meta.study_name's.")] = None,
    force_resume: Annotated[bool, typer.Option("--force-resume", help="Add to the study although its signature differs (recorded).")] = False,
    backfill_signature: Annotated[bool, typer.Option("--backfill-signature", help="Adopt the current signature for a study that has none.")] = False,
    skip_preflight: Annotated[bool, typer.Option("--skip-preflight", help="Start without the preflight checks (recorded in run.json).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Backtest a grid, random or Sobol set of points of the search space on every core, and add them
    to the study as trials (artifacts, cache, trials.csv): `genesis optimize` then goes on from them,
    and `genesis validate` and `genesis report` read them as any run's."""
    from genesis_core.optimizer import StorageUnavailable, SweepOptions
    from genesis_core.optimizer import sweep as run_sweep
    from genesis_core.records import preflight_warnings
    from genesis_core.study import load_study_config
    from genesis_core.workflow import PreflightFailed, checked

    options = SweepOptions(method, points, levels, seed, workers, force_resume, backfill_signature,  # type: ignore[arg-type]
                           deaf_once_stopped=True)
    cfg = load_study_config(config)
    if study is not None:
        cfg = _with_meta(cfg, "study_name", study, "--study")
    try:
        options = dataclasses.replace(options, preflight=checked(cfg, options, storage, skip_preflight))
    except PreflightFailed as exc:
        _print_failed(exc, as_json)
        raise
    try:
        with _progress_bar(not as_json) as on_progress:
            summary = run_sweep(cfg.spec(storage), options, on_progress)
    except (StorageUnavailable, OSError) as exc:  # a full disk, a database gone: what was committed stays
        if isinstance(exc, OSError) and exc.errno not in _DISK_ERRORS:
            raise
        said = _disk_error(exc) if isinstance(exc, OSError) else str(exc)
        raise StorageUnavailable(f"{said}; the chunks committed before are kept: the same command, run again, writes what "
                                 "this one left unwritten and evaluates the rest") from None
    s = summary.session
    if as_json:
        _write_json(summary.model_dump_json(indent=2) + "\n")
    else:
        out.print(f"{summary.cache.total_trials:,} trials in study {cfg.meta.study_name if study is None else study}; "
                  f"this sweep {s.seconds} s with {s.workers} process(es)")
        out.print(f"outcomes: {_counts(summary.outcomes)}")
        if summary.best_trial:
            out.print(f"best trial #{summary.best_trial.number}: production score {summary.best_trial.production_score:.4f}")
        out.print(f"artifacts in {summary.run_dir}" + (f"; next: {_going_on(config, cfg, study, storage, summary.states)} goes on "
                  f"from these trials, genesis validate {summary.run_dir}" if _evaluated(summary.states) else ""))
    for line in preflight_warnings(options.preflight):
        err.print(f"[yellow]warning:[/] {escape(line)}")
    for line in s.notes:
        err.print(f"[yellow]note:[/] {escape(line)}")
    for line in summary.warnings:  # what its trials warn of, as optimize says it
        err.print(f"[yellow]warning:[/] {escape(line)}")
    if s.interrupted:
        stopped_by = signal.Signals[s.signal or "SIGINT"]
        err.print("interrupted; the points evaluated so far are in the study: the same command evaluates the rest")
        raise typer.Exit(128 + stopped_by.value)
    if s.stopped_reason:
        err.print(f"[red]error:[/] {escape(s.stopped_reason)}; the same command evaluates the rest")
        raise typer.Exit(1)
    _exit_if_none_evaluated(summary.states, "the strategy refused every point: see the note above")


def _evaluated(states: dict[str, int]) -> bool:
    """Whether a study holds a trial that was backtested to the end or pruned on the way."""
    return bool(states.get("COMPLETE") or states.get("PRUNED"))


def _exit_if_none_evaluated(states: dict[str, int], why: str) -> None:
    """Exit 1 when the study holds no evaluated trial: a script's next step (validate, promote)
    has nothing to work on, where an exit of 0 told it the run went well."""
    if not _evaluated(states):
        err.print(f"[red]error:[/] the study has no evaluated trial ({why}); nothing to validate or promote")
        raise typer.Exit(1)


def _print_failed(exc: PreflightFailed, as_json: bool) -> None:
    """A failed preflight's whole report: every check, not only the failures the error names."""
    if as_json:
        _write_json(exc.report.model_dump_json(indent=2) + "\n")
    else:
        _print_checks(exc.report)


def _going_on(config: Path, cfg: StudyConfig, study: str | None, storage: str | None, states: dict[str, int]) -> str:
    """The optimize command that goes on from a sweep's study: its budget counts the sweep's trials,
    so one they already meet is raised by its own size (an optimize that ran nothing said only "0/0")."""
    from genesis_core.optimizer import EVALUATED

    command = f"genesis optimize {config}" + (f" --storage {storage}" if storage else "") + (f" --study {study}" if study else "")
    budget, done = cfg.meta.stop.max_trials, sum(states.get(state.name, 0) for state in EVALUATED)
    return command if budget is None or budget > done else f"{command} --max-trials {done + budget}"


def _with_meta(cfg: StudyConfig, name: str, value: Any, flag: str) -> StudyConfig:
    """``cfg`` with ``meta.<name>`` set from a command-line flag, validated as the YAML's would be."""
    from genesis_core.config import parse_model

    return cfg.model_copy(update={"meta": parse_model(type(cfg.meta), {**cfg.meta.model_dump(mode="json"), name: value}, flag)})


@contextlib.contextmanager
def _progress_bar(show: bool) -> Iterator[OnProgress | None]:
    """A rich progress bar fed by the optimizer's progress reports (nothing when not shown)."""
    if not show:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]:.1f}/s"),
               TextColumn("best {task.fields[best]}"), TextColumn("hits {task.fields[hits]}"), TimeRemainingColumn()]
    with Progress(*columns, transient=False, console=err, auto_refresh=False) as bar:
        task = bar.add_task("trials", total=None, rate=0.0, best="-", hits="-")
        reported = False

        def update(p: OptimizerProgress) -> None:
            nonlocal reported
            reported = True
            if bar.tasks[task].total != p.total:  # a walk-forward's folds each report their own total
                bar.reset(task, total=p.total)
            bar.update(task, completed=p.completed, rate=p.rate, best="-" if p.best is None else f"{p.best:.2f}",
                       hits=f"{p.hit_rate:.0%}", refresh=True)

        try:
            yield update
        except BaseException:
            if not reported:  # refused before a trial (a bad sampler kwarg, ...): its error alone, not an empty bar
                bar.live.transient = True
                bar.live.stop()
                bar.disable = True  # nor the blank line Progress.stop prints off a terminal
            raise


def _print_checks(report: PreflightRecord) -> None:
    colour = {"pass": "green", "warn": "yellow", "fail": "red"}
    table = _table(title=f"Preflight: {report.failed} failed, {report.warnings} warnings")
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for c in report.checks:
        table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", c.detail)
    out.print(table)


@app.command()
@_handle_errors
def preflight(
    config: Annotated[Path, typer.Argument(help="Optimizer YAML.")],
    storage: Annotated[str | None, typer.Option(help="Storage URL; overrides meta.storage.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of tables.")] = False,
) -> None:
    """Check an optimizer config before a long run; exit 1 if any check fails. Writes nothing."""
    from genesis_core.preflight import preflight_file, report

    record = report(preflight_file(config, storage))
    if as_json:
        _write_json(record.model_dump_json(indent=2) + "\n")
    else:
        _print_checks(record)
    if not record.ok:
        raise typer.Exit(1)


def _print_validation(report: ValidationReport) -> None:
    """The candidates' windows, one row each, narrow enough that no figure is cut short in 80
    columns (under 120 a window's dates, and a plateau's two shares, take two lines; under 100 it
    is 73 columns, ``_table``); why a candidate failed is listed under the table in full, where a
    column of reasons showed ``min_pro…`` in 120 columns and the scores ``-11…`` in 100."""
    from genesis_core.records import TABLE_COLUMNS
    from genesis_core.validation import ValidationConfig

    v = ValidationConfig.model_validate(report.validation)
    table = _table(title=f"Validation of {report.run}: top {v.top_n} of {report.evaluated_trials:,} evaluated trials, "
                         f"ranked by {v.ranking} window score")
    for col in TABLE_COLUMNS:
        table.add_column(col, justify="left" if col in ("window", "result") else "right", no_wrap=True)
    wide = out.width >= 120
    for group in report.table(" .. " if wide else "\n..", " " if wide else "\n"):
        for *cells, plateau, result in group:
            table.add_row(*cells, f"[red]{plateau}[/]" if plateau.endswith("peak") else plateau,
                          f"[green]{result}[/]" if result == "pass" else f"[red]{result}[/]" if result else "")
        table.add_section()
    out.print(table)
    short = report.short()
    if short:
        out.print(short + ("" if report.eligible else "; loosen `constraints`, widen the space or explore longer"), soft_wrap=True)
    if report.reused():
        err.print(f"[yellow]note:[/] {report.reused()}", soft_wrap=True)
    o = report.overfitting
    dsr = o.deflated_sharpe
    if dsr and dsr.dsr is not None and dsr.sharpe_per_bar is not None:
        out.print(f"deflated Sharpe ratio of trial {dsr.trial} given {dsr.counted()}: {dsr.dsr:.3f} "
                  f"(per-bar Sharpe {dsr.sharpe_per_bar:.4f} vs {dsr.sr0_per_bar:.4f} expected from luck alone)")
        if dsr.dsr_effective is not None and dsr.effective_trials is not None:
            out.print(f"  with the {dsr.effective_trials:,.1f} independent trials they amount to (mean correlation "
                      f"{dsr.mean_correlation:.2f}): {dsr.dsr_effective:.3f}")
    if o.pbo:
        out.print(f"probability of backtest overfitting: {o.pbo.pbo:.3f} (the explore favourite of {o.pbo.configs} distinct configs "
                  f"below the out-of-sample median in that share of {o.pbo.splits:,} splits of {o.pbo.blocks} blocks)")
    elif o.pbo_note:
        out.print(f"probability of backtest overfitting: not measured ({o.pbo_note})")
    if failed := report.why_failed():
        out.print("why they failed:")
        for line in failed:
            out.print(f"  {escape(line)}", soft_wrap=True)
    for line in report.plateau_notes():
        out.print(line, soft_wrap=True)
    peaks = [c for c in report.candidates if c.robustness is not None and c.robustness.flagged]
    if peaks:
        err.print(f"[yellow]warning:[/] {', '.join(f'#{c.trial}' for c in peaks)}: a peak, not a plateau: one step in some "
                  f"parameter keeps under {v.min_plateau:.0%} of the explore score at the median (validation.json: robustness)")
    passed = ", ".join(f"#{n}" for n in report.passed) or "none"
    out.print(f"passed: {passed}; best: " + ("none, no candidate passed" if report.best is None else f"#{report.best}"))
    if report.missing_artifacts:
        err.print(f"[yellow]warning:[/] {len(report.missing_artifacts)} evaluated trial(s) have no artifact in this run folder "
                  "(evaluated on another machine?) and were not considered; run `genesis validate` where they ran, "
                  "or copy their trials/NNNNNN.json here")


@app.command()
@_handle_errors
def validate(
    run: Annotated[str, typer.Argument(help="Run folder, or a study name under results/runs.")],
    config: Annotated[Path | None, typer.Option(help="Optimizer YAML whose validation section to use instead of the run's.")] = None,
    top_n: Annotated[int | None, typer.Option(min=1, help="Candidates to re-run; overrides validation.top_n.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of tables.")] = False,
    storage: RunStorage = None,
    results_dir: Annotated[Path, typer.Option(help="The results folder.")] = Path("results"),
) -> None:
    """Re-run a finished run's top candidates on the out-of-sample windows; writes validation.json."""
    from genesis_core.study import load_study_config
    from genesis_core.workflow import validate_run

    folder = _run_folder(run, results_dir, storage)
    with _saying_what_became("run the same command again to validate") as watch, _count_bar("artifacts read", not as_json) as bar:
        watch(folder.validation_path)
        report = validate_run(folder, load_study_config(config).validation if config else None, top_n, bar)
    if as_json:
        _write_json(report.model_dump_json(indent=2) + "\n")
    else:
        _print_validation(report)
        out.print(f"written to {folder.validation_path}")


@app.command("check-equivalence")
@_handle_errors
def check_equivalence(
    run: Annotated[str, typer.Argument(help="Run folder, or a study name under results/runs.")],
    trial: Annotated[list[int] | None, typer.Option("--trial", help="Trial number (repeatable); default: --all.")] = None,
    all_trials: Annotated[bool, typer.Option("--all", help="Every evaluated trial of the run.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print every trial's result as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="List every trial, identical ones included.")] = False,
    storage: RunStorage = None,
    results_dir: Annotated[Path, typer.Option(help="The results folder.")] = Path("results"),
) -> None:
    """Re-run trials from their stored artifacts alone; exit 1 if anything differs."""
    from genesis_core.validation import Equivalence
    from genesis_core.validation import check_equivalence as check

    if trial and all_trials:
        raise typer.BadParameter("give --trial or --all, not both")
    chosen = None if all_trials or not trial else list(trial)
    folder = _run_folder(run, results_dir, storage, trials=chosen or True)  # with a database: its files pulled first
    checked: list[Equivalence] = []
    with _count_bar("trials", not as_json) as bar, _interruptible() as received:

        def on_checked(result: Equivalence, total: int) -> None:
            checked.append(result)
            if bar is not None:
                bar(len(checked), total)

        try:
            results = check(folder, chosen, on_checked)
        except KeyboardInterrupt:
            differ = [f"#{r.trial}" for r in checked if not r.ok]
            err.print(f"interrupted after re-running {len(checked):,} trial(s): " + (
                f"{len(differ):,} differ ({', '.join(differ[:10])}{', ...' if len(differ) > 10 else ''})" if differ
                else "all identical so far") + "; nothing was written: run the same command again to check them all")
            raise typer.Exit(128 + (received[0] if received else signal.SIGINT)) from None
    failed = [r for r in results if not r.ok]
    if as_json:
        _write_json(strict_json([{"trial": r.trial, "ok": r.ok, "differences": r.differences} for r in results]) + "\n")
    else:
        out.print(f"re-run from artifacts: {len(results) - len(failed)} of {len(results)} identical"
                  + ("" if failed or verbose else " (--verbose lists them)"))
        shown = results if verbose else failed
        if shown:
            table = _table(title="Trials" if verbose else "Trials that differ")
            table.add_column("trial", justify="right")
            table.add_column("result")
            for r in shown:
                table.add_row(str(r.trial), "[green]OK[/]" if r.ok else "[red]" + escape("\n".join(r.differences[:10])) + "[/]")
            out.print(table)
    if failed:
        raise typer.Exit(1)


@app.command("walk-forward")
@_handle_errors
def walk_forward(
    config: Annotated[Path, typer.Argument(help="Optimizer YAML with a validation.walk_forward section.")],
    storage: Annotated[str | None, typer.Option(help="Storage URL; overrides meta.storage.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes; overrides meta.n_workers.")] = None,
    max_trials: Annotated[int | None, typer.Option(help="Trials per fold; overrides meta.stop.max_trials.")] = None,
    study: Annotated[str | None, typer.Option(help="Name the folds' studies `NAME-wf<i>` instead of after meta.study_name.")] = None,
    force_resume: Annotated[bool, typer.Option("--force-resume", help="Resume folds although their signature differs (recorded).")] = False,
    skip_preflight: Annotated[bool, typer.Option("--skip-preflight", help="Start without the preflight checks.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of tables.")] = False,
) -> None:
    """Explore and validate on rolling folds (each preflighted); writes walk_forward.json."""
    from genesis_core.optimizer import RunOptions
    from genesis_core.study import load_study_config
    from genesis_core.workflow import PreflightFailed
    from genesis_core.workflow import walk_forward as run_folds

    cfg = load_study_config(config)
    if study is not None:
        cfg = _with_meta(cfg, "study_name", study, "--study")
    options = RunOptions(workers, max_trials, force_resume, deaf_once_stopped=True)
    try:  # each fold is a run of its own, preflighted before it starts
        with _progress_bar(not as_json) as on_progress:
            done = run_folds(cfg, options, storage, skip_preflight, on_progress)
    except PreflightFailed as exc:
        _print_checks(exc.report)
        raise
    if as_json:
        _write_json(done.report.model_dump_json(indent=2) + "\n")
    else:
        _print_walk_forward(done.report)
        out.print(f"written to {done.path}; see it: genesis report {done.path.parent}", soft_wrap=True)
    for line in done.cautions:
        err.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)
    if done.signal is not None:
        stopped_by = signal.Signals[done.signal]
        given = [f"{flag} {value}" for flag, value in (("--study", study), ("--storage", storage), ("--workers", workers),
                                                      ("--max-trials", max_trials)) if value is not None]
        given += ["--skip-preflight"] if skip_preflight else []
        err.print(f"interrupted in fold {len(done.report.folds) + 1} of {len(done.report.blocks) - 1}; resume with: genesis "
                  f"walk-forward {' '.join([str(config), *given])}  (each fold's study resumes where it stopped; "
                  f"{stopped_by.name})", soft_wrap=True)
        raise typer.Exit(128 + stopped_by.value)


def _print_walk_forward(report: WalkForwardReport) -> None:
    """The folds, a row each, and their aggregate (``genesis walk-forward`` and ``runs show``)."""
    table = _table(title=f"Walk-forward of {report.study}: {len(report.folds)} of {len(report.blocks) - 1} folds"
                         + ("" if report.complete else " (interrupted)"))
    for col in ("fold", "explore", "validation", "top trial", "expl. score", "val score", "gap", "passed", "DSR"):
        table.add_column(col, justify="left" if col in ("explore", "validation") else "right",
                         no_wrap=col in ("explore", "validation"))
    for f in report.folds:
        t, dsr = f.top, f.deflated_sharpe
        table.add_row(str(f.fold), "..".join(f.explore), "..".join(f.validation),
                      *(["-"] * 4 if t is None else [str(t.trial), f"{t.explore_score:.2f}", f"{t.validation_score:.2f}",
                                                      f"{t.gap:+.2f}"]),
                      f"{len(f.passed)}", "-" if dsr is None or dsr.gated is None else f"{dsr.gated:.3f}")
    out.print(table)
    for f in report.folds:
        if f.no_top:
            out.print(f"fold {f.fold}: {f.no_top}", soft_wrap=True)
    a, topped = report.aggregate, sum(f.top is not None for f in report.folds)
    passed = "" if a.tops_passed is None else f"{a.tops_passed} passed, "
    out.print(f"{a.folds_with_a_pass} of {len(report.folds)} folds with a candidate passing; the tops (each fold's explore "
              f"best) of {topped} folds on their validation blocks: {passed}mean score {_fmt(a.mean_validation_score)}, worst "
              f"{_fmt(a.worst_validation_score)}, mean gap (explore - validation) {_fmt(a.mean_gap, '+,.4f')}")
    if a.chained():
        out.print(a.chained(), soft_wrap=True)
    if report.biased():
        err.print(f"[yellow]warning:[/] {report.biased()}")


def _print_decision(decision: Decision, as_json: bool) -> None:
    if as_json:
        _write_json(strict_json({"promoted": decision.promoted, "reason": decision.reason,
                                      "gates": [g.model_dump() for g in decision.gates],
                                      "champion": decision.champion and decision.champion.model_dump(mode="json")}) + "\n")
        return
    for g in decision.gates:
        out.print(f"  {'[green]pass[/]' if g.passed else '[red]fail[/]'}  {g.name}: {g.detail}")
    out.print(("[green]promoted[/]: " if decision.promoted else "[red]refused[/]: ") + decision.reason)


@champion_app.command("show")
@_handle_errors
def champion_show(symbol: Symbol = "BTCUSD", timeframe: Timeframe = "1h", results_dir: ResultsDir = Path("results"),
                  as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False) -> None:
    """The current champion: where it came from, what it was measured on, its metrics."""
    from genesis_core.records import ChampionStore

    store = ChampionStore(results_dir, symbol, timeframe)
    c = store.load()
    if c is None:
        raise ConfigError(f"no {symbol} {timeframe} champion at {store.path}")
    if as_json:
        _write_json(c.model_dump_json(indent=2) + "\n")
        return
    out.print(f"[bold]{symbol} {timeframe} champion[/] {c.config_fingerprint[:16]}  from run {c.run.study} "
              f"trial {c.run.trial}, promoted {c.created}, code {c.code_version[:12]}")
    out.print(f"explore {c.data.explore.first_bar} .. {c.data.explore.last_bar}: "
              f"score {c.scores.explore:.3f}; validation ({c.scores.ranking}) {c.scores.validation:.3f}")
    table = _table(title="Metrics")
    table.add_column("window")
    for col in ("return", "sharpe", "max dd", "PF", "trades"):
        table.add_column(col, justify="right")
    windows = [("explore", c.metrics.explore)]
    windows += [(f"{w.start}..{w.end}", m) for w, m in zip(c.data.validation, c.metrics.validation, strict=True)]
    for label, m in windows:
        table.add_row(label, f"{m['total_return']:+.2%}", f"{m['sharpe']:.2f}", f"{m['max_drawdown']:.2%}",
                      f"{m['profit_factor']:.2f}", str(m["num_trades"]))
    out.print(table)


@champion_app.command("promote")
@_handle_errors
def champion_promote(
    run: Annotated[str, typer.Argument(help="Run folder, or a study name under results/runs.")],
    trial: Annotated[int | None, typer.Option(help="Trial number; default: the best candidate that passed validation.")] = None,
    min_improvement: Annotated[float | None, typer.Option(help="Overrides promotion.min_improvement.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of tables.")] = False,
    storage: RunStorage = None,
    results_dir: Annotated[Path, typer.Option(help="The results folder (its champions/ is where promotion writes).")] = Path("results"),
) -> None:
    """Promote a validated trial through the gates; exit 1 if refused (recorded either way)."""
    from genesis_core.workflow import promote_run

    decision = promote_run(_run_folder(run, results_dir, storage), trial, min_improvement)
    _print_decision(decision, as_json)
    if not decision.promoted:
        raise typer.Exit(1)


@champion_app.command("history")
@_handle_errors
def champion_history(symbol: Symbol = "BTCUSD", timeframe: Timeframe = "1h", results_dir: ResultsDir = Path("results"),
                     as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False) -> None:
    """Every promotion, refusal and rollback, oldest first."""
    from genesis_core.records import ChampionStore

    store = ChampionStore(results_dir, symbol, timeframe)
    history = store.history()
    if as_json:
        _write_json(strict_json([e.model_dump(mode="json", exclude={"champion"}) for e in history]) + "\n")
        return
    if not history:  # an empty table said nothing of where it looked: a mistyped --results-dir read as no history
        out.print(f"no {symbol} {timeframe} champion history at {store.history_path} (see `genesis champion promote`)", soft_wrap=True)
        return
    table = _table(title=f"{symbol} {timeframe} champion history")
    for col in ("time", "action", "run", "trial", "config", "reason"):
        table.add_column(col, overflow="fold")
    for e in history:
        table.add_row(e.time[:19], e.action, str(e.study or e.run or ""), "" if e.trial is None else str(e.trial),
                      (e.config_fingerprint or "")[:12], e.reason)
    out.print(table)


@champion_app.command("rollback")
@_handle_errors
def champion_rollback(symbol: Symbol = "BTCUSD", timeframe: Timeframe = "1h", results_dir: ResultsDir = Path("results"),
                      to: Annotated[str | None, typer.Option(help="Fingerprint prefix of an earlier champion (see history).")] = None,
                      as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False) -> None:
    """Restore the champion the current one replaced (or --to an earlier one); recorded in the history."""
    from genesis_core.champion import rollback
    from genesis_core.records import ChampionStore

    _print_decision(rollback(ChampionStore(results_dir, symbol, timeframe), to), as_json)


@app.command()
@_handle_errors
def mcp(
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP at POST /mcp instead of stdio.")] = False,
    host: Annotated[str, typer.Option(help="HTTP bind address; beyond loopback it needs the token in $GENESIS_MCP_TOKEN.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8765,
    results_dir: Annotated[Path, typer.Option(help="The results folder served (runs, champions).")] = Path("results"),
    configs_dir: Annotated[Path, typer.Option(help="The folder optimizer configs (and their base configs) are read from.")] = Path("configs"),
    allow_write: Annotated[bool, typer.Option("--allow-write", help="Add tools that start runs and promote champions "
                                              "(HTTP then needs the token in $GENESIS_MCP_TOKEN).")] = False,
    allowed_host: Annotated[list[str] | None, typer.Option(help="A Host name clients use to reach the server (repeatable); "
                                                                "the bind address and loopback names are always allowed.")] = None,
    allow_strategy_modules: Annotated[bool, typer.Option("--allow-strategy-modules", help="Let configs name Python modules "
                                                         "to import (package.module:Class strategies, score functions, samplers).")] = False,
    json_response: Annotated[bool, typer.Option("--json-response", help="Answer plain JSON (stateless) instead of server-sent events.")] = False,
) -> None:
    """Serve runs, trials and champions to AI assistants over MCP (read-only unless --allow-write)."""
    from genesis_core.mcp_server import TOKEN_ENV, is_loopback, serve

    if not (results_dir / "runs").is_dir():  # a mistyped folder in an assistant's config served "no runs", saying nothing
        err.print(f"[yellow]warning:[/] {escape(str(results_dir.resolve()))} holds no runs/ folder: the assistant will find no run "
                  "(--results-dir)", soft_wrap=True)
    if http:
        if not is_loopback(host):
            err.print(f"[yellow]warning:[/] binding {host}: the MCP server is reachable from the network "
                      f"(bearer token required; Host must be one of {', '.join(allowed_host or []) or 'the loopback names'})")
        err.print(f"genesis MCP server ({'read-write' if allow_write else 'read-only'}) at http://{host}:{port}/mcp")
    serve(results_dir, configs_dir, allow_write, "http" if http else "stdio", host, port, os.environ.get(TOKEN_ENV),
          allowed_host, allow_strategy_modules, json_response)


@app.command()
@_handle_errors
def report(
    run: Annotated[str, typer.Argument(help="Run folder, or a study name under `<results-dir>/runs`; a walk-forward's "
                                       "folder (`<study>-walk-forward`) gives its walk-forward report.")],
    output: Annotated[Path | None, typer.Option("--out", help="HTML file to write (default: `<run folder>/report.html`).")] = None,
    results_dir: Annotated[Path, typer.Option(help="The results folder.")] = Path("results"),
    storage: RunStorage = None,
) -> None:
    """Write one self-contained HTML report of a run (works offline): history, importances, parameters,
    validation, equity and drawdown of the top candidates and the champion, trades; of a walk-forward:
    the folds on one time axis, explore vs validation score, the chained out-of-sample equity."""
    from genesis_core.report import run_report, walk_forward_report

    folder = _run_folder(run, results_dir, storage, walk_forward=True)
    path = output or folder.path / "report.html"
    with _saying_what_became("run the same command again to write it") as watch:
        watch(path)
        atomic_write(path, walk_forward_report(folder) if folder.is_walk_forward() else run_report(folder))
    out.print(f"report written to {path}")


@runs_app.command("list")
@_handle_errors
def runs_list(
    results_dir: Annotated[Path, typer.Option(help="The results folder.")] = Path("results"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
    storage: RunStorage = None,
) -> None:
    """Every finished run, newest first: study, trials, best production score, validation, last session."""
    from genesis_core.optimizer import RunFiles
    from genesis_core.records import finished_runs, walk_forwards

    for name in RunFiles.of(storage).runs() if storage is not None else []:  # pulled into results_dir first
        _run_folder(name, results_dir, storage, trials=False)  # a 5,000-trial run's artifacts took half of 2 s
    (runs, unreadable), (walks, unread_walks) = finished_runs(results_dir), walk_forwards(results_dir)
    for what, why in [("a run", why) for why in unreadable] + [("a walk-forward", why) for why in unread_walks]:
        err.print(f"[yellow]warning:[/] {what} left out: {escape(why)}", soft_wrap=True)
    if as_json:
        _write_json(strict_json([r.summary() for r in runs]) + "\n")
        return
    if not runs:
        out.print(f"no runs in {results_dir / 'runs'} (see `genesis optimize`)")
        return
    table = _table(title=f"Runs in {results_dir}")
    for col in ("run", "trials", "best\ntrial", "production\nscore", "validated", "passed", "last session"):
        table.add_column(col, justify="left" if col in ("run", "last session") else "right", no_wrap=True)
    for r in runs:
        best, v = r.run.best_trial, r.validation
        table.add_row(r.name, f"{r.run.cache.total_trials:,}", "-" if best is None else str(best.number),
                      "-" if best is None else f"{best.production_score:.2f}", "no" if v is None else "yes",
                      "-" if v is None else f"{len(v.passed)} of {len(v.candidates) + len(v.refused)}", r.run.sessions[-1].finished)
    out.print(table)
    if walks:
        wf_table = _table(title=f"Walk-forwards in {results_dir} (their folds are the runs named <study>-wf<i> above)")
        for col in ("walk-forward", "folds", "with a pass", "tops\npassed", "tops' mean\nval score", "worst"):
            wf_table.add_column(col, justify="left" if col == "walk-forward" else "right", no_wrap=True)
        for name, wf in walks:
            a = wf.aggregate
            wf_table.add_row(name, f"{len(wf.folds)} of {wf.walk_forward['folds']}", str(a.folds_with_a_pass),
                             "-" if a.tops_passed is None else str(a.tops_passed), _fmt(a.mean_validation_score, ".2f"),
                             _fmt(a.worst_validation_score, ".2f"))
        out.print(wf_table)


@runs_app.command("show")
@_handle_errors
def runs_show(
    run: Annotated[str, typer.Argument(help="Run folder, or a study name under `<results-dir>/runs`.")],
    trial: Annotated[int | None, typer.Option(min=0, help="Show this trial: parameters, score, metrics, trace.")] = None,
    results_dir: Annotated[Path, typer.Option(help="The results folder.")] = Path("results"),
    as_json: Annotated[bool, typer.Option("--json", help="Print run.json (or the trial's artifact) as JSON.")] = False,
    storage: RunStorage = None,
) -> None:
    """One run: sessions, cache, outcomes, best trial and validation; or, with --trial, one trial; or a walk-forward's folds."""
    from genesis_core.optimizer import fold_cautions, folder_cautions

    folder = _run_folder(run, results_dir, storage, walk_forward=trial is None, trials=False if trial is None else {trial})
    if not folder.exists() and folder.is_walk_forward():
        wf = folder.read_walk_forward()
        if as_json:
            _write_json(wf.model_dump_json(indent=2) + "\n")
            return
        _print_walk_forward(wf)
        for line in fold_cautions(folder, wf):
            err.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)
        out.print(f"its page: genesis report {folder.path}; a fold: genesis runs show {wf.folds[0].run_dir if wf.folds else '...'}",
                  soft_wrap=True)
        return
    if trial is not None:
        artifact = _trial_artifact(f"{folder.path}:{trial}", results_dir)
        if as_json:
            _write_json(artifact.model_dump_json(indent=2) + "\n")
            return
        sc = artifact.score
        out.print(f"[bold]trial {trial}[/] of {folder.name}: {sc.outcome.value}, production score {sc.production:.4f}, "
                  f"feasibility {sc.feasibility:.4f}" + (f", constraints failed: {', '.join(sc.constraints_failed)}"
                                                          if sc.constraints_failed else ""))
        table = _table(show_header=False, title="Parameters")
        for path, value in artifact.params.items():
            table.add_row(path, strict_json(value, None))
        metrics = _metrics_table(artifact.metrics)
        out.print(Columns([table, metrics]))
        out.print(f"window {artifact.window.first_bar} .. {artifact.window.last_bar}; config fingerprint "
                  f"{artifact.fingerprints['config'][:16]}")
        out.print(f"re-run it: genesis backtest --trial {_run_ref(folder)}:{trial}")
        return
    record = folder.read_run()
    if as_json:
        _write_json(record.model_dump_json(indent=2) + "\n")
        return
    out.print(f"[bold]{record.study_name}[/] ({folder.path}), storage {record.storage}")
    sessions = _table(title="Sessions")
    for col in ("started", "seconds", "workers", "max trials", "stopped", "preflight"):
        sessions.add_column(col)
    for s in record.sessions:
        preflight = "skipped" if s.preflight is None or getattr(s.preflight, "skipped", False) else \
            ("ok" if getattr(s.preflight, "ok", False) else "failed")
        stopped = s.stopped_reason or s.signal or ("interrupted" if s.interrupted else "budget or time")
        sessions.add_row(s.started, f"{s.seconds:,.1f}", str(s.workers), "-" if s.max_trials is None else str(s.max_trials),
                         stopped, preflight)
    out.print(sessions)
    c = record.cache
    out.print(f"{c.total_trials:,} trials: {_counts(record.states)}; outcomes {_counts(record.outcomes)}")
    out.print(f"cache: {c.cache_hits:,} duplicates answered ({c.hit_rate:.1%}), {c.unique_backtests:,} backtests run, "
              f"{c.reused_from_other_studies:,} reused from other studies")
    best = record.best_trial
    out.print("no VALID trial yet" if best is None else
              f"best trial #{best.number}: production score {best.production_score:.4f} "
              f"(genesis runs show {_run_ref(folder)} --trial {best.number})")
    for line in folder_cautions(folder):  # as optimize said them, as its page says them
        err.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)
    if folder.is_validated():
        report = folder.read_validation()
        _print_validation(report)
        stale = folder.stale(report)
        if stale is not None:
            err.print(f"[yellow]warning:[/] {stale}: genesis validate {folder.path} again for this run's candidates")


def _counts(counts: dict[str, int]) -> str:
    """``{'VALID': 3, 'FAIL': 1}`` as people write it: ``3 VALID, 1 FAIL``."""
    return ", ".join(f"{n:,} {name}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


@model_app.command("train")
@_handle_errors
def model_train(
    output: Annotated[Path, typer.Option("--out", help="Where to write the model JSON.")],
    data: Annotated[str, typer.Option(help="Candle file.")] = "data/BTCUSD_1h_bitfinex.csv.gz",
    symbol: Annotated[str | None, typer.Option(help="The market the data holds, e.g. BTCUSD (default: the file's "
                                                    "metadata); recorded so the model is never used on another market unawares.")] = None,
    start: Annotated[str | None, typer.Option(help="Training window start (inclusive).")] = None,
    end: Annotated[str | None, typer.Option(help="Training window end (inclusive); labels never look past it.")] = None,
    horizon: Annotated[int, typer.Option(min=1, help="Label: sign of the return over this many bars.")] = 4,
) -> None:
    """Fit the logistic signal model on a training window only and write its JSON."""
    from genesis_core.data import load_candles, same_symbol
    from genesis_core.strategy.model import save_model, train_model

    candles = load_candles(data)
    market = symbol or candles.symbol
    if market is None:
        raise ConfigError(f"{data} does not say which market it holds: give --symbol (e.g. --symbol BTCUSD)")
    if candles.symbol is not None and symbol is not None and not same_symbol(symbol, candles.symbol):
        raise ConfigError(f"--symbol {symbol} but {data} holds {candles.symbol}")
    model = train_model(candles.window(start, end, 0).candles, market, horizon=horizon)
    save_model(model, output)
    t = model.training
    out.print(f"trained on {t['symbol']} {t['timeframe']} {t['first_bar']} .. {t['last_bar']}: {t['fit_rows']:,} rows fitted, "
              f"{t['calibration_rows']:,} for calibration (accuracy {t['calibration_accuracy']:.2%}); "
              "preflight refuses windows of this market inside that span")
    out.print(f"model written to {output}")


@model_app.command("show")
@_handle_errors
def model_show(
    model: Annotated[str, typer.Argument(help="A model file, or builtin:NAME (e.g. builtin:btcusd_1h).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the model file as JSON.")] = False,
) -> None:
    """What a signal model was trained on (market, span, code) and what it reads (its features)."""
    from genesis_core.strategy.model import load_model

    loaded, sha = load_model(model)
    if as_json:
        _write_json(strict_json(loaded.model_dump()) + "\n")
        return
    t = loaded.training
    out.print(f"[bold]{model}[/] (sha256 {sha[:16]})")
    out.print(f"trained on {t.get('symbol') or 'an unrecorded market'} {t.get('timeframe') or ''} "
              f"{t['first_bar']} .. {t['last_bar']} ({t.get('source', 'source unrecorded')}); code {t.get('code', 'unrecorded')}")
    fitted = [t.get(k) for k in ("fit_rows", "calibration_rows", "calibration_accuracy")]  # a model not trained here may not say
    out.print((f"{fitted[0]:,} rows fitted, {fitted[1]:,} for calibration (accuracy {fitted[2]:.2%}), "
               if all(isinstance(x, int | float) and not isinstance(x, bool) for x in fitted) else "rows fitted unrecorded, ")
              + f"label: sign of the {loaded.horizon}-bar return")
    table = _table(title="Features (standardised weights)")
    table.add_column("feature")
    table.add_column("weight", justify="right")
    for name, weight in sorted(zip(loaded.features, loaded.weights, strict=True), key=lambda fw: -abs(fw[1])):
        table.add_row(name, f"{weight:+.4f}")
    out.print(table)
    out.print("preflight refuses explore, validation and walk-forward windows of this market inside the training span")


@storage_app.command("serve")
@_handle_errors
def storage_serve(
    storage: Annotated[str, typer.Option(help="The database the studies live in: postgresql://...")],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface; the proxy has no "
                                            "authentication: keep it on a private network).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 13000,
    threads: Annotated[int, typer.Option(min=1, help="Requests served at once; as many database connections.")] = 16,
) -> None:
    """Serve the database's studies to workers over gRPC (Optuna's storage proxy), until Ctrl-C.
    Workers: genesis optimize CONFIG --storage postgresql://... --proxy HOST:PORT."""
    from genesis_core.optimizer import redact, serve_proxy

    err.print(f"gRPC storage proxy for {redact(storage)} at {host}:{port} ({threads} threads, at most {threads} database "
              "connections); Ctrl-C stops it", soft_wrap=True)
    with _interruptible() as received:
        try:
            serve_proxy(storage, host, port, threads)
        except KeyboardInterrupt:
            raise typer.Exit(128 + (received[0] if received else signal.SIGINT)) from None


@storage_app.command("dashboard")
@_handle_errors
def storage_dashboard(
    storage: Annotated[str, typer.Option(help="The study storage: journal:///..., sqlite:///..., postgresql://... or "
                                              "journal+postgresql://...")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
) -> None:
    """Watch the studies of a storage live in optuna-dashboard, the journal on PostgreSQL included
    (which `optuna-dashboard URL` cannot open). Needs optuna-dashboard (pip install 'genesis-core[fleet]')."""
    from genesis_core.optimizer import open_storage, redact

    try:
        import optuna_dashboard
    except ImportError:
        raise ConfigError("optuna-dashboard is not installed: pip install 'genesis-core[fleet]'") from None
    from wsgiref.simple_server import make_server

    err.print(f"optuna-dashboard for {redact(storage)} at http://{host}:{port}/ ; Ctrl-C stops it", soft_wrap=True)
    # served here, as optuna_dashboard.run_server serves it, but stopped by its loop: a KeyboardInterrupt raised while
    # it answered a request (a browser's page polls every few seconds) was taken for that request's error, and the
    # dashboard served on, deaf to Ctrl-C and SIGTERM
    with make_server(host, port, optuna_dashboard.wsgi(open_storage(storage))) as httpd:
        with _interruptible(then=lambda: threading.Thread(target=httpd.shutdown, daemon=True).start()) as received:
            httpd.serve_forever()
    if received:
        raise typer.Exit(128 + received[0])


@data_app.command("check")
@_handle_errors
def data_check(
    path: Annotated[str, typer.Argument(help="Candle file (CSV, CSV.gz or Parquet).")],
    timeframe: Annotated[str | None, typer.Option(help="Expected timeframe, e.g. 1h (default: inferred).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of tables.")] = False,
) -> None:
    """Validate a candle file and summarise it (exit 2 naming the first bad row)."""
    from genesis_core.data import describe_gaps, file_market, format_ts, load_candles

    read: list[str] = []
    c = load_candles(path, timeframe, read)
    g, spikes = c.gaps(), c.spikes()
    exchange = (file_market(Path(path)) or {}).get("exchange")  # its known outages name the gaps they explain
    summary: dict[str, Any] = {
        "path": path, "read": read, "exchange": exchange, "symbol": c.symbol, "bars": len(c), "timeframe": c.timeframe,
        "first_bar": format_ts(c.timestamps[0]), "last_bar": format_ts(c.timestamps[-1]), "gaps": g.count,
        "missing_bars": g.missing_bars, "largest_gap_after": g.largest_at, "largest_gaps": describe_gaps(c, exchange),
        "local_clock": g.local_clock, "spikes": spikes.count, "largest_spike_at": spikes.largest_at, "fingerprint": c.fingerprint,
    }
    if as_json:
        _write_json(strict_json(summary) + "\n")
        return
    table = _table(show_header=False, title="Candles OK")
    for k, v in summary.items():
        if k == "largest_gaps":  # with the exchange's known outage each falls in
            table.add_row(k, "\n".join(v) or "-")
        elif k != "local_clock":  # said in the gaps' warning
            table.add_row(k, ("; ".join(v) or "as written") if isinstance(v, list) else _fmt(v))
    out.print(table)
    if g.count:
        err.print(f"[yellow]warning:[/] {g.describe(c.timeframe_seconds)}", soft_wrap=True)
    if spikes.count:
        err.print(f"[yellow]warning:[/] {spikes.describe()}", soft_wrap=True)


@contextlib.contextmanager
def _count_bar(what: str, show: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar of ``what`` done of a total, with the time left (nothing when not shown): a
    download's bars, check-equivalence's trials, the artifacts validate reads."""
    if not show:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # drawn from this thread: with a thread of its own to redraw it, validate's process spawned, not forked, the process
    # that runs its backtests (``child_context``), 2.5 s more a validation; off a terminal it drew nothing but a blank line
    with Progress(TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                  transient=True, disable=not err.is_terminal, auto_refresh=False) as bar:
        task = bar.add_task(what, total=None)
        drawn = 0.0

        def update(done: int, total: int) -> None:
            nonlocal drawn
            now = time.monotonic()
            redraw = now - drawn >= BAR_REDRAW_SECONDS or done >= total
            bar.update(task, completed=done, total=max(total, done), refresh=redraw)
            drawn = now if redraw else drawn

        yield update


def _print_fetched(fetched: Fetched, as_json: bool, verb: str) -> None:
    from genesis_core.data import describe_gaps, format_ts

    c, m = fetched.candles, fetched.market
    g = c.gaps()
    largest = describe_gaps(c, m.get("exchange"))
    summary: dict[str, Any] = {"path": str(fetched.path), "exchange": m.get("exchange"), "symbol": m.get("symbol"), "timeframe": c.timeframe,
               "bars": len(c), "new_bars": fetched.new_bars, "resumed_bars": fetched.resumed_bars,
               "first_bar": format_ts(c.timestamps[0]), "last_bar": format_ts(c.timestamps[-1]), "gaps": g.count,
               "missing_bars": g.missing_bars, "largest_gaps": largest, "fingerprint": c.fingerprint,
               "fetched_at": m.get("fetched_at"), "ccxt_version": m.get("ccxt_version"), "revised": fetched.revised}
    if as_json:
        _write_json(strict_json(summary) + "\n")
        return
    resumed = f" ({fetched.resumed_bars:,} of them fetched by an interrupted run)" if fetched.resumed_bars else ""
    out.print(f"{verb} {fetched.new_bars:,} bars{resumed}: {fetched.path} holds {len(c):,} {m.get('symbol')} {c.timeframe} bars "
              f"from {m.get('exchange')}, {summary['first_bar']} .. {summary['last_bar']}, fingerprint {c.fingerprint[:16]}",
              soft_wrap=True)
    if fetched.revised is not None:
        err.print(f"[yellow]warning:[/] {fetched.revised}", soft_wrap=True)
    if g.count:
        err.print(f"[yellow]warning:[/] {g.describe(c.timeframe_seconds)}: " + "; ".join(largest), soft_wrap=True)
    if (spikes := c.spikes()).count:
        err.print(f"[yellow]warning:[/] {spikes.describe()}", soft_wrap=True)


ApiUrl = Annotated[str | None, typer.Option("--api-url", help="Send the exchange's REST requests to this root instead (a proxy, "
                                                              "a mirror, a test server); each API keeps its path below it.")]
Retries = Annotated[int, typer.Option(help="Retries of a page on 429, 5xx and timeouts (waits 1, 2, 4 ... s, or Retry-After).")]


@data_app.command("download")
@_handle_errors
def data_download(
    exchange: Annotated[str, typer.Option(help="ccxt exchange id, e.g. bitfinex, binance, kraken.")],
    symbol: Annotated[str, typer.Option(help="Spot market, e.g. BTC/USD (BTCUSD is understood too).")],
    start: Annotated[str, typer.Option(help="First bar (ISO date/time, UTC).")],
    timeframe: Annotated[str, typer.Option(help="Candle timeframe, e.g. 1h, 4h, 1d.")] = "1h",
    end: Annotated[str | None, typer.Option(help="Last bar, inclusive (default: the last closed candle).")] = None,
    output: Annotated[Path | None, typer.Option("--out", help="File to write: .parquet (default `data/<exchange>_<SYMBOL>_<tf>"
                                                 ".parquet`) or .csv.gz (market in `<file>.market.json`).")] = None,
    api_url: ApiUrl = None,
    retries: Retries = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Download candles from an exchange (ccxt): every page kept as it arrives, so an interrupted
    download resumes where it stopped when run again; validated; the market in the file's metadata."""
    from genesis_core.data.exchange import download

    with _count_bar("bars", not as_json) as on_progress, _resumable():
        fetched = download(exchange, symbol, timeframe, start, end, output, api_url, on_progress, retries)
    _print_fetched(fetched, as_json, "downloaded")


@data_app.command("update")
@_handle_errors
def data_update(
    path: Annotated[Path, typer.Argument(help="A file written by `genesis data download`.")],
    api_url: ApiUrl = None,
    retries: Retries = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Append the bars closed since the file's last one, re-validate the whole file, replace it atomically."""
    from genesis_core.data.exchange import update

    with _count_bar("bars", not as_json) as on_progress, _resumable():
        fetched = update(path, api_url, on_progress, retries)
    _print_fetched(fetched, as_json, "appended")


def _identity(path: Path) -> tuple[int, int, int] | None:
    """A file's inode, size and modification time (None if absent): whether a command replaced it."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@contextlib.contextmanager
def _interruptible(deaf_once_stopped: bool = False, then: Callable[[], None] | None = None) -> Iterator[list[int]]:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt here (or call ``then``), whatever the process
    inherited (a shell's background job starts with SIGINT ignored); yields the signals received. With
    ``deaf_once_stopped`` the first one also makes the process ignore the next ones for good: a
    second Ctrl-C in its last lines would end it with a traceback, and one in the interpreter's
    teardown (signals back to their defaults) would kill it by SIGINT, instead of the stop's own
    message and exit 128 + the first (as ``optimizer.stopping_on_signals``)."""
    received: list[int] = []

    def stop(signum: int, frame: object) -> None:
        received.append(signum)
        if deaf_once_stopped:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
        if then is None:
            raise KeyboardInterrupt
        then()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        if not (received and deaf_once_stopped):
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@contextlib.contextmanager
def _saying_what_became(again: str) -> Iterator[Callable[[Path], None]]:
    """Ctrl-C or SIGTERM: one line saying what became of each file the command watches (``watch(path)``
    before it may write it; each is written whole or not at all, ``atomic_write``), and exit 128 +
    the signal. Unhandled, SIGTERM killed the command, which could leave a temporary file beside its
    output, and Ctrl-C ended it with no word of its files."""
    before: dict[Path, tuple[int, int, int] | None] = {}

    def watch(path: Path) -> None:
        before.setdefault(path, _identity(path))

    def became(path: Path) -> str:
        now = _identity(path)
        return "was written before the stop" if now != before[path] else "is as it was" if now else "was not written"

    with _interruptible() as received:
        try:
            yield watch
        except KeyboardInterrupt:
            kept = "; ".join(f"{path} {became(path)}" for path in before) or "nothing was written"
            err.print(f"interrupted: {kept}; {again}", soft_wrap=True)
            raise typer.Exit(128 + (received[0] if received else signal.SIGINT)) from None


@contextlib.contextmanager
def _resumable() -> Iterator[None]:
    """Ctrl-C or SIGTERM during a download: the pages fetched are kept; say so and exit 128 + the
    signal. A full disk keeps them too: say so in its line."""
    with _interruptible(deaf_once_stopped=True) as received:
        try:
            yield
        except KeyboardInterrupt:
            err.print("interrupted: the pages fetched are kept in <file>.part/; run the same command again to resume")
            raise typer.Exit(128 + (received[0] if received else signal.SIGINT)) from None
        except OSError as exc:
            if exc.errno not in _DISK_ERRORS:
                raise
            raise DataError(f"{_disk_error(exc)}; the pages fetched are kept in <file>.part/: free some space, then run the "
                            "same command again to resume") from None


@data_app.command("list")
@_handle_errors
def data_list(
    folder: Annotated[Path, typer.Argument(help="Folder of candle files.")] = Path("data"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """The candle files in a folder: market, span, bars, gaps, fingerprint (or why one does not load)."""
    from genesis_core.data import candle_files, format_ts

    rows: list[dict[str, Any]] = []
    for f in candle_files(folder):
        c, m = f.candles, f.market or {}
        rows.append({"path": str(f.path), "exchange": m.get("exchange"), "symbol": m.get("symbol") or (c and c.symbol),
                     "timeframe": c and c.timeframe, "first_bar": c and format_ts(c.timestamps[0]),
                     "last_bar": c and format_ts(c.timestamps[-1]), "bars": c and len(c), "gaps": c and c.gaps().count,
                     "fingerprint": c and c.fingerprint, "error": f.error})
    if as_json:
        _write_json(strict_json(rows) + "\n")
        return
    table = _table(title=f"Candle files in {folder}")
    for col in ("file", "market", "span", "bars", "gaps", "fingerprint"):
        table.add_column(col, justify="right" if col in ("bars", "gaps") else "left", no_wrap=col != "span")
    for r in rows:
        market = " ".join(str(x) for x in (r["exchange"], r["symbol"], r["timeframe"]) if x) or "-"
        if r["error"]:
            table.add_row(Path(r["path"]).name, "-", f"[red]{escape(r['error'])}[/]", "-", "-", "-")
        else:
            table.add_row(Path(r["path"]).name, market, f"{r['first_bar'][:16]} .. {r['last_bar'][:16]}", f"{r['bars']:,}",
                          str(r["gaps"]), str(r["fingerprint"])[:12])
    out.print(table)


class _WarningLine(logging.Handler):
    """What the library logs at WARNING and above (e.g. a journal lock waited for), as a warning line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"[yellow]warning:[/] {record.getMessage()}", markup=True, highlight=False)


@app.callback(invoke_without_command=True)
def _main(
    version: Annotated[bool, typer.Option("--version", help="Show the version and exit.")] = False,
    directory: Annotated[Path | None, typer.Option("-C", "--directory", help="Run as if started in this folder, where a "
                                                   "config's relative paths are read from (an assistant's MCP server, a cron job).")] = None,
) -> None:
    report_crashes()
    library = logging.getLogger("genesis_core")
    if not library.handlers:
        library.addHandler(_WarningLine(logging.WARNING))
        library.propagate = False
    if version:
        out.print(f"genesis-core {__version__}")
        raise typer.Exit()
    if directory is not None:
        try:
            os.chdir(directory.expanduser())
        except OSError:
            raise typer.BadParameter(f"{directory}: not a folder", param_hint="-C") from None
