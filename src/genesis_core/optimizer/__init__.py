"""Optuna studies over the backtest: search space, samplers, duplicate cache, resume signature,
workers, and the run's records."""

from genesis_core.optimizer._config import (
    FixedParam,
    Meta,
    OptimizerConfig,
    PrunerConfig,
    SamplerConfig,
    load_optimizer_config,
)
from genesis_core.optimizer._results import RunSummary, best_score, fold_cautions, folder_cautions, run_cautions
from genesis_core.optimizer._run import OnProgress, Progress, RunOptions, optimize
from genesis_core.optimizer._samplers import FEASIBILITY_SUFFIX, PRUNERS, SAMPLERS, sampler_class
from genesis_core.optimizer._space import SearchSpace
from genesis_core.optimizer._storage import (
    CRASHES,
    RunFiles,
    StorageError,
    StorageUnavailable,
    check_clock,
    crash_reason,
    default_storage_url,
    died_of,
    open_storage,
    probe_storage,
    recover_stale_trials,
    redact,
    serve_proxy,
    shares_files,
)
from genesis_core.optimizer._study import ResumeBlocked, StudySpec, folder_taken, stored_signature_diff, study_spec
from genesis_core.optimizer._sweep import SweepOptions, sweep, sweep_points, sweep_processes, sweep_size
from genesis_core.optimizer._worker import EVALUATED, Worker, child_context, ends_with, measure, quietly, settled_heap

__all__ = [
    "CRASHES", "EVALUATED", "FEASIBILITY_SUFFIX", "PRUNERS", "SAMPLERS", "FixedParam", "Meta", "OnProgress", "OptimizerConfig", "Progress", "PrunerConfig",
    "ResumeBlocked", "RunFiles", "RunOptions", "RunSummary", "SamplerConfig", "SearchSpace", "StorageError", "StorageUnavailable", "StudySpec", "SweepOptions", "Worker",
    "best_score", "check_clock", "child_context", "crash_reason", "default_storage_url", "died_of", "ends_with", "fold_cautions", "folder_cautions", "folder_taken", "load_optimizer_config", "measure", "open_storage", "optimize", "probe_storage",
    "quietly", "recover_stale_trials", "redact", "run_cautions", "serve_proxy", "settled_heap", "shares_files", "sampler_class", "stored_signature_diff", "study_spec", "sweep",
    "sweep_points", "sweep_processes", "sweep_size",
]
