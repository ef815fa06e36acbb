"""``validation.json`` (the out-of-sample table of one run) and ``walk_forward.json``."""

from __future__ import annotations

from typing import Any, Literal

from genesis_core.metrics import SHARES
from genesis_core.records._base import Part, Record, formatted
from genesis_core.records._trial import Metrics
from genesis_core.scoring import Outcome


class WindowResult(Part):
    """One candidate on one validation window."""

    start: str
    end: str
    first_bar: str
    last_bar: str
    bars: int
    data_window: str
    outcome: Outcome
    production_score: float
    passed: bool
    reasons: list[str]
    metrics: Metrics


class WindowRef(Part):
    """Where a result was measured: the bars and the data window's fingerprint."""

    first_bar: str
    last_bar: str
    data_window: str


class ExploreResult(WindowRef):
    production_score: float
    constraints_failed: list[str]
    metrics: Metrics


class CandidateResult(Part):
    """A config's validation: each window, the combined score, pass/fail and why."""

    windows: list[WindowResult]
    validation_score: float
    passed: bool
    reasons: list[str]


class Neighbour(Part):
    """A candidate with one parameter moved one step, scored on the explore window."""

    param: str
    value: Any
    production_score: float
    outcome: Outcome
    unchanged: bool = False  # its backtest is the candidate's, fill for fill: left out of plateau and worst (False before 2026-12-07)


class Robustness(Part):
    """How a candidate's neighbourhood scores: a plateau, or a peak whose neighbours collapse."""

    neighbours: list[Neighbour]
    plateau: float | None  # median neighbour score / the candidate's explore score, over the neighbours that changed a fill; None unless that score is positive
    worst: float | None  # the worst such neighbour's score / the candidate's
    flagged: bool  # plateau below validation.min_plateau

    def unmeasured(self) -> str | None:
        """Why there is no plateau (None when there is one): a share of a score of 0 or less means nothing."""
        if self.plateau is not None:
            return None
        if not self.neighbours:
            return "no neighbour the strategy accepts"
        if all(n.unchanged for n in self.neighbours):
            return "no neighbour changes a fill: one step in any parameter leaves the backtest as it is"
        return "an explore score of 0 or less, of which a share means nothing"

    def shares(self, between: str = " ") -> str:
        """What the validation table shows: the share of the score the neighbours keep at the median
        and, in brackets, at worst; a peak said so ('-' without a plateau: ``unmeasured`` says why)."""
        if self.plateau is None or self.worst is None:
            return "-"
        return f"{self.plateau:.0%}{between}({self.worst:.0%})" + (f"{between}peak" if self.flagged else "")

    @property
    def left_out(self) -> int:
        """How many neighbours made the candidate's own backtest, fill for fill."""
        return sum(n.unchanged for n in self.neighbours)

    def unchanged(self) -> list[str]:
        """The parameters of the neighbours that made the candidate's own backtest, fill for fill
        (each once): the shares leave those neighbours out."""
        return list(dict.fromkeys(n.param for n in self.neighbours if n.unchanged))


def names(items: list[str], shown: int = 5) -> str:
    """Names (runs, params) for a line of text: the first ``shown``, and how many more."""
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


class DeflatedSharpe(Part):
    """The DSR with N the evaluated configs, and with N_eff the independent ones they amount to
    (from ``mean_correlation`` of the top configs' returns); see genesis_core.validation._stats.
    N counts the configs other runs of the market evaluated on days of this run's explore window
    (``other_runs``, ``other_trials``): which study tried a config on these bars does not make it
    less of a trial."""

    trial: int
    n_trials: int
    other_runs: list[str] | None = None  # None: only this run's trials were counted (a report before other runs were)
    other_trials: int = 0  # of n_trials, configs the other runs evaluated and this run did not
    bars: int
    sharpe_per_bar: float | None
    sr0_per_bar: float
    skewness: float | None
    kurtosis: float | None
    dsr: float | None
    mean_correlation: float | None = None
    effective_trials: float | None = None
    sr0_effective: float | None = None
    dsr_effective: float | None = None

    def counted(self) -> str:
        """N in words: how many configs, and how many of them other runs tried."""
        if not self.other_trials or not self.other_runs:
            return f"{self.n_trials:,} evaluated configs"
        return (f"{self.n_trials:,} evaluated configs ({self.other_trials:,} of them by {len(self.other_runs)} other run(s) "
                f"on these bars: {names(self.other_runs)})")

    @property
    def gated(self) -> float | None:
        """What promotion's min_dsr is held against: the effective-N DSR where there is one."""
        return self.dsr_effective if self.dsr_effective is not None else self.dsr


