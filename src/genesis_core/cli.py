"""The ``genesis`` command line: rich tables for people, ``--json`` for machines, exit code 2 for bad input."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.columns import Columns
from rich.console import Console
from rich.table import Table

from genesis_core import __version__
from genesis_core.errors import GenesisError

app = typer.Typer(help="Genesis-Core: find and promote strategy parameters without fooling yourself.", no_args_is_help=True)
model_app = typer.Typer(help="Train and inspect signal models.", no_args_is_help=True)
data_app = typer.Typer(help="Check candle files.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(data_app, name="data")

# Piped output gets a fixed width wide enough for the trade table, instead of rich's 80 columns.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
F = TypeVar("F", bound=Callable[..., Any])
FEATURE_CACHE = Path(".cache/genesis/features")


def _handle_errors(fn: F) -> F:
    """Turn GenesisError into one clear line on stderr and its exit code, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GenesisError as exc:
            err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic write: a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}"
    return str(value)


@app.command()
@_handle_errors
def backtest(
    config: Annotated[Path, typer.Option("--config", "-c", help="Strategy YAML (strategy, params, data, costs).")],
    data: Annotated[str | None, typer.Option(help="Candle file; overrides data.path.")] = None,
    start: Annotated[str | None, typer.Option(help="First bar, inclusive (ISO date/time, UTC).")] = None,
    end: Annotated[str | None, typer.Option(help="Last bar, inclusive; a bare date means the whole day.")] = None,
    output: Annotated[Path | None, typer.Option("--out", help="Result JSON path (default: results/backtests/...).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result JSON instead of tables.")] = False,
    trades: Annotated[int, typer.Option(help="How many of the last trades to show.")] = 10,
) -> None:
    """Backtest a strategy config on candles and write a result JSON."""
    from genesis_core.backtest import Backtester, build_config, read_config_file

    overrides: dict[str, Any] = {"data": {k: v for k, v in (("path", data), ("start", start), ("end", end)) if v is not None}}
    cfg = build_config(read_config_file(config), overrides=overrides)
    bt = Backtester(FEATURE_CACHE)
    candles = bt.candles(cfg.data.path, cfg.data.timeframe)
    result = bt.run(cfg)
    payload = result.to_dict()
    path = output or Path("results/backtests") / f"{cfg.strategy}-{result.config_fingerprint[:10]}-{result.window.fingerprint[:10]}.json"
    _write_json(path, payload)
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    gaps = result.window.candles.slice(result.window.start_index, len(result.window.candles)).gaps()
    w = payload["window"]
    out.print(
        f"[bold]{cfg.strategy}[/] on {candles.source} ({w['timeframe']}): {w['first_bar']} .. {w['last_bar']}, "
        f"{w['bars']:,} bars + {w['warmup_bars']} warm-up"
    )
    if gaps.count:
        err.print(f"[yellow]warning:[/] window has {gaps.describe(candles.timeframe_seconds)}")
    if result.trace["warmup_bars_in_window"]:
        err.print(
            f"[yellow]warning:[/] {result.trace['warmup_bars_in_window']} bars of the window still had cold indicators; "
            "raise data.warmup_bars"
        )
    metrics = Table(title="Metrics", show_header=False)
    for k, v in result.metrics.items():
        metrics.add_row(k, _fmt(v))
    trace = Table(title="Decision trace", show_header=False)
    for k, v in result.trace.items():
        if isinstance(v, dict):
            for sub, n in v.items():
                trace.add_row(f"{k}.{sub}", str(n))
        else:
            trace.add_row(k, str(v))
    out.print(Columns([metrics, trace]))
    rows = payload["trades"][-trades:] if trades > 0 else []
    if rows:
        table = Table(title=f"Last {len(rows)} of {len(payload['trades'])} trades")
        for col in ("entry (UTC)", "exit (UTC)", "side", "entry", "exit", "pnl", "bars", "reason"):
            table.add_column(col, justify="left" if col in ("side", "reason") else "right")
        for t in rows:
            table.add_row(
                t["entry_time"][:16].replace("T", " "), t["exit_time"][:16].replace("T", " "), t["side"],
                f"{t['entry_price']:,.1f}", f"{t['exit_price']:,.1f}", f"{t['pnl']:,.2f}", str(t["bars_held"]), t["exit_reason"],
            )
        out.print(table)
    out.print(f"config fingerprint {result.config_fingerprint[:16]}  data window {result.window.fingerprint[:16]}")
    out.print(f"result written to {path}")


