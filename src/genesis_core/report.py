"""``genesis report RUN``: one self-contained HTML page a person would rather look at than read.

Plotly draws it, its JavaScript embedded once, so the page works offline. Every figure comes from
the run's own files, and the curves from re-running stored effective configs (a re-run
reproduces a trial exactly, so the run need not store series): the optimisation history per
phase with the best so far, parameter importances (Optuna's own evaluator over the study),
parallel coordinates of the searched parameters, the validation table with the overfitting
statistics, equity and drawdown of the top candidates and the champion on the explore window and
each validation window, and the trades of the best candidate.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from genesis_core import __version__
from genesis_core.backtest import BacktestConfig, Backtester, BacktestResult, build_config
from genesis_core.errors import GenesisError
from genesis_core.optimizer import open_storage
from genesis_core.records import ChampionStore, RunFolder, TrialArtifact, TrialRow, ValidationReport, backtest_record
from genesis_core.study import load_run

CURVES = 5  # candidates drawn (beside the champion)
_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.pass{color:#1a7f37}.fail{color:#c62828}.note{color:#666}"""


def _table(header: list[str], rows: list[list[Any]], left: int = 1) -> str:
    cells = "".join(f"<th class='l'>{html.escape(h)}</th>" if i < left else f"<th>{html.escape(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td class='l'>{_cell(v)}</td>" if i < left else f"<td>{_cell(v)}</td>"
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return html.escape(str(value))


class _Page:
    """Sections of HTML; figures carry Plotly's JavaScript once, in the first."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []
        self.figures = 0

    def add(self, heading: str, body: str) -> None:
        self.parts.append(f"<h2>{html.escape(heading)}</h2>{body}")

    def figure(self, fig: go.Figure) -> str:
        self.figures += 1
        fig.update_layout(template="plotly_white", margin={"l": 50, "r": 20, "t": 40, "b": 40})
        return str(fig.to_html(full_html=False, include_plotlyjs=self.figures == 1, div_id=f"figure-{self.figures}",
                               config={"displaylogo": False, "responsive": True}))

    def html(self) -> str:
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>{''.join(self.parts)}"
                f"<p class='note'>genesis-core {__version__}</p></body></html>")


def _history(rows: list[TrialRow]) -> go.Figure:
    """Production score per trial, by phase, with the best so far."""
    fig = go.Figure()
    done = [r for r in rows if r.production_score is not None and r.state == "COMPLETE"]
    for phase in sorted({r.phase for r in done if r.phase is not None}):
        mine = [r for r in done if r.phase == phase]
        fig.add_trace(go.Scatter(x=[r.number for r in mine], y=[r.production_score for r in mine], mode="markers",
                                 name=f"phase {phase} ({'feasibility' if phase == 1 else 'production'} sampling)"))
    scores = np.array([r.production_score for r in done], dtype=np.float64)
    fig.add_trace(go.Scatter(x=[r.number for r in done], y=np.maximum.accumulate(scores) if len(scores) else [], mode="lines",
                             name="best so far"))
    fig.update_layout(title="Optimisation history", xaxis_title="trial", yaxis_title="production score")
    return fig


def _importances(study_name: str, storage: str) -> go.Figure | str:
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
        values = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (GenesisError, ValueError, RuntimeError, KeyError) as exc:
        return f"<p class='note'>not available: {html.escape(str(exc))}</p>"
    names = list(values)[::-1]
    fig = go.Figure(go.Bar(x=[values[n] for n in names], y=names, orientation="h"))
    fig.update_layout(title="Parameter importances (Optuna, fANOVA)", xaxis_title="importance", height=120 + 28 * len(names))
    return fig


def _parallel(rows: list[TrialRow]) -> go.Figure | None:
    done = [r for r in rows if r.production_score is not None and r.outcome == "VALID"]
    paths = sorted({p for r in done for p in r.params})
    if not done or not paths:
        return None
    dims = []
    for p in paths:
        values = [r.params.get(p) for r in done]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            dims.append({"label": _short(p), "values": values})
        else:
            labels = sorted({str(v) for v in values})
            dims.append({"label": _short(p), "values": [labels.index(str(v)) for v in values], "tickvals": list(range(len(labels))),
                         "ticktext": [label[:20] for label in labels]})
    scores = [r.production_score for r in done]
    dims.append({"label": "production score", "values": scores})
    fig = go.Figure(go.Parcoords(line={"color": scores, "colorscale": "Viridis", "showscale": True}, dimensions=dims))
    fig.update_layout(title="Searched parameters of the VALID trials, coloured by production score")
    return fig


def _short(path: str) -> str:
    """A parameter path short enough for an axis label: its last two parts."""
    return ".".join(path.split(".")[-2:])


def _curves(results: list[tuple[str, BacktestResult]], title: str) -> go.Figure:
    """Equity (top) and drawdown (bottom) of each result, on one time axis."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04)
    for label, result in results:
        equity = result.engine.equity[1:]  # equity[i + 1]: at the close of decision bar i
        times = result.window.candles.timestamps[result.window.start_index:] * 1000  # epoch ms: a date axis, compactly
        drawdown = equity / np.maximum.accumulate(equity) - 1.0
        fig.add_trace(go.Scatter(x=times, y=equity, name=label, legendgroup=label, mode="lines"), row=1, col=1)
        fig.add_trace(go.Scatter(x=times, y=drawdown, name=label, legendgroup=label, showlegend=False, mode="lines"), row=2, col=1)
    fig.update_xaxes(type="date")
    fig.update_yaxes(title_text="equity", row=1, col=1)
    fig.update_yaxes(title_text="drawdown", tickformat=".0%", row=2, col=1)
    fig.update_layout(title=title, height=520)
    return fig


def _on_window(bt: Backtester, config: BacktestConfig, start: str, end: str) -> BacktestResult:
    """``config`` re-run on ``start`` .. ``end`` (only the window changes)."""
    return bt.run(build_config(config.model_dump(mode="json"), overrides={"data": {"start": start, "end": end}}))


def run_report(folder: RunFolder, backtester: Backtester | None = None) -> str:
    """The HTML report of a finished run (validated or not)."""
    run, cfg = load_run(folder)
    bt = backtester or Backtester()
    rows = folder.read_trials_table()
    page = _Page(f"Run {run.study_name}")
    c = run.cache
    last = run.sessions[-1] if run.sessions else None
    page.add("Summary", _table(["", ""], [
        ["study", run.study_name], ["storage", run.storage], ["explore window", f"{cfg.meta.sample_start} .. {cfg.meta.sample_end}"],
        ["data", run.fixed_config.data.path], ["strategy", run.fixed_config.strategy],
        ["sessions", len(run.sessions)], ["last session", last.finished if last else None],
        ["trials", c.total_trials], ["states", ", ".join(f"{n} {s}" for s, n in run.states.items())],
        ["outcomes", ", ".join(f"{n} {o}" for o, n in run.outcomes.items())],
        ["duplicates answered from the cache", f"{c.cache_hits} ({c.hit_rate:.1%})"], ["backtests run", c.unique_backtests],
        ["best trial", None if run.best_trial is None else f"#{run.best_trial.number}, production score "
                                                           f"{run.best_trial.production_score:.4f}"],
        ["signature", ", ".join(f"{k} {v[:12]}" for k, v in (run.signature or {}).items())],
    ]))
    page.add("Optimisation history", page.figure(_history(rows)))
    importances = _importances(run.study_name, run.storage)
    page.add("Parameter importances", importances if isinstance(importances, str) else page.figure(importances))
    parallel = _parallel(rows)
    if parallel is not None:
        page.add("Searched parameters", page.figure(parallel))
    report = folder.read_validation() if folder.is_validated() else None
    if report is None:
        page.add("Validation", "<p class='note'>not validated: <code>genesis validate</code> adds the out-of-sample "
                               "table and curves</p>")
        best = folder.read_trial(run.best_trial.number) if run.best_trial and folder.has_trial(run.best_trial.number) else None
        shown = [best] if best else []
    else:
        page.add("Validation", _validation(report))
        shown = [folder.read_trial(cand.trial) for cand in report.candidates[:CURVES]]
    champion = ChampionStore(folder.results_dir, cfg.meta.symbol, cfg.meta.timeframe).load()  # the folder it sits in
    configs: list[tuple[str, BacktestConfig]] = [(f"trial {t.trial_number}", t.effective_config) for t in shown]
    if champion is not None:
        configs.append((f"champion {champion.config_fingerprint[:8]}", champion.effective_config))
    windows = [("explore window", cfg.meta.sample_start, cfg.meta.sample_end)]
    windows += [(f"validation window {w.start} .. {w.end}", w.start, w.end) for w in cfg.validation.windows]
    for label, start, end in windows if configs else []:
        results = [(name, _on_window(bt, config, start, end)) for name, config in configs]
        page.add(f"Equity and drawdown: {label}", page.figure(_curves(results, label)))
    if shown:
        page.add(f"Trades of trial {shown[0].trial_number} on the explore window", _trades(bt, shown[0]))
    return page.html()


def _validation(report: ValidationReport) -> str:
    rows = []
    for cand in report.candidates:
        rows.append([cand.rank, cand.trial, "explore", cand.explore.production_score, cand.explore.metrics["total_return"],
                     cand.explore.metrics["max_drawdown"], cand.explore.metrics["num_trades"], cand.validation_score,
                     "pass" if cand.passed else "fail"])
        rows += [["", "", f"{w.start} .. {w.end}", w.production_score, w.metrics["total_return"], w.metrics["max_drawdown"],
                  w.metrics["num_trades"], "", "; ".join(w.reasons)] for w in cand.windows]
    table = _table(["rank", "trial", "window", "production score", "return", "max drawdown", "trades", "validation score", "result"],
                   rows, left=0)
    o = report.overfitting
    lines = []
    if o.deflated_sharpe and o.deflated_sharpe.dsr is not None:
        d = o.deflated_sharpe
        lines.append(f"deflated Sharpe ratio of trial {d.trial}: {d.dsr:.3f} given {d.n_trials} configs"
                     + (f"; {d.dsr_effective:.3f} given the {d.effective_trials:.1f} independent trials they amount to"
                        if d.dsr_effective is not None and d.effective_trials is not None else ""))
    if o.pbo:
        lines.append(f"probability of backtest overfitting: {o.pbo.pbo:.3f} ({o.pbo.configs} configs, {o.pbo.splits:,} splits)")
    passed = ", ".join(f"#{n}" for n in report.passed) or "none"
    return table + "".join(f"<p>{html.escape(line)}</p>" for line in lines) + f"<p>passed: {passed}</p>"


def _trades(bt: Backtester, trial: TrialArtifact) -> str:
    trades = backtest_record(bt.run(trial.effective_config)).trades or []
    rows = [[t.entry_time, t.exit_time, t.side, t.entry_price, t.exit_price, t.pnl, t.bars_held, t.exit_reason] for t in trades]
    return _table(["entry", "exit", "side", "entry price", "exit price", "pnl", "bars", "reason"], rows, left=3)