class Candidate(CandidateResult):
    trial: int
    config_fingerprint: str
    params: dict[str, Any]
    explore: ExploreResult
    gap: float  # explore score - validation score
    sharpe_gap: float | None  # None when a window's Sharpe ratio is not a finite number
    rank: int = 0
    robustness: Robustness | None = None  # absent in reports written before it was measured
    deflated_sharpe: DeflatedSharpe | None = None  # its own (schema 4); before, only the top-ranked candidate's was measured


class ProbabilityOfOverfitting(Part):
    """PBO by combinatorially symmetric cross-validation over the top distinct configs' explore returns."""

    configs: int
    blocks: int
    bars: int
    splits: int
    pbo: float
    median_logit: float


class Overfitting(Part):
    mean_gap: float | None
    deflated_sharpe: DeflatedSharpe | None
    pbo: ProbabilityOfOverfitting | None = None
    pbo_note: str | None = None  # why there is no PBO (too few configs or bars)


class RefusedCandidate(Part):
    """A top explore candidate the strategy or the engine refused on a validation window (the
    strategy raised, decided an order the engine cannot take, or needs more warm-up than the data
    gives before it): it cannot pass, and the other candidates are validated."""

    trial: int
    config_fingerprint: str
    params: dict[str, Any]
    explore: ExploreResult
    start: str  # the window's
    end: str
    reason: str


class LeftOut(Part):
    """The evaluated trials that could not be candidates, counted by the first reason of each."""

    outcomes: dict[str, int]  # not VALID, by outcome
    pruned: int
    failed_constraints: int  # VALID and unpruned, but failing an explore constraint
    constraints: dict[str, int]  # how many of those failed each constraint (a trial may fail several)
    repeats: int  # eligible, but the same config or outcome as a better trial

    @property
    def count(self) -> int:
        return sum(self.outcomes.values()) + self.pruned + self.failed_constraints + self.repeats

    def describe(self) -> str:
        parts = []
        if self.failed_constraints:
            each = ", ".join(f"{name} {n}" for name, n in sorted(self.constraints.items(), key=lambda kv: (-kv[1], kv[0])))
            parts.append(f"{self.failed_constraints} failed the explore constraints ({each})")
        parts += [f"{n} {outcome}" for outcome, n in sorted(self.outcomes.items(), key=lambda kv: (-kv[1], kv[0]))]
        if self.pruned:
            parts.append(f"{self.pruned} pruned")
        if self.repeats:
            parts.append(f"{self.repeats} the same config or outcome as a better trial")
        return ", ".join(parts)


