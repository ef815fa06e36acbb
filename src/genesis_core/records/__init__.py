"""Every file Genesis-Core writes, as a typed record with a schema version, and the one owner of
each file's path: ``RunFolder`` (a run's files) and ``ChampionStore`` (champions and history)."""

from genesis_core.records._base import Record, SchemaError, iso, read_record, write_record
from genesis_core.records._champion import (
    ChampionData,
    ChampionHistory,
    ChampionMetrics,
    ChampionRecord,
    ChampionScores,
    ChampionStore,
    ChampionWriteError,
    GateRecord,
    HistoryEntry,
    RunRef,
    ValidationWindowRef,
)
from genesis_core.records._run import (
    BestRef,
    CacheStats,
    CheckRecord,
    Mirror,
    PreflightRecord,
    PreflightSkipped,
    RunFolder,
    RunListing,
    RunRecord,
    Session,
    finished_runs,
    preflight_warnings,
    walk_forwards,
)
from genesis_core.records._trial import (
    SWEPT,
    TRIAL_METRICS,
    BacktestLook,
    BacktestRecord,
    BestTrial,
    CachedFrom,
    Metrics,
    ScoreRecord,
    TradeRecord,
    TrialArtifact,
    TrialRow,
    WindowInfo,
    backtest_looks,
    backtest_record,
    failures,
    finite_metrics,
)
from genesis_core.records._validation import (
    Candidate,
    CandidateResult,
    DeflatedSharpe,
    ExploreResult,
    Fold,
    FoldTop,
    LeftOut,
    Neighbour,
    Overfitting,
    ProbabilityOfOverfitting,
    RefusedCandidate,
    Robustness,
    ValidationReport,
    WalkForwardAggregate,
    WalkForwardReport,
    WindowRef,
    WindowResult,
    names,
)

__all__ = [
    "SWEPT", "TRIAL_METRICS", "BacktestLook", "BacktestRecord", "BestRef", "BestTrial", "CacheStats", "CachedFrom", "Candidate", "CandidateResult", "ChampionData",
    "ChampionHistory", "ChampionMetrics", "ChampionRecord", "ChampionScores", "ChampionStore", "ChampionWriteError", "CheckRecord",
    "DeflatedSharpe", "ExploreResult", "Fold", "FoldTop", "GateRecord", "HistoryEntry", "Metrics", "Overfitting",
    "PreflightRecord", "PreflightSkipped", "Neighbour", "ProbabilityOfOverfitting", "LeftOut", "RefusedCandidate", "Robustness", "Record", "Mirror", "RunFolder", "RunListing", "RunRecord", "RunRef", "SchemaError", "ScoreRecord", "Session",
    "TradeRecord", "TrialArtifact", "TrialRow", "ValidationReport", "ValidationWindowRef", "WalkForwardAggregate",
    "WalkForwardReport", "WindowInfo", "WindowRef", "WindowResult", "backtest_looks", "backtest_record", "failures", "finite_metrics", "finished_runs", "iso", "names", "preflight_warnings", "read_record", "walk_forwards", "write_record",
]