@app.command()
@_handle_errors
def optimize(
    config: Annotated[Path, typer.Argument(help="Optimizer YAML (meta, parameters, constraints, scoring).")],
    storage: Annotated[str | None, typer.Option(help="Storage URL (sqlite:///... or postgresql://...); overrides meta.storage.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes on this machine; overrides meta.n_workers.")] = None,
    max_trials: Annotated[int | None, typer.Option(help="Total trials in the study; overrides meta.stop.max_trials.")] = None,
    force_resume: Annotated[bool, typer.Option(help="Resume although the study signature differs (recorded).")] = False,
    backfill_signature: Annotated[bool, typer.Option(help="Adopt the current signature for a study that has none.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Search strategy parameters with Optuna; resumable, cached, with per-trial artifacts."""
    from genesis_core.optimizer import RunOptions
    from genesis_core.optimizer import optimize as run_optimize

    options = RunOptions(storage, workers, max_trials, force_resume, backfill_signature)
    summary = run_optimize(config, options, progress=not as_json)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        s = summary["session"]
        out.print(f"{summary['cache']['total_trials']} trials in the study; this session {s['seconds']} s with {s['workers']} worker(s)")
        out.print(f"outcomes: {summary['outcomes']}  cache: {summary['cache']}")
        if summary["best_trial"]:
            out.print(f"best trial #{summary['best_trial']['number']}: production score {summary['best_trial']['score_phase2']:.4f}")
        out.print(f"artifacts in {summary['run_dir']}")
    for line in [*summary["session"]["notes"], *summary["warnings"]]:
        err.print(f"[yellow]warning:[/] {line}")
    if summary["session"]["stopped_reason"]:
        err.print(f"[yellow]explore stopped early:[/] {summary['session']['stopped_reason']}")
    if summary.get("resume_hint"):
        err.print(f"interrupted; resume with: {summary['resume_hint']}")
        raise typer.Exit(130)


@app.command("check-equivalence")
@_handle_errors
def check_equivalence(
    run: Annotated[str, typer.Argument(help="Run folder, or a study name under results/runs.")],
    trial: Annotated[list[int] | None, typer.Option("--trial", help="Trial number (repeatable); default: --all.")] = None,
    all_trials: Annotated[bool, typer.Option("--all", help="Every evaluated trial of the run.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Re-run trials from their stored artifacts alone; exit 1 if anything differs."""
    from genesis_core.validation import check_equivalence as check, resolve_run

    if trial and all_trials:
        raise typer.BadParameter("give --trial or --all, not both")
    results = check(resolve_run(run), None if all_trials or not trial else list(trial))
    failed = [r for r in results if not r.ok]
    if as_json:
        sys.stdout.write(json.dumps([{"trial": r.trial, "ok": r.ok, "differences": r.differences} for r in results], indent=2) + "\n")
    else:
        table = Table(title=f"Re-run from artifacts: {len(results) - len(failed)} of {len(results)} identical")
        table.add_column("trial", justify="right")
        table.add_column("result")
        for r in results:
            table.add_row(str(r.trial), "[green]OK[/]" if r.ok else "[red]" + "\n".join(r.differences[:10]) + "[/]")
        out.print(table)
    if failed:
        raise typer.Exit(1)


@model_app.command("train")
@_handle_errors
def model_train(
    output: Annotated[Path, typer.Option("--out", help="Where to write the model JSON.")],
    data: Annotated[str, typer.Option(help="Candle file.")] = "data/BTCUSD_1h_bitfinex.csv.gz",
    start: Annotated[str | None, typer.Option(help="Training window start (inclusive).")] = None,
    end: Annotated[str | None, typer.Option(help="Training window end (inclusive); labels never look past it.")] = None,
    horizon: Annotated[int, typer.Option(help="Label: sign of the return over this many bars.")] = 4,
) -> None:
    """Fit the logistic signal model on a training window only and write its JSON."""
    from genesis_core.data import load_candles
    from genesis_core.strategy.model import save_model, train_model

    window = load_candles(data).window(start, end, 0)
    model = train_model(window.candles, horizon=horizon)
    save_model(model, output)
    out.print(f"trained on {model.training['first_bar']} .. {model.training['last_bar']}: {model.training}")
    out.print(f"model written to {output}")


@data_app.command("check")
@_handle_errors
def data_check(
    path: Annotated[str, typer.Argument(help="Candle file (CSV, CSV.gz or Parquet).")],
    timeframe: Annotated[str | None, typer.Option(help="Expected timeframe, e.g. 1h (default: inferred).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Validate a candle file and summarise it (exit 2 naming the first bad row)."""
    from genesis_core.data import format_ts, load_candles

    c = load_candles(path, timeframe)
    g = c.gaps()
    summary = {
        "path": path, "bars": len(c), "timeframe": c.timeframe, "first_bar": format_ts(c.timestamps[0]),
        "last_bar": format_ts(c.timestamps[-1]), "gaps": g.count, "missing_bars": g.missing_bars,
        "largest_gap_after": g.largest_at, "fingerprint": c.fingerprint,
    }
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    table = Table(show_header=False, title="Candles OK")
    for k, v in summary.items():
        table.add_row(k, _fmt(v))
    out.print(table)
    if g.count:
        err.print(f"[yellow]warning:[/] {g.describe(c.timeframe_seconds)}")


@app.callback(invoke_without_command=True)
def _main(version: Annotated[bool, typer.Option("--version", help="Show the version and exit.")] = False) -> None:
    if version:
        out.print(f"genesis-core {__version__}")
        raise typer.Exit()
