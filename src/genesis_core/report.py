"""Self-contained HTML pages a person would rather look at than read: a run, a walk-forward, a backtest.

Plotly draws them, its JavaScript embedded once, so a page works offline. Every figure comes from
the files it reports on, and the curves from re-running stored effective configs (a re-run
reproduces a trial exactly, so a run need not store series). A run's page (``genesis report
RUN``): the optimisation history per phase with the best so far, parameter importances (Optuna's
PED-ANOVA over the study), parallel coordinates of the searched parameters, the validation
table with the overfitting statistics, equity and drawdown of the top candidates and the champion
on the explore window and each validation window, and the trades of the best candidate. A
walk-forward's page (``genesis report STUDY-walk-forward``): the folds on one time axis with each
fold's explore and validation score, and the out-of-sample equity of trading each fold's top
candidate on the block after its explore block, chained. A backtest's page (``genesis backtest --report``): price with entries and exits, equity, drawdown,
the decision trace and the trades.
"""

from __future__ import annotations

import html
import math
import random
import warnings
from typing import Any

import numpy as np
import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from genesis_core import __version__
from genesis_core.backtest import BacktestConfig, Backtester, BacktestResult, build_config, data_symbol
from genesis_core.metrics import SHARES
from genesis_core.optimizer import SearchSpace, fold_cautions, run_cautions
from genesis_core.records import (
    SWEPT,
    TABLE_COLUMNS,
    BacktestRecord,
    ChampionStore,
    RunFolder,
    SchemaError,
    TradeRecord,
    TrialArtifact,
    TrialRow,
    ValidationReport,
    WalkForwardReport,
    backtest_record,
    formatted,
    other_bars,
)
from genesis_core.study import load_run
from genesis_core.validation import ValidationConfig

