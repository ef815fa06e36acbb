"""Preflight: refuse a bad optimizer run or sweep before it starts.

Each check reports pass, warn or fail; any fail means the run should not start (``genesis
optimize`` and ``genesis sweep`` run these first unless ``--skip-preflight``, which they record). Nothing here writes
a file: storage is proven writable without creating one (a database server by a throwaway study).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from optuna.distributions import CategoricalDistribution
from optuna.storages import BaseStorage

from genesis_core.backtest import (
    LOOKAHEAD_CUTS,
    WARMUP_FACTOR,
    Backtester,
    BacktestResult,
    DataSpec,
    build_config,
    data_symbol,
    dead_inputs,
    free_borrow,
    free_trading,
    get_path,
    lookahead,
    thin_fill,
    trained_on,
    training_problems,
    warmup_dependence,
)
from genesis_core.data import DAY, Candles, format_ts, parse_timeframe, parse_ts, same_symbol
from genesis_core.errors import DataError, GenesisError
from genesis_core.fingerprint import differences, fingerprint
from genesis_core.optimizer import (
    FEASIBILITY_SUFFIX,
    SearchSpace,
    StudySpec,
    SweepOptions,
    check_clock,
    default_storage_url,
    folder_taken,
    measure,
    probe_storage,
    redact,
    stored_signature_diff,
    sweep_processes,
    sweep_size,
)
from genesis_core.records import ChampionRecord, CheckRecord, PreflightRecord, finite_metrics, names, not_finite_metrics
from genesis_core.scoring import score
from genesis_core.study import StudyConfig, load_study_config
from genesis_core.validation import WindowSpec, fold_windows, market_runs, survived, tried_alike

Status = Literal["pass", "warn", "fail"]
SWEEP_POINTS = 5
PREFLIGHT_CRASHES = 5  # backtests that crashed preflight's process, each then refused and the checks run again: it stops at this many
EXTRA_BASE_POINTS = 2


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


def _windows(cfg: StudyConfig) -> list[tuple[str, str, str]]:
    """(label, start, end) of every window the run will backtest."""
    m, v = cfg.meta, cfg.validation
    out = [("explore", m.sample_start, m.sample_end)]
    out += [(f"validation {i + 1}", w.start, w.end) for i, w in enumerate(v.windows)]
    if v.walk_forward is not None:
        out.append(("walk-forward", v.walk_forward.start, v.walk_forward.end))
    return out


def _check_windows(cfg: StudyConfig, study: StudySpec, bt: Backtester, point: dict[str, Any]) -> list[Check]:
    problems, covered, gaps, large, spikes, inputs = [], [], [], False, [], 0
    dead: dict[str, list[str]] = {}  # what an input is fed: the windows that feed it so
    for label, start, end in _windows(cfg):
        config = build_config(study.base, study.champion, {"data": {**study.overrides["data"], "start": start, "end": end}}, point)
        try:
            plan = bt.plan(config)
        except GenesisError as exc:
            problems.append(f"{label} {start}..{end}: {exc}")
            continue
        w = plan.window
        covered.append(f"{label} {w.first_bar[:10]}..{w.last_bar[:10]} (+{w.start_index} warm-up)")
        holes = w.gaps()
        if holes.count:
            gaps.append(f"{label} {start}..{end}: {holes.describe(w.candles.timeframe_seconds)}")
            large |= holes.largest_seconds >= DAY or holes.missing_bars >= 0.01 * w.bars
        far = w.decisions.spikes()
        if far.count:
            spikes.append(f"{label} {start}..{end}: {far.describe()}")
        with contextlib.suppress(GenesisError):  # a trained_on that raises is the model training check's to name
            trained = trained_on(config)
            inputs = sum(len(t.inputs) for t in trained)
            for line in dead_inputs(trained, bt.features(w), w.start_index):
                dead.setdefault(line, []).append(f"{label} {start}..{end}")
    checks = [Check("windows covered", "fail" if problems else "pass", "; ".join(problems or covered))]
    if gaps:  # the bars either side of a hole are traded as neighbours: a long one makes the window other than it says
        checks.append(Check("gaps", "warn" if large else "pass", "; ".join(gaps) + ": the bars either side of each are traded "
                            "as if consecutive" + ("" if large else " (none a day long, none 1% of its window)")))
    if spikes:  # stops, targets and liquidations are filled at such a price
        checks.append(Check("spikes", "warn", "; ".join(spikes) + ": a bar's high and low trigger stops, targets and "
                            "liquidation; check the file (genesis data check)"))
    if inputs:  # a model fed a constant gives what it was never fitted to give
        checks.append(Check("model inputs", "warn" if dead else "pass", "; ".join(f"{', '.join(where)}: {line}" for line, where
                            in dead.items()) or f"each of the {inputs} inputs "
                            "of the strategy's models varies over every window"))
    m = cfg.meta
    overlaps = [f"{w.start}..{w.end}" for w in cfg.validation.windows if w.overlaps(m.sample_start, m.sample_end)]
    if overlaps:
        checks.append(Check("out of sample", "warn", f"validation window(s) {', '.join(overlaps)} overlap the explore "
                            f"window {m.sample_start}..{m.sample_end}: not out of sample, so no candidate passes on them"))
    windows = cfg.validation.windows
    shared = [f"{i + 1} ({a.start}..{a.end}) and {j + 1} ({b.start}..{b.end})" for i, a in enumerate(windows)
              for j, b in enumerate(windows) if i < j and a.overlaps(b.start, b.end)]
    if shared:  # a copied date, or windows drawn to look like more evidence than they hold
        checks.append(Check("validation windows", "warn", f"validation windows {'; '.join(shared)} share days: each such "
                            "day counts twice in a candidate's mean score, and a pass on both is one pass on those days"))
    return checks


def _check_champion(study: StudySpec) -> tuple[Check, dict[str, Any]]:
    """Is the champion inside the space; the base point for the smoke run and the sweeps."""
    midpoint = study.space.midpoint()
    m = study.config.meta
    if m.skip_champion_merge:
        return Check("champion in space", "pass", "champion merge skipped (meta.skip_champion_merge); base point: midpoint"), midpoint
    if study.champion is None:
        return Check("champion in space", "pass", f"no {m.symbol} {m.timeframe} champion yet; base point: midpoint"), midpoint
    point, outside = dict(study.space.fixed), []
    for path in study.space.distributions:
        try:
            value = get_path(study.fixed.params, path)
        except KeyError:
            outside.append(f"{path}: absent")
            continue
        why = study.space.outside(path, value)
        if why:
            outside.append(f"{path}: {why}")
        point[path] = value if why is None else midpoint[path]
    if outside:
        return Check("champion in space", "warn", "the champion lies outside the space, the search cannot return to it: "
                     + "; ".join(outside)), point
    return Check("champion in space", "pass", f"all {len(study.space.distributions)} searched values inside; base point: champion"), point


def _check_inherited(cfg: StudyConfig, study: StudySpec, champion: ChampionRecord | None, point: dict[str, Any]) -> list[Check]:
    """The champion's params this study does not search were chosen on the champion's explore
    window: a validation window, or a walk-forward fold's validation block, on those bars is not out
    of sample for them, and validation cannot tell (it knows only the trial's own explore window)."""
    if champion is None:
        return []
    inherited = [path for path, _, _ in differences(build_config(study.base, study.champion, study.overrides, point).params,
                                                     build_config(study.base, None, study.overrides, point).params)]
    m, v = cfg.meta, cfg.validation
    if not inherited:
        return [Check("champion inherited", "pass", f"the {m.symbol} {m.timeframe} champion's params are all searched "
                      "or the base config's own")]
    first, last = champion.data.explore.first_bar[:10], champion.data.explore.last_bar[:10]
    windows = [(f"validation {w.start}..{w.end}", w) for w in v.windows]
    if v.walk_forward is not None:
        windows += [(f"walk-forward fold {i}'s {a}..{b}", WindowSpec(start=a, end=b))
                    for i, (a, b) in enumerate(fold_windows(v.walk_forward)[1:], 1)]
    hit = [label for label, w in windows if w.overlaps(first, last)]
    params = names(inherited, 4)
    if not hit:
        return [Check("champion inherited", "pass", f"{len(inherited)} param(s) from the {m.symbol} {m.timeframe} champion, "
                      f"not searched ({params}), chosen on {first}..{last}: no validation window on those bars")]
    return [Check("champion inherited", "fail", f"{len(inherited)} param(s) this study does not search come from the "
                  f"{m.symbol} {m.timeframe} champion ({params}), chosen on its explore window {first}..{last}; "
                  f"{', '.join(hit)} overlap(s) it: not out of sample for them; search them too, set "
                  "meta.skip_champion_merge: true, or validate after " + last)]


def _holds_its_bars(candles: Candles, data: DataSpec, window: str) -> bool:
    """Whether ``candles`` hold the very bars (warm-up included) a result was measured on: the same
    data for it, though bars were appended since (`genesis data update`) or the file is another's copy."""
    try:
        return candles.window(data.start, data.end, data.warmup_bars or 0).fingerprint == window
    except DataError:
        return False


def _check_market(cfg: StudyConfig, study: StudySpec, candles: Candles, champion: ChampionRecord | None) -> list[Check]:
    """Model leakage (a window inside a model's training span on its market: always a failure) and
    markets that disagree (meta.symbol or timeframe vs the data, a model of another market, a
    champion measured on other data: failures unless meta.allow_cross_market, then warnings)."""
    m, fixed = cfg.meta, study.fixed
    try:
        symbol = data_symbol(fixed, candles)
    except GenesisError as exc:
        return [Check("market", "fail", str(exc))]
    problems = []
    if symbol is not None and not same_symbol(symbol, m.symbol):
        problems.append(f"meta.symbol {m.symbol} but the data ({candles.source}) holds {symbol}")
    if parse_timeframe(m.timeframe) != candles.timeframe_seconds:
        problems.append(f"meta.timeframe {m.timeframe} but the data's bars are {candles.timeframe}")
    try:
        trained = trained_on(fixed)
    except GenesisError as exc:
        return [Check("model training", "fail", str(exc))]
    # an explore window before a model's training is only where parameters are chosen; a walk-forward's span
    # before it holds its folds' validation blocks too (one that overlaps it fails either way)
    windows = [(label, parse_ts(start), parse_ts(end, end_of_day=True), label != "explore") for label, start, end in _windows(cfg)]
    leaks, others = training_problems(trained, candles, symbol or m.symbol, windows)
    problems += others
    if champion is not None and not _holds_its_bars(candles, champion.effective_config.data, champion.data.explore.data_window):
        problems.append(f"the {m.symbol} {m.timeframe} champion was measured on {champion.data.path} (fingerprint "
                        f"{champion.data.file[:12]}), whose bars in its explore window {champion.data.explore.first_bar[:10]}.."
                        f"{champion.data.explore.last_bar[:10]} this study's data ({candles.source}) does not hold")
    market = symbol or f"{m.symbol} (meta.symbol; the data does not say)"
    if not problems:
        check = Check("market", "pass", f"{market} {candles.timeframe}: data, models and champion agree")
    elif m.allow_cross_market:
        check = Check("market", "warn", "allowed by meta.allow_cross_market: " + "; ".join(problems))
    else:
        check = Check("market", "fail", "; ".join(problems) + " (meta.allow_cross_market: true to go on anyway)")
    return [check, Check("model training", "fail" if leaks else "pass", "; ".join(leaks) or (
        "no window inside " + ", ".join(f"{t.resource}'s {t.first_bar[:10]}..{t.last_bar[:10]}" for t in trained)
        + ", and no validation window before it"
        if trained else "no trained resources"))]


def _run(study: StudySpec, bt: Backtester, point: dict[str, Any]) -> BacktestResult:
    return bt.run(study.build(point))


def _outcome_key(result: BacktestResult) -> str:
    """The outcome as a record holds it: a metric beyond the arithmetic (prices of 1e-307) is None."""
    return fingerprint({"metrics": finite_metrics(result.metrics), "trace": result.trace})


def _bases(study: StudySpec, point: dict[str, Any]) -> list[dict[str, Any]]:
    """The points of the space the parameter checks run at: the base point, then EXTRA_BASE_POINTS seeded random ones."""
    rng = random.Random(0)
    return [point] + [study.space.random_point(rng) for _ in range(EXTRA_BASE_POINTS)]


def _at(i: int, base: dict[str, Any]) -> str:
    """Which of ``_bases`` point ``i`` is, as a check's detail names it."""
    return "at the base point" if i == 0 else f"at a random point of the space ({', '.join(f'{k} {v!r}' for k, v in base.items())})"


def _check_lookahead(study: StudySpec, bt: Backtester, point: dict[str, Any]) -> Check:
    """A strategy that reads bars after the one it decides on makes every backtest a fiction; it
    may do so for some parameter values only (a centred window as an option), so the check runs
    at each of ``_bases``. A point the strategy refuses is the smoke run's or the optimizer's to say."""
    tried = 0
    for i, base in enumerate(_bases(study, point)):
        try:
            found = lookahead(bt, study.build(base))
        except GenesisError:
            continue
        tried += 1
        if found:
            return Check("lookahead", "fail", f"{_at(i, base)}, {found}")
    cuts = " and ".join(f"{share:.0%}" for share in LOOKAHEAD_CUTS)
    return Check("lookahead", "pass", f"at {tried} point(s) of the space each bar is decided as it was with the explore "
                 f"window cut short after {cuts} of its bars")


def _check_warmup(study: StudySpec, bt: Backtester, point: dict[str, Any]) -> Check:
    """Every trial decides its window's first bars on indicators warmed up from a bar the data
    happens to start at; where they still remember it, the trials are measured on values no live
    run sees. Checked at each of ``_bases``, as the warm-up and the indicators depend on the params."""
    tried, longest = 0, 0
    for i, base in enumerate(_bases(study, point)):
        try:
            longer, found = warmup_dependence(bt, study.build(base))
        except GenesisError:
            continue
        if found:
            return Check("warm-up", "warn", f"{_at(i, base)} on the explore window, {found}")
        tried += longer > 0
        longest = max(longest, longer)
    if not tried:
        return Check("warm-up", "warn", "not checked: the data holds no bar before the explore window's warm-up")
    return Check("warm-up", "pass", f"at {tried} point(s) of the space each bar is decided as it was after {WARMUP_FACTOR} "
                 f"times the warm-up (up to {longest:,} bars, as far as the data reaches before the explore window)")


def _check_inert(study: StudySpec, bt: Backtester, point: dict[str, Any]) -> list[Check]:
    """Move each searched parameter across its range with the others fixed, at the base point and
    at EXTRA_BASE_POINTS random points; inert = no change at any of them (a parameter may matter
    only in part of the space, e.g. a risk step that a high entry threshold never reaches). A
    choice refused at every point tried is named with its reason (``gates.htf.timeframe: 90m`` on
    1h bars: every trial that draws it fails), and does not make its parameter look inert."""
    bases = _bases(study, point)
    inert, skipped, never = [], [], []
    for path, d in study.space.distributions.items():
        values = study.space.sweep(path, SWEEP_POINTS)
        changes, runs = False, 0
        ran: set[int] = set()  # indexes of values that ran somewhere
        refused: dict[int, str] = {}  # the first reason each value was refused
        for base in bases:
            outcomes = set()
            for i, value in enumerate(values):
                try:
                    outcomes.add(_outcome_key(_run(study, bt, {**base, path: value})))
                    ran.add(i)
                except GenesisError as exc:
                    refused.setdefault(i, str(exc))  # an invalid combination is the optimizer's FAIL, not inertness
            runs += len(outcomes) > 0
            changes = changes or len(outcomes) > 1
            if changes and len(ran) == len(values):
                break  # a value refused so far is tried at the next point: "refused at every point" must be so
        dead = [i for i in range(len(values)) if i not in ran] if isinstance(d, CategoricalDistribution) and ran else []
        never += [f"{path} = {values[i]!r} ({refused[i]})" for i in dead]
        if not runs:
            skipped.append(path)
        elif not changes and not dead:
            inert.append(f"{path} ({len(values)} values {values[0]} .. {values[-1]})")
    n = len(study.space.distributions)
    checks = []
    if never:
        checks.append(Check("refused choices", "fail", f"{len(never)} searched choice(s) refused at every one of the "
                            f"{len(bases)} points of the space tried (each trial that draws one fails): " + "; ".join(never)))
    if inert:
        return [*checks, Check("inert parameters", "fail", f"{len(inert)} of {n} searched parameters changed nothing (identical "
                               f"metrics and trace across the range, others fixed, at {len(bases)} points of the space): "
                               + "; ".join(inert) + ". Is something overriding them (e.g. signal_adaptation.zones override "
                               "top-level thresholds)?")]
    extra = f"; no valid value for {', '.join(skipped)}" if skipped else ""
    return [*checks, Check("inert parameters", "warn" if skipped else "pass",
                           f"each of {n} searched parameters changes the outcome{extra}" if not never else
                           f"the searched parameters change the outcome, but for the refused choices{extra}")]


SHARED_TRIALS = 100_000  # other studies' trials in a journal beyond which a run is told it reads them all as it starts


def _check_storage(study: StudySpec, bt: Backtester, force_resume: bool, adding: int = 0) -> list[Check]:
    """The storage check, and ``_check_shared_journal`` when it warns (``adding``: a sweep's points)."""
    url, meta = study.storage_url, study.config.meta
    started = time.monotonic()
    try:
        storage = probe_storage(url)
        check_clock(url, meta.stale_trial_seconds, meta.storage_retry_seconds, meta.proxy)
    except GenesisError as exc:
        return [Check("storage", "fail", str(exc))]
    shared = _check_shared_journal(study, storage, time.monotonic() - started, adding)
    return [_check_study_in(study, storage, bt, force_resume), *([shared] if shared else [])]


def _check_shared_journal(study: StudySpec, storage: BaseStorage | None, seconds: float, adding: int) -> Check | None:
    """A journal is read whole by every process that opens it, whatever study it runs: a 5-trial
    run of a new study beside 1.6 million trials of other studies (sweeps) took 71 s and 6.5 GB.
    Said when its other studies (this one's phase-1 companion is its own) hold more than
    ``SHARED_TRIALS`` trials, or when a sweep would add that many to the results folder's default
    journal or one other studies share; None otherwise."""
    url = study.storage_url
    if not url.startswith("journal"):  # a database's studies are read each on its own
        return None
    others = {} if storage is None else {s.study_name: len(storage.get_all_trials(s._study_id, deepcopy=False))
                                         for s in storage.get_all_studies() if s.study_name not in (study.name, study.name + FEASIBILITY_SUFFIX)}
    named = ", ".join(f"{n} {c:,}" for n, c in sorted(others.items(), key=lambda nc: -nc[1])[:3]) + (", ..." if len(others) > 3 else "")
    own = f"a study in a journal of its own starts at once: --storage journal:///{Path(study.config.meta.results_dir) / study.name}.journal"
    held = sum(others.values())
    if held > SHARED_TRIALS:
        return Check("shared journal", "warn", f"{redact(url)} holds {held:,} trials of {len(others)} other stud"
                     f"{'y' if len(others) == 1 else 'ies'} ({named}), which every process of this run reads as it starts "
                     f"({seconds:.1f} s here, and memory for each trial); {own} (or meta.storage)")
    if adding > SHARED_TRIALS and (others or url == default_storage_url(study.config.meta.results_dir)):
        told = named or "the results folder's default journal"
        return Check("shared journal", "warn", f"this sweep adds {adding:,} trials to {redact(url)}, which every process of every "
                     f"other study in it then reads as it starts ({told}); {own}")
    return None


def _check_study_in(study: StudySpec, storage: BaseStorage | None, bt: Backtester, force_resume: bool) -> Check:
    """Whether the study can go on in the storage: new, resumed with its signature, or refused."""
    url, name = study.storage_url, study.name
    study_id = None
    if storage is not None:
        with contextlib.suppress(KeyError):
            study_id = storage.get_study_id_from_name(name)
    attrs: dict[str, Any] = {}
    trials = 0
    if storage is not None and study_id is not None:
        attrs, trials = storage.get_study_user_attrs(study_id), len(storage.get_all_trials(study_id, deepcopy=False))
    try:
        taken = folder_taken(study, attrs, trials)
    except GenesisError as exc:  # a run.json that does not read: the run would stop on it before any trial
        return Check("storage", "fail", str(exc))
    if taken is not None:
        return Check("storage", "fail", taken)
    if study_id is None:
        return Check("storage", "pass", f"{redact(url)} {'will be created' if storage is None else 'writable'}; study {name!r} is new")
    diff = stored_signature_diff(attrs, study, bt.candles(study.fixed))
    if diff is None:
        status: Status = "warn" if trials else "pass"
        return Check("storage", status, f"study {name!r} exists with {trials:,} trials and no signature (see --backfill-signature)")
    if diff:
        forced = " (resuming anyway: --force-resume)" if force_resume else ""
        ways = "" if force_resume else "; --study NAME for a study of its own, or --force-resume to go on in this one"
        return Check("storage", "warn" if force_resume else "fail",
                     f"study {name!r} ({trials:,} trials) was made with other settings{forced}: " + "; ".join(diff) + ways)
    return Check("storage", "pass", f"{redact(url)} writable; study {name!r} resumes ({trials:,} trials, signature matches)")


def preflight_file(config_path: str | Path, storage: str | None = None) -> list[Check]:
    """Preflight of a config file: a config that does not load is the failed first check."""
    try:
        cfg = load_study_config(config_path)
    except GenesisError as exc:
        return [Check("config", "fail", str(exc))]
    return preflight(cfg, storage)


def preflight(cfg: StudyConfig, storage: str | None = None, workers: int | None = None,
              max_trials: int | None = None, force_resume: bool = False, sweep: SweepOptions | None = None) -> list[Check]:
    """Every check of the module docstring; stops early only when later checks cannot run. For a
    ``sweep`` (which has no budget and no sampler) the stop policy and space size are not checked,
    and the run time is its points' backtests. Run in a process of its own (``survived``): a point
    whose backtest crashed it (a segfault in a strategy's compiled code) ended preflight, and so
    ``genesis optimize`` and ``genesis sweep``, every time, where the optimizer fails such a trial.
    Now that backtest is refused (as the optimizer fails it), the checks run again, and one says so."""
    checks, crashed = survived(functools.partial(_checks, cfg, storage, workers, max_trials, force_resume, sweep),
                               "preflight", PREFLIGHT_CRASHES)
    if not crashed:
        assert checks is not None
        return checks
    paths = list(SearchSpace(cfg).distributions)
    said = "; ".join(f"{_described(body, paths)}: {reason}" for body, reason in crashed)
    if checks is None:
        return [Check("crashes", "fail", f"{len(crashed)} backtests crashed the process running them, preflight stopped "
                      f"(where: the stacks Python's faulthandler wrote to stderr): {said}")]
    return [*checks, Check("crashes", "fail", f"{len(crashed)} backtest(s) crashed the process running them (where: the "
                           "stack Python's faulthandler wrote to stderr; each was then refused, and the checks run again): "
                           f"{said}. A trial that does so fails; with one worker the first ends the run")]


def _described(config: dict[str, Any], paths: list[str]) -> str:
    """A backtest as preflight's checks name it: its searched parameters and window."""
    params = []
    for path in paths:
        with contextlib.suppress(KeyError):
            params.append(f"{path} {get_path(config['params'], path)!r}")
    return f"{', '.join(params)} on {config['data']['start'] or 'the first bar'}..{config['data']['end'] or 'the last bar'}"


def _checks(cfg: StudyConfig, storage: str | None, workers: int | None, max_trials: int | None, force_resume: bool,
            sweep: SweepOptions | None, bt: Backtester) -> list[Check]:
    """``preflight``'s checks, its backtests run by ``bt``."""
    try:
        study = cfg.spec(storage)
    except GenesisError as exc:
        return [Check("config", "fail", str(exc))]
    checks = [Check("config", "pass", f"{len(study.space.distributions)} searched, {len(study.space.fixed)} fixed parameters")]
    if sweep is None:
        checks += _check_budget(cfg, study, max_trials)
    try:
        candles = bt.candles(study.fixed)
    except GenesisError as exc:
        return [*checks, Check("data", "fail", str(exc))]
    checks.append(Check("data", "pass", f"{candles.source}: {len(candles):,} bars {format_ts(candles.timestamps[0])} .. "
                        f"{format_ts(candles.timestamps[-1])}, fingerprint {candles.fingerprint[:12]}"))
    champion, point = _check_champion(study)
    checks += _check_windows(cfg, study, bt, point)
    checks.append(champion)
    merged = None if study.champion is None else cfg.champion_store().load()  # the champion whose params the spec merged
    checks += _check_inherited(cfg, study, merged, point)
    checks += _check_market(cfg, study, candles, merged)
    checks += _check_tried_before(cfg, study)
    if any(c.status == "fail" for c in checks):
        return checks  # a smoke run needs the windows
    try:
        result = _run(study, bt, point)  # also compiles and fills the caches before the run time is measured
    except GenesisError as exc:
        return [*checks, Check("smoke run", "fail", f"the base point does not run: {exc}")]
    sc = score(result.metrics, result.trace, study.config.scoring, study.config.constraints)
    trades = result.metrics["num_trades"]
    overflowed = not_finite_metrics(result.metrics)
    if overflowed:  # the data's prices (1e-307 passes every candle check) or sizes: every trial would be INVALID_NUMERIC
        closes = result.window.candles.close[result.window.start_index:]
        checks.append(Check("smoke run", "fail", f"the base point's {', '.join(overflowed)} are not finite numbers "
                            f"({sc.outcome.value}): the prices or sizes are beyond what the arithmetic holds (the window's "
                            f"closes are {closes.min():.4g} .. {closes.max():.4g})"))
    else:
        checks.append(Check("smoke run", "pass" if trades else "fail",
                            f"{trades} trades, outcome {sc.outcome.value}, production score {sc.production:.3f}" if trades else
                            f"no trade at the base point: {sc.outcome.value}, blocked {result.trace['blocked']}"))
    thin = thin_fill(result)
    if thin is not None:  # the smoke run's fills: the size the study's trials trade at
        checks.append(Check("liquidity", "warn", f"the base point's {thin}"))
    for free in (free_trading(result), free_borrow(bt, result)):
        if free is not None:  # the config's costs, which every trial pays
            checks.append(Check("costs", "warn", f"the base point's {free}"))
    checks.append(_check_lookahead(study, bt, point))
    checks.append(_check_warmup(study, bt, point))
    checks += _check_inert(study, bt, point) if trades else [Check("inert parameters", "warn", "not checked: the base point does not trade")]
    adding = 0
    if sweep is not None:
        with contextlib.suppress(GenesisError):  # a sweep too large is said by its own check
            adding = sweep_size(study.space, sweep)
    checks += _check_storage(study, bt, force_resume, adding)
    if sweep is not None:
        checks.append(_check_sweep_time(study, bt, point, sweep))
    else:
        checks.append(_check_run_time(cfg, study, bt, point, max_trials or study.config.meta.stop.max_trials,
                                      workers or study.config.meta.n_workers))
    return checks


def _check_tried_before(cfg: StudyConfig, study: StudySpec) -> list[Check]:
    """The configs other runs of the market tried on days of the explore window, which the deflated
    Sharpe ratio of this run's best counts: said before the run, as validation says it after."""
    m = cfg.meta
    alike = tried_alike(study.folder, market_runs(study.folder, m.symbol, m.timeframe), m.sample_start, m.sample_end)
    if not alike.sharpes:
        return []
    return [Check("trials before", "pass", f"{len(alike.sharpes):,} configs were tried on days of the explore window by "
                  f"{len(alike.runs)} other run(s) here ({names(alike.runs)}): the deflated Sharpe ratio of this run's "
                  "best counts them with its own")]


def _check_budget(cfg: StudyConfig, study: StudySpec, max_trials: int | None) -> list[Check]:
    stop = cfg.meta.stop
    refusal = stop.refusal(max_trials, time.time())
    budget = [text for given, text in [(max_trials or stop.max_trials, f"{max_trials or stop.max_trials} trials"),
                                       (stop.timeout_seconds, f"{stop.timeout_seconds} s"),
                                       (stop.end_at, f"until {stop.end_at}")] if given is not None]
    return [Check("stop policy", "fail" if refusal else "pass", refusal or f"stops at the first of: {', '.join(budget)}"),
            *_check_space_size(study, max_trials or stop.max_trials)]


def _check_sweep_time(study: StudySpec, bt: Backtester, point: dict[str, Any], sweep: SweepOptions) -> Check:
    """The sweep's backtests, measured at the base point and divided among its processes (up to one
    per core); what the sweep writes for each point (trial, artifact, cache entry) comes on top."""
    try:
        points = sweep_size(study.space, sweep)
    except GenesisError as exc:
        return Check("sweep points", "fail", str(exc))
    each = _measure_seconds(study, bt, point)
    processes = sweep_processes(sweep, points)
    cores = min(processes, os.cpu_count() or 1)
    return Check("expected run time", "pass", f"~{_duration(points * each / cores)} of backtests for {points:,} points on {processes} "
                 f"process(es): {each * 1e3:.1f} ms a point (plan, backtest, score, record), measured at the base point; "
                 "writing each point's trial, artifact and cache entry comes on top")


def _check_space_size(study: StudySpec, n_trials: int | None) -> list[Check]:
    """A budget beyond a finite space, named (shown only then): the trials past its size can only
    repeat points, each answered from the score cache, since a sampler does not know it has used the
    space up; a grid sweep backtests every point once."""
    size = study.space.size()
    if size is None or n_trials is None or n_trials <= size:
        return []
    levels = study.space.grid_levels()
    grid = "" if levels is None else f"; `genesis sweep CONFIG --method grid --levels {levels}` backtests each point once"
    limit = study.config.meta.duplicate_streak_limit
    return [Check("space size", "warn", f"the space holds {size:,} distinct points, fewer than the budget's {n_trials:,} trials: the "
                  f"{n_trials - size:,} past them can only repeat a point (answered from the score cache; {limit} in a row end "
                  f"the run: meta.duplicate_streak_limit){grid}")]


PROBE_TRIALS = 3  # trials run, and backtests timed
PROBE_ASKS = 8  # asks timed per study size: tpe-batched's batch, whose fit pays for the 8 (3 made it look 2.7x as costly)
WORTH_BATCHES = 1.25  # reproducible batches expected at most this much faster than one worker: a warning


def _check_run_time(cfg: StudyConfig, study: StudySpec, bt: Backtester, point: dict[str, Any], n_trials: int | None,
                    n_workers: int) -> Check:
    """Expected wall time, measured: a few trials through a worker's own path (ask, backtest, trial
    artifact, score cache, the storage's writes) on a throwaway journal in the temp folder, plus
    what the sampler adds as the study grows (its ask timed over in-memory studies of synthetic
    trials at two sizes: TPE's grows about linearly with the trials it models, so a run's total grows
    with their square). Workers divide it up to one per core; in reproducible batches they divide
    only the backtests (one process asks, records and tells every trial), which a warning names when
    that leaves the workers next to nothing to share. Their start-up is not counted."""
    trial = _trial_seconds(cfg, bt)
    if n_trials is None:
        return Check("expected run time", "pass", f"unbounded (no max_trials); ~{trial * 1e3:.0f} ms a trial at first")
    sizes = sorted({min(n_trials, 30), min(n_trials, 300)})
    asks = [_ask_seconds(study, k) for k in sizes]
    growth = max((asks[-1] - asks[0]) / (sizes[-1] - sizes[0]), 0.0) if len(sizes) == 2 else 0.0
    cores = max(1, min(n_workers, os.cpu_count() or 1))
    first, grown = trial * n_trials, growth * n_trials * (n_trials - 1) / 2
    detail = (f"{trial * 1e3:.1f} ms a trial at first (ask, backtest, records), the sampler's ask growing {growth * 1e6:.0f} us a "
              f"trial ({asks[0] * 1e3:.1f} ms at {sizes[0]} trials, {asks[-1] * 1e3:.1f} ms at {sizes[-1]})")
    if not (study.reproducible and n_workers > 1):
        return Check("expected run time", "pass", f"~{_duration((first + grown) / cores)} for {n_trials} trials on {n_workers} "
                     f"worker(s): {detail}")
    shared = _measure_seconds(study, bt, point)
    gain = trial / max(trial - shared * (cores - 1) / cores, 1e-9)
    how = (f"~{_duration(first / gain + grown)} for {n_trials} trials on {n_workers} workers in reproducible batches: {detail}; "
           f"the workers share the backtests only ({shared * 1e3:.1f} ms of a trial), so they run at most {gain:.2f}x as fast as one")
    if gain >= WORTH_BATCHES:
        return Check("expected run time", "pass", how)
    return Check("expected run time", "warn", f"{how}: one worker is as fast and as reproducible; meta.parallel: free runs them "
                 "side by side, each worker sampling on its own (a seed then no longer fixes the trials)")


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _trial_seconds(cfg: StudyConfig, bt: Backtester) -> float:
    """Seconds a worker takes for one trial, timed over PROBE_TRIALS of a throwaway study whose
    results and journal live in a temporary folder (removed after)."""
    import tempfile

    import optuna

    from genesis_core.optimizer import Worker, open_storage

    with tempfile.TemporaryDirectory(prefix="genesis-preflight-") as folder:
        url = f"journal:///{folder}/probe.journal"
        probe = cfg.model_copy(update={"meta": cfg.meta.model_copy(update={"results_dir": folder, "storage": url})}).spec()
        study = optuna.create_study(storage=open_storage(url), study_name=probe.name, direction="maximize",
                                    sampler=probe.sampler(), pruner=probe.pruner())
        worker = Worker(probe)
        worker.backtester = bt  # its caches in memory, warmed by the smoke run: preflight writes no cache file
        t0 = time.perf_counter()
        study.optimize(worker.objective, n_trials=PROBE_TRIALS, catch=(GenesisError,))
        seconds = (time.perf_counter() - t0) / PROBE_TRIALS
        worker.cache.dispose()
        return seconds


def _measure_seconds(study: StudySpec, bt: Backtester, point: dict[str, Any]) -> float:
    """Seconds a measuring process of reproducible batches takes for a trial (plan, backtest, score,
    record: ``measure``), its caches warm."""
    pruner = study.pruner()
    t0 = time.perf_counter()
    for _ in range(PROBE_TRIALS):
        measure(bt, bt.plan(study.build(point)), study, pruner)
    return (time.perf_counter() - t0) / PROBE_TRIALS


def _ask_seconds(study: StudySpec, trials: int) -> float:
    """Seconds the configured sampler takes to propose a point given ``trials`` finished ones, random
    points of the space (trials without parameters left TPE nothing to model jointly: it sampled each
    parameter on its own at every ask, 9 ms at 30 trials against 1.4 ms in a run)."""
    import optuna

    filler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    rng = random.Random(0)

    def point(trial: optuna.Trial) -> float:
        study.space.suggest(trial)
        return rng.random()

    filler.optimize(point, n_trials=trials, catch=())
    probe = optuna.create_study(direction="maximize", sampler=study.sampler())
    probe.add_trials(filler.trials)
    t0 = time.perf_counter()
    probe.optimize(point, n_trials=PROBE_ASKS, catch=())  # a grid sampler stops the study at its grid's end: inside a loop
    return (time.perf_counter() - t0) / max(1, len(probe.trials) - trials)  # (a tell of its own raised Optuna's RuntimeError)


def report(checks: list[Check]) -> PreflightRecord:
    """The checks as the record ``run.json`` keeps of them."""
    failed = sum(c.status == "fail" for c in checks)
    return PreflightRecord(ok=failed == 0, failed=failed, warnings=sum(c.status == "warn" for c in checks),
                           checks=[CheckRecord(name=c.name, status=c.status, detail=c.detail) for c in checks])