class ValidationReport(Record):
    """The top explore candidates re-run on the out-of-sample windows, ranked; those refused on a
    window listed apart.

    ``validation`` holds the validation settings used (``genesis_core.validation.ValidationConfig``)."""

    SCHEMA = 4
    run: str
    created: str
    code_version: str
    validation: dict[str, Any]
    evaluated_trials: int
    missing_artifacts: list[int]
    eligible_note: str
    eligible: int | None  # distinct eligible trials, of which the top_n are the candidates (None: not counted, schema < 4)
    left_out: LeftOut | None
    looked_before: list[str] | None  # other runs here validated on a day of these windows, same market (None: schema < 4)
    backtested_before: int | None = None  # configs `genesis backtest` ran here on days of these windows, same market (None: not counted)
    # what buying and holding made on the explore window ("explore") and on each window ("START..END"); None: not recorded
    buy_and_hold: dict[str, float] | None = None
    candidates: list[Candidate]
    refused: list[RefusedCandidate]
    passed: list[int]
    best: int | None
    overfitting: Overfitting

    @staticmethod
    def window_key(start: str, end: str) -> str:
        """A validation window's key in ``buy_and_hold``."""
        return f"{start}..{end}"

    def held_on(self, start: str, end: str) -> float | None:
        """What buying and holding validation window ``start``..``end`` made (None: not recorded)."""
        return (self.buy_and_hold or {}).get(self.window_key(start, end))

    @classmethod
    def upgrade(cls, raw: Any, version: int) -> Any:
        if version == 2 and isinstance(raw, dict):  # before a candidate could be refused on a window, none was
            return {**raw, "refused": [], "schema_version": 3}
        if version == 3 and isinstance(raw, dict):  # what was left out was not counted
            return {**raw, "eligible": None, "left_out": None, "looked_before": None, "schema_version": 4}
        return super().upgrade(raw, version)

    def short(self) -> str | None:
        """Why there are fewer candidates than ``top_n``, when there are because trials were left out
        (not merely because the run has fewer), and it is known."""
        top_n = self.validation.get("top_n", 0)
        if self.eligible is None or self.left_out is None or self.eligible >= top_n or not self.left_out.count:
            return None
        head = (f"no candidate: none of the {self.evaluated_trials:,} evaluated trials could be one" if not self.eligible else
                f"only {self.eligible:,} of the {self.evaluated_trials:,} evaluated trials could be candidates")
        return f"{head} ({self.eligible_note}): {self.left_out.describe()}"

    def reused(self) -> str | None:
        """That other runs were validated on these windows, or other configs backtested on them by
        hand, if any were."""
        looks = []
        if self.looked_before:
            looks.append(f"{len(self.looked_before)} other run(s) of this market here were validated on days of these windows "
                         f"({names(self.looked_before)})")
        if self.backtested_before:
            looks.append(f"{self.backtested_before} other config(s) were backtested here on days of these windows (genesis "
                         "backtest: results/backtests)")
        if not looks:
            return None
        return "; ".join(looks) + ": each look makes them less out of sample; keep a last window none has seen for the final check"

    def candidate(self, trial: int | None) -> Candidate | None:
        return next((c for c in self.candidates if c.trial == trial), None)

    def table(self, between: str = " .. ", inner: str = " ") -> list[list[list[str]]]:
        """The validation table as `genesis validate` and a run's page show it, in ``TABLE_COLUMNS``:
        a group of rows for the market (what buying and holding each window made), then one a
        candidate (its verdict on its first row, each window after), then one a refused trial.
        ``between`` joins a window's dates and ``inner`` a plateau's shares: a narrow table breaks
        them there."""
        groups = []
        if self.buy_and_hold:
            groups.append([["market" if i == 0 else "", label.replace("..", between), "", f"{made:+.2%}", *[""] * 6]
                           for i, (label, made) in enumerate(self.buy_and_hold.items())])
        for c in self.candidates:
            rows = [("explore", c.explore.production_score, c.explore.metrics, c.passed)]
            rows += [(f"{w.start}{between}{w.end}", w.production_score, w.metrics, w.passed) for w in c.windows]
            groups.append([[f"#{c.trial}" if i == 0 else "", label, f"{score:.2f}", *_figures(m),
                            f"{c.validation_score:.2f}" if i == 0 else "",
                            (c.robustness.shares(inner) if c.robustness else "-") if i == 0 else "", "pass" if ok else "fail"]
                           for i, (label, score, m, ok) in enumerate(rows)])
        for r in self.refused:  # below the ranked: they cannot pass
            groups.append([[f"#{r.trial}", "explore", f"{r.explore.production_score:.2f}", *_figures(r.explore.metrics), "-", "-",
                            "refused"], ["", f"{r.start}{between}{r.end}", *["-"] * 7, "refused"]])
        return groups

    def why_failed(self) -> list[str]:
        """Each candidate's reasons for failing, and each refused trial's, a line each."""
        return ([f"#{c.trial} {reason}" for c in self.candidates for reason in c.reasons]
                + [f"#{r.trial} {r.start}..{r.end}: refused: {r.reason}" for r in self.refused])

    def plateau_notes(self) -> list[str]:
        """What the plateau column cannot say: why it shows '-' for some candidates, and the
        neighbours left out of others' shares (the same backtest as the candidate's), grouped."""
        unmeasured: dict[str, list[str]] = {}
        left_out: dict[tuple[str, ...], list[str]] = {}  # by the left-out neighbours' params
        for c in self.candidates:
            if c.robustness is None:
                continue
            if (why := c.robustness.unmeasured()) is not None:
                unmeasured.setdefault(why, []).append(f"#{c.trial}")
            if params := c.robustness.unchanged():
                left_out.setdefault(tuple(params), []).append(f"#{c.trial} {c.robustness.left_out} of {len(c.robustness.neighbours)}")
        return ([f"plateau -: {', '.join(trials)}: {why}" for why, trials in unmeasured.items()]
                + [f"plateau {', '.join(counts)} neighbours left out, the same backtest as the candidate's ({names(list(inert))})"
                   for inert, counts in left_out.items()])