CURVES = 5  # candidates drawn (beside the champion)
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.pass{color:#1a7f37}.fail{color:#c62828}.note{color:#666}
table.grouped td{white-space:nowrap}tr.group td{border-top:2px solid #999}"""


def _table(header: list[str], rows: list[list[Any]], left: int = 1, groups: list[int] | None = None) -> str:
    """An HTML table, its first ``left`` columns aligned left; ``groups``: how many rows each group
    of rows holds (a line above each, its cells kept on one line each), as a terminal's table has
    sections. A cell saying pass, fail, refused or peak is coloured so."""
    cells = "".join(f"<th class='l'>{html.escape(h)}</th>" if i < left else f"<th>{html.escape(h)}</th>" for i, h in enumerate(header))
    firsts = set(np.cumsum([0, *groups[:-1]]).tolist()) if groups else set()
    body = "".join(("<tr class='group'>" if n in firsts else "<tr>") + "".join(
        f"<td{_classes('l' if i < left else '', _tone(v))}>{_cell(v)}</td>" for i, v in enumerate(row)) + "</tr>"
        for n, row in enumerate(rows))
    return f"<table{_classes('grouped' if groups else '')}>{f'<tr>{cells}</tr>' if any(header) else ''}{body}</table>"


def _classes(*names: str) -> str:
    return f" class='{' '.join(n for n in names if n)}'" if any(names) else ""


def _tone(value: Any) -> str:
    if value == "pass":
        return "pass"
    return "fail" if value in ("fail", "refused") or (isinstance(value, str) and value.endswith(" peak")) else ""


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
        margin = {side: getattr(fig.layout.margin, side) or default for side, default in (("l", 50), ("r", 20), ("t", 40), ("b", 40))}
        fig.update_layout(template="plotly_white", margin=margin)
        return str(fig.to_html(full_html=False, include_plotlyjs=self.figures == 1, div_id=f"figure-{self.figures}",
                               config={"displaylogo": False, "responsive": True}))

    def html(self) -> str:
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>{''.join(self.parts)}"
                f"<p class='note'>genesis-core {__version__}</p></body></html>")


_PHASES = {SWEPT: "sweep points (grid, random or Sobol)", 1: "phase 1 (feasibility sampling)", 2: "phase 2 (production sampling)"}


GL_POINTS = 10_000  # a history of more trials is drawn by WebGL: 172,800 as SVG took a browser 8 s to show


def _history(rows: list[TrialRow]) -> go.Figure:
    """Production score per trial, by phase (a sweep's points apart: neither phase sampled them), with the best so far."""
    fig = go.Figure()
    done = [r for r in rows if r.production_score is not None and r.state == "COMPLETE"]
    scatter = go.Scattergl if len(done) > GL_POINTS else go.Scatter
    for phase in sorted({r.phase for r in done if r.phase is not None}):
        mine = [r for r in done if r.phase == phase]
        fig.add_trace(scatter(x=[r.number for r in mine], y=[r.production_score for r in mine], mode="markers",
                              name=_PHASES.get(phase, f"phase {phase}")))
    best = np.maximum.accumulate(np.array([r.production_score for r in done], dtype=np.float64))
    steps = np.unique(np.r_[np.flatnonzero(np.diff(best, prepend=-np.inf)), len(best) - 1 if len(best) else []]).astype(np.int64)
    fig.add_trace(go.Scatter(x=[done[i].number for i in steps], y=best[steps], mode="lines", line_shape="hv", name="best so far"))
    fig.update_layout(title="Optimisation history", xaxis_title="trial", yaxis_title="production score")
    return fig


TOP_SHARE = 0.1  # the importances are of reaching this share of the trials by score (the titles' "top 10%")
IMPORTANCE_TRIALS = 20_000  # of a larger run, drawn at random: Optuna copies each trial it is given (163,000 took 24 s)


def _importances(rows: list[TrialRow], space: SearchSpace) -> go.Figure | str:
    """Importances over the run's trials.csv, not its storage: the page can be made wherever the
    run folder is (a storage path may be relative to where the run was started, or another machine)."""
    done = [r for r in rows if r.state == "COMPLETE" and r.production_score is not None]
    drawn = sorted(random.Random(0).sample(done, IMPORTANCE_TRIALS), key=lambda r: r.number) if len(done) > IMPORTANCE_TRIALS else done
    try:
        study = optuna.create_study(direction="maximize")
        study.add_trials([optuna.trial.create_trial(
            params={p: space.held(p, r.params[p]) for p in space.distributions}, distributions=dict(space.distributions),
            value=r.production_score) for r in drawn])
        # PED-ANOVA: which parameters decide whether a trial lands in the top 10%; pure NumPy, where
        # fANOVA would need scikit-learn (and SciPy) in every install for one figure
        with warnings.catch_warnings(record=True) as caught:  # Optuna's word for scores that tell nothing apart, said below
            warnings.simplefilter("always", UserWarning)
            values = optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(
                target_quantile=TOP_SHARE))
    except (ValueError, RuntimeError, KeyError) as exc:
        return f"<p class='note'>not available: {html.escape(str(exc))}</p>"
    if any("select the same set of trials" in str(w.message) for w in caught):
        return ("<p class='note'>not available: the top 10% of the completed trials by score cannot be told from the rest "
                "(too few trials, or too few distinct scores), so every importance would be equal</p>")
    names = list(values)[::-1]
    fig = go.Figure(go.Bar(x=[values[n] for n in names], y=names, orientation="h"))
    top = math.ceil(TOP_SHARE * len(drawn))  # as PED-ANOVA cuts it: bars drawn from a handful of trials read as findings
    few = f"<br><sup>the top 10% is {top} of {len(drawn)} trials: with so few, the bars are mostly chance</sup>" if top < 10 else ""
    few += f"<br><sup>of {len(drawn):,} of the {len(done):,} completed trials, drawn at random</sup>" if drawn is not done else ""
    fig.update_layout(title="Parameter importances for reaching the top 10% (Optuna, PED-ANOVA)" + few, xaxis_title="importance",
                      height=120 + 28 * len(names))
    return fig


PARALLEL_TRIALS = 5_000  # lines of the parallel coordinates: 172,800 took a browser 31 s to draw, and a blur to read
PARALLEL_BEST = 500  # of them, the best by score: where the good configs lie is what the figure is read for


def _parallel(rows: list[TrialRow]) -> go.Figure | None:
    """The VALID trials' parameters and score, one line each; of more than ``PARALLEL_TRIALS``, the
    ``PARALLEL_BEST`` best and the rest drawn at random (the same each time), as the title says."""
    valid = [r for r in rows if r.production_score is not None and r.outcome == "VALID"]
    done, title = valid, "Searched parameters of the VALID trials, coloured by production score"
    if len(valid) > PARALLEL_TRIALS:
        ranked = sorted(valid, key=lambda r: -(r.production_score or 0.0))
        done = ranked[:PARALLEL_BEST] + random.Random(0).sample(ranked[PARALLEL_BEST:], PARALLEL_TRIALS - PARALLEL_BEST)
        title += (f"<br><sup>{PARALLEL_TRIALS:,} of the {len(valid):,}: the {PARALLEL_BEST:,} best and "
                  f"{PARALLEL_TRIALS - PARALLEL_BEST:,} drawn at random</sup>")
    paths = sorted({p for r in done for p in r.params})
    if not done or not paths:
        return None
    dims = []
    short = _short(paths)
    for p in paths:
        values = [r.params.get(p) for r in done]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            dims.append({"label": short[p], "values": values})
        else:
            labels = sorted({str(v) for v in values})
            dims.append({"label": short[p], "values": [labels.index(str(v)) for v in values], "tickvals": list(range(len(labels))),
                         "ticktext": [label[:20] for label in labels]})
    scores = [r.production_score for r in done]
    dims.append({"label": "production score", "values": scores})
    fig = go.Figure(go.Parcoords(line={"color": scores, "colorscale": "Viridis", "showscale": True}, dimensions=dims,
                                 labelangle=-20, labelside="bottom"))
    # the first axis's label, slanted under it, reaches left by about its length: the default 80 px cut it short
    fig.update_layout(title=title, height=560, margin={"b": 110, "l": max(80, 7 * len(dims[0]["label"]))})
    return fig


def _short(paths: list[str]) -> dict[str, str]:
    """Each parameter path short enough for an axis label: its last two parts, and more until the
    first is a name, not a list's index, and no two labels are alike (``risk.risk_map.0.1`` was
    labelled ``0.1``, beside its axis's tick ``0.1``)."""
    parts = {p: p.split(".") for p in paths}
    taken = {p: 2 for p in paths}
    for p, names in parts.items():
        while taken[p] < len(names) and names[-taken[p]].isdigit():  # the label starts with a name
            taken[p] += 1
    while True:
        labels = {p: ".".join(parts[p][-taken[p]:]) for p in paths}
        alike = [p for p in paths if list(labels.values()).count(labels[p]) > 1 and taken[p] < len(parts[p])]
        if not alike:
            return labels
        for p in alike:
            taken[p] += 1