TABLE_COLUMNS = ("trial", "window", "score", "return", "max dd", "PF", "trades", "val\nscore", "plateau\n(worst)", "result")


def _figures(m: Metrics) -> list[str]:
    """A window's return, max drawdown, profit factor and trades as the validation table shows them."""
    return [formatted(m["total_return"], SHARES["total_return"]), formatted(m["max_drawdown"], SHARES["max_drawdown"]),
            formatted(m["profit_factor"], ".2f"), str(m["num_trades"])]


class FoldTop(Part):
    """The fold's pick: its explore best among the candidates validated (chosen without the
    validation block, so its score there is out of sample)."""

    trial: int
    params: dict[str, Any]
    validation_score: float
    gap: float
    passed: bool
    explore_score: float
    validation_return: float | None = None  # its total return on the block (None: a file written before it was kept)


class Fold(Part):
    fold: int
    explore: tuple[str, str]
    validation: tuple[str, str]
    config: str
    run_dir: str
    evaluated_trials: int
    passed: list[int]
    best: int | None
    top: FoldTop | None
    deflated_sharpe: DeflatedSharpe | None
    no_top: str | None = None  # why top is None: no trial could be a candidate, or every candidate was refused
    buy_and_hold: float | None = None  # what buying and holding the block made (None: a file written before it was kept)


class WalkForwardAggregate(Part):
    """Over the folds. ``folds_with_a_pass`` counts folds where any of ``top_n`` candidates passed on
    the block, a best of several on it; ``tops_passed`` those whose top (chosen without the block)
    passed, which is out of sample (None: a file written before it was counted)."""

    folds_with_a_pass: int
    tops_passed: int | None = None
    mean_validation_score: float | None
    worst_validation_score: float | None
    mean_gap: float | None
    # the tops' returns on their blocks compounded, as trading each fold's top in turn made, and buying and holding
    # those blocks compounded alike (None: no fold has a top, or a file written before they were kept)
    chained_return: float | None = None
    chained_buy_and_hold: float | None = None

    def chained(self) -> str | None:
        """The chained returns in a line, beside each other."""
        if self.chained_return is None or self.chained_buy_and_hold is None:
            return None
        return (f"traded each on its block in turn, the tops made {self.chained_return:+.2%}; buying and holding those "
                f"blocks made {self.chained_buy_and_hold:+.2%}")


class WalkForwardReport(Record):
    """Every fold of a walk-forward run and their aggregate; ``walk_forward`` holds its settings.

    ``top_chosen_by`` is ``explore``; a file of schema 1 chose each fold's top by its score on the
    validation block (the best of top_n there, so not out of sample): ``validation``."""

    SCHEMA = 2
    study: str
    walk_forward: dict[str, Any]
    blocks: list[tuple[str, str]]
    folds: list[Fold]
    complete: bool
    aggregate: WalkForwardAggregate
    top_chosen_by: Literal["explore", "validation"]

    @classmethod
    def upgrade(cls, raw: Any, version: int) -> Any:
        if version == 1 and isinstance(raw, dict):
            return {**raw, "top_chosen_by": "validation", "schema_version": 2}
        return super().upgrade(raw, version)

    def biased(self) -> str | None:
        """Why its scores are not out of sample, if they are not."""
        if self.top_chosen_by == "explore":
            return None
        return ("made by an older genesis-core, which took each fold's top by its score on the validation block "
                "(the best of validation.top_n there): those scores are not out of sample; run genesis walk-forward again")