def _equity(result: BacktestResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``result.curve()`` with times in epoch ms (a date axis, compactly)."""
    seconds, equity, drawdown = result.curve()
    return seconds * 1000, equity, drawdown


def _curves(results: list[tuple[str, BacktestResult]], title: str, price: BacktestResult | None = None) -> go.Figure:
    """Equity and drawdown of each result on one time axis, with buying and holding their window
    beside the equity; with ``price``, its close with entries and exits marked above them."""
    rows = 2 if price is None else 3
    heights = [0.7, 0.3] if price is None else [0.45, 0.35, 0.2]
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, row_heights=heights, vertical_spacing=0.04)
    if price is not None:
        _price(fig, price)
    for i, (label, result) in enumerate(results):
        times, equity, drawdown = _equity(result)
        line = {"color": COLOURS[i % len(COLOURS)], "width": 1.5}  # one colour per result in both panels
        fig.add_trace(go.Scatter(x=times, y=equity, name=label, legendgroup=label, mode="lines", line=line), row=rows - 1, col=1)
        fig.add_trace(go.Scatter(x=times, y=drawdown, name=label, legendgroup=label, showlegend=False, mode="lines", line=line),
                      row=rows, col=1)
    market = price or results[0][1]  # the market's own course on the window the results share, the equity's yardstick
    fig.add_trace(_held_trace(market.window.decisions.timestamps * 1000, market.config.costs.initial_equity * market.window.held),
                  row=rows - 1, col=1)
    fig.update_xaxes(type="date")
    fig.update_yaxes(title_text="equity", row=rows - 1, col=1)
    fig.update_yaxes(title_text="drawdown", tickformat=".2~%", row=rows, col=1)  # a drawdown under 3% has ticks 0.5% apart
    fig.update_layout(title=title, height=520 if price is None else 760)
    return fig


def _held_trace(times: np.ndarray, held: np.ndarray) -> go.Scatter:
    """Buying and holding, dotted beside the equity it is the yardstick of."""
    return go.Scatter(x=times, y=held, name="buy and hold", mode="lines", line={"color": "#888", "width": 1, "dash": "dot"})


def _price(fig: go.Figure, result: BacktestResult) -> None:
    """The close of the window's decision bars, long and short entries and the exits."""
    w = result.window
    ts = w.candles.timestamps * 1000
    fig.add_trace(go.Scatter(x=ts[w.start_index:], y=w.candles.close[w.start_index:], name="close", mode="lines",
                             line={"color": "#888", "width": 1}), row=1, col=1)
    trades = result.engine.trades
    for name, mask, symbol, colour in (("long entry", trades["side"] > 0, "triangle-up", "#1a7f37"),
                                       ("short entry", trades["side"] < 0, "triangle-down", "#c62828")):
        bars = trades["entry_bar"][mask].astype(np.int64)
        fig.add_trace(go.Scatter(x=ts[bars], y=trades["entry_price"][mask], name=name, mode="markers",
                                 marker={"symbol": symbol, "size": 9, "color": colour}), row=1, col=1)
    fig.add_trace(go.Scatter(x=ts[trades["exit_bar"].astype(np.int64)], y=trades["exit_price"], name="exit", mode="markers",
                             marker={"symbol": "x", "size": 7, "color": "#333"}), row=1, col=1)
    fig.update_yaxes(title_text="price", row=1, col=1)


def _notes(lines: list[str]) -> str:
    """Plain-text cautions as the page's notes, one paragraph each."""
    return "".join(f"<p class='note'>{html.escape(line)}</p>" for line in lines)


def _windowed(config: BacktestConfig, start: str, end: str) -> BacktestConfig:
    """``config`` on ``start`` .. ``end`` (only the window changes)."""
    return build_config(config.model_dump(mode="json"), overrides={"data": {"start": start, "end": end}})


def _on_window(bt: Backtester, config: BacktestConfig, start: str, end: str) -> BacktestResult:
    """``config`` re-run on ``start`` .. ``end``."""
    return bt.run(_windowed(config, start, end))


def _other_bars(bt: Backtester, shown: list[TrialArtifact], report: ValidationReport | None) -> list[str]:
    """What the curves of the trials drawn, re-runs, should be read with: a window, explore or
    validation, whose bars are not those the trial ran or was validated on (a file changed since)."""
    validated = {c.trial: c.windows for c in report.candidates} if report is not None else {}
    changed: dict[str, tuple[list[int], str]] = {}  # where -> the trials, and why
    for t in shown:
        windows = [("", t.fingerprints["data_window"], t.effective_config)]
        windows += [(f", on validation window {w.start}..{w.end}", w.data_window, _windowed(t.effective_config, w.start, w.end))
                    for w in validated.get(t.trial_number, [])]
        for where, ran_on, config in windows:
            other = other_bars(config.data.path, ran_on, bt.plan(config).window.fingerprint)
            if other is not None:
                changed.setdefault(where, ([], other))[0].append(t.trial_number)
    return [f"trial {numbers[0]}{where}: {why}: its curves there are of the bars now, not of those it scored on" if len(numbers) == 1
            else f"trials {', '.join(map(str, numbers))}{where}, each: {why}: their curves there are of the bars now, not of those "
                 "they scored on" for where, (numbers, why) in changed.items()]


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
        ["trials", f"{c.total_trials:,}"], ["states", ", ".join(f"{n:,} {s}" for s, n in run.states.items())],
        ["outcomes", ", ".join(f"{n:,} {o}" for o, n in run.outcomes.items())],
        ["duplicates answered from the cache", f"{c.cache_hits:,} ({c.hit_rate:.1%})"], ["backtests run", f"{c.unique_backtests:,}"],
        ["best trial", None if run.best_trial is None else f"#{run.best_trial.number}, production score "
                                                           f"{run.best_trial.production_score:.4f}"],
        ["signature", ", ".join(f"{k} {v[:12]}" for k, v in (run.signature or {}).items())],
    ]))
    report = folder.read_validation() if folder.is_validated() else None
    if report is None:
        best = folder.read_trial(run.best_trial.number) if run.best_trial and folder.has_trial(run.best_trial.number) else None
        shown = [best] if best else []
    else:
        shown = [folder.read_trial(cand.trial) for cand in report.candidates[:CURVES]]
    cautions = run_cautions(folder, run, [vars(r) for r in rows]) + _other_bars(bt, shown, report)  # the rows read above
    if cautions:
        page.add("Read with care", _notes(cautions))
    page.add("Optimisation history", page.figure(_history(rows)))
    importances = _importances(rows, SearchSpace(cfg))
    page.add("Parameter importances", importances if isinstance(importances, str) else page.figure(importances))
    parallel = _parallel(rows)
    if parallel is not None:
        page.add("Searched parameters", page.figure(parallel))
    if report is None:
        page.add("Validation", "<p class='note'>not validated: <code>genesis validate</code> adds the out-of-sample "
                               "table and curves</p>")
    else:
        stale = folder.stale(report, rows)
        page.add("Validation", _validation(report) if stale is None else (
            f"<p class='note'>{html.escape(stale)}: <code>genesis validate</code> again for this run's candidates</p>"
            + _validation(report)))
    champion = ChampionStore(folder.results_dir, cfg.meta.symbol, cfg.meta.timeframe).load()  # the folder it sits in
    configs: list[tuple[str, BacktestConfig]] = [(f"trial {t.trial_number}", t.effective_config) for t in shown]
    if champion is not None:
        configs.append((f"champion {champion.config_fingerprint[:8]}", champion.effective_config))
    validated = cfg.validation if report is None else ValidationConfig.model_validate(report.validation)  # a --config's windows
    windows = [("explore window", cfg.meta.sample_start, cfg.meta.sample_end)]
    windows += [(f"validation window {w.start} .. {w.end}", w.start, w.end) for w in validated.windows]
    for label, start, end in windows if configs else []:
        results = [(name, _on_window(bt, config, start, end)) for name, config in configs]
        page.add(f"Equity and drawdown: {label}", page.figure(_curves(results, label)))
    if shown:
        page.add(f"Trades of trial {shown[0].trial_number} on the explore window", _trades(bt, shown[0]))
    return page.html()


def walk_forward_report(folder: RunFolder, backtester: Backtester | None = None) -> str:
    """The HTML report of a walk-forward (``folder`` holds its walk_forward.json)."""
    wf = folder.read_walk_forward()
    bt = backtester or Backtester()
    page = _Page(f"Walk-forward of {wf.study}")
    a = wf.aggregate
    page.add("Summary", _table(["", ""], [
        ["study", wf.study], ["folds", f"{len(wf.folds)} of {wf.walk_forward['folds']}" + ("" if wf.complete else " (interrupted)")],
        ["span", f"{wf.blocks[0][0]} .. {wf.blocks[-1][1]}"], ["folds with a candidate passing", a.folds_with_a_pass],
        ["fold tops (each fold's explore best) that passed on their blocks", a.tops_passed],
        ["mean validation score of the fold tops (each fold's explore best)", a.mean_validation_score],
        ["worst validation score of the fold tops", a.worst_validation_score],
        ["mean gap (explore - validation)", a.mean_gap],
        ["the fold tops traded each on its block in turn (compounded return)", formatted(a.chained_return, "+.2%")],
        ["buying and holding those blocks (compounded return)", formatted(a.chained_buy_and_hold, "+.2%")],
    ]))
    if wf.biased():
        page.add("Not out of sample", _notes([wf.biased() or ""]))
    cautions = fold_cautions(folder, wf)
    if cautions:
        page.add("Read with care", _notes(cautions))
    page.add("Folds", page.figure(_folds(wf)))
    rows = [[f.fold, " .. ".join(f.explore), " .. ".join(f.validation), *(["-"] * 5 if f.top is None else
             [f.top.trial, f.top.explore_score, f.top.validation_score, f.top.gap, formatted(f.top.validation_return, "+.2%")]),
             formatted(f.buy_and_hold, "+.2%"),
             len(f.passed), None if f.deflated_sharpe is None else f.deflated_sharpe.gated] for f in wf.folds]
    page.add("Fold tops", _table(["fold", "explore", "validation", "top trial", "explore score", "validation score", "gap",
                                  "validation return", "buy and hold", "passed", "DSR"], rows, left=3)
             + "".join(f"<p>fold {f.fold}: {html.escape(f.no_top)}</p>" for f in wf.folds if f.no_top))
    tops, lost = [], []  # each fold's top: its label, its validation block and its config, from the fold's run
    for f in wf.folds:
        if f.top is not None:
            try:
                tops.append((f"fold {f.fold}: trial {f.top.trial}", f.validation,
                             folder.fold(f.run_dir).read_trial(f.top.trial).effective_config))
            except SchemaError as exc:  # a fold's run moved or deleted: the rest of the page is walk_forward.json's
                lost.append(f"fold {f.fold}: {exc}")
    if lost:
        page.add("Out-of-sample equity", _notes(["not drawn: the chain re-runs each fold's top, and these cannot be read "
                                                 "(restore their run folders)", *lost]))
    elif tops:
        page.add("Out-of-sample equity", page.figure(_chained([(label, _on_window(bt, config, *block))
                                                               for label, block, config in tops])))
    return page.html()


def _folds(wf: WalkForwardReport) -> go.Figure:
    """Each fold's explore and validation blocks (top) and its top candidate's score on each, at the
    block's middle (bottom), on one time axis."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.4, 0.6], vertical_spacing=0.06)
    day = 86_400_000
    for kind, colour in (("explore", COLOURS[0]), ("validation", COLOURS[1])):
        for f in wf.folds:
            start, end = (_ms(t) for t in getattr(f, kind))
            fig.add_trace(go.Scatter(x=[start, end + day], y=[f"fold {f.fold}"] * 2, mode="lines", name=kind, legendgroup=kind,
                                     showlegend=f.fold == wf.folds[0].fold, line={"color": colour, "width": 14}), row=1, col=1)
        tops = [f for f in wf.folds if f.top is not None]
        middles = [(_ms(getattr(f, kind)[0]) + _ms(getattr(f, kind)[1]) + day) // 2 for f in tops]
        scores = [(f.top.explore_score if kind == "explore" else f.top.validation_score) for f in tops if f.top is not None]
        fig.add_trace(go.Scatter(x=middles, y=scores, mode="markers+text", name=f"{kind} score", legendgroup=kind, showlegend=False,
                                 text=[f"fold {f.fold}" for f in tops],
                                 textposition="top center" if kind == "explore" else "bottom center",
                                 marker={"color": colour, "size": 11}), row=2, col=1)
    fig.update_xaxes(type="date")
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_yaxes(title_text="production score of the fold's top", row=2, col=1)
    fig.update_layout(title="Folds: explore block, then validation on the next", height=560)
    return fig


def _ms(day: str) -> int:
    return int(np.datetime64(day, "ms").astype(np.int64))


def _chained(results: list[tuple[str, BacktestResult]]) -> go.Figure:
    """Each fold's validation-window equity, each segment starting where the previous one ended, and
    buying and holding those blocks, chained alike."""
    fig = go.Figure()
    level = market = 1.0
    stamps, held = [], []  # holding each block from where holding the one before it ended
    for i, (label, result) in enumerate(results):
        times, equity, _ = _equity(result)
        initial = result.engine.equity[0]
        fig.add_trace(go.Scatter(x=times, y=level * equity / initial, name=label, mode="lines",
                                 line={"color": COLOURS[i % len(COLOURS)]}))
        level *= equity[-1] / initial
        stamps.append(times)
        held.append(market * result.window.held)
        market = float(held[-1][-1])
    if results:
        fig.add_trace(_held_trace(np.concatenate(stamps), np.concatenate(held)))
    fig.update_xaxes(type="date")
    fig.update_layout(title="Trading each fold's top on its validation block, chained (1 = start)", yaxis_title="growth of 1",
                      height=420)
    return fig


def _validation(report: ValidationReport) -> str:
    """The validation table as `genesis validate` prints it, and what it prints under it."""
    groups = report.table()
    table = _table([c.replace("\n", " ") for c in TABLE_COLUMNS], [row for group in groups for row in group], left=2,
                   groups=[len(group) for group in groups])
    o = report.overfitting
    lines = []
    if o.deflated_sharpe and o.deflated_sharpe.dsr is not None:
        d = o.deflated_sharpe
        lines.append(f"deflated Sharpe ratio of trial {d.trial}: {d.dsr:.3f} given {d.counted()}"
                     + (f"; {d.dsr_effective:.3f} given the {d.effective_trials:,.1f} independent trials they amount to"
                        if d.dsr_effective is not None and d.effective_trials is not None else ""))
    if o.pbo:
        lines.append(f"probability of backtest overfitting: {o.pbo.pbo:.3f} ({o.pbo.configs} configs, {o.pbo.splits:,} splits)")
    lines = [line for line in (report.short(), report.reused()) if line] + lines
    failed = report.why_failed()
    failed_list = "<p>why they failed:</p><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in failed) + "</ul>" if failed else ""
    passed = ", ".join(f"#{n}" for n in report.passed) or "none"
    return (table + "".join(f"<p>{html.escape(line)}</p>" for line in lines) + failed_list
            + "".join(f"<p>{html.escape(line)}</p>" for line in report.plateau_notes()) + f"<p>passed: {passed}</p>")


def _trades(bt: Backtester, trial: TrialArtifact) -> str:
    return _trades_table(backtest_record(bt.run(trial.effective_config)).trades or [])


def _trades_table(trades: list[TradeRecord]) -> str:
    rows = [[t.entry_time, t.exit_time, t.side, t.entry_price, t.exit_price, t.pnl, t.bars_held, t.exit_reason] for t in trades]
    return _table(["entry", "exit", "side", "entry price", "exit price", "pnl", "bars", "reason"], rows, left=3)


def backtest_report(result: BacktestResult, record: BacktestRecord, cautions: list[str]) -> str:
    """The HTML page of one backtest (``record`` is ``result``'s, with its score); ``cautions``, what
    its numbers should be read with, above them, as the CLI prints them."""
    cfg, w = result.config, record.window
    page = _Page(f"Backtest of {cfg.strategy} on {data_symbol(cfg, result.window.candles) or result.window.candles.source}")
    sc = record.score
    page.add("Summary", _table(["", ""], [
        ["strategy", cfg.strategy], ["data", cfg.data.path], ["window", f"{w.first_bar} .. {w.last_bar}"],
        ["bars", f"{w.bars:,} ({w.warmup_bars:,} warm-up before)"], ["timeframe", w.timeframe],
        ["costs", cfg.costs.describe()],
        ["buy and hold", f"{result.window.held_return:+.2%} (bought at the first bar's open)"],
        ["outcome", None if sc is None else sc.outcome.value], ["production score", None if sc is None else sc.production],
        ["config fingerprint", result.config_fingerprint], ["data window fingerprint", result.window.fingerprint],
    ]))
    if cautions:
        page.add("Read with care", _notes(cautions))
    page.add("Metrics", _table(["metric", "value"], [[k, formatted(v, SHARES[k]) if k in SHARES else v] for k, v in record.metrics.items()]))
    page.add("Price, equity and drawdown", page.figure(_curves([("equity", result)], "Price, trades and equity", price=result)))
    page.add("Decision trace", page.figure(_trace(result.trace)))
    page.add(f"Trades ({len(record.trades or [])})", _trades_table(record.trades or []))
    return page.html()


def _trace(trace: dict[str, Any]) -> go.Figure:
    """The path from signal to trade (left) and why candidates were blocked (right)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("signals to trades", "candidates blocked, by reason"))
    funnel = ["signals", "candidates", "orders", "fills", "trades_opened", "trades_closed"]
    fig.add_trace(go.Bar(x=[trace[k] for k in funnel][::-1], y=funnel[::-1], orientation="h", showlegend=False,
                         text=[trace[k] for k in funnel][::-1]), row=1, col=1)
    blocked = sorted(trace["blocked"].items(), key=lambda kv: kv[1])
    fig.add_trace(go.Bar(x=[n for _, n in blocked], y=[k for k, _ in blocked], orientation="h", showlegend=False,
                         text=[n for _, n in blocked], marker={"color": "#c62828"}), row=1, col=2)
    fig.update_layout(title="Decision trace", height=140 + 26 * max(len(funnel), len(blocked)))
    return fig
