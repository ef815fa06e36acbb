"""After the explore phase: out-of-sample validation, walk-forward folds, overfitting statistics
and proofs that stored results reproduce."""

from genesis_core.validation._config import ValidationConfig, ValidationConstraints, WalkForward, WindowSpec
from genesis_core.validation._crashes import survived
from genesis_core.validation._equivalence import Equivalence, check_equivalence, check_trial
from genesis_core.validation._stats import deflated_sharpe, effective_trials, expected_max_sharpe, pbo
from genesis_core.validation._validate import (
    Alike,
    RefusedOnWindow,
    evaluate_candidate,
    market_runs,
    missing_artifacts,
    select_candidates,
    tried_alike,
    validate,
)
from genesis_core.validation._walk_forward import fold_windows

__all__ = [
    "Alike",
    "Equivalence",
    "RefusedOnWindow",
    "ValidationConfig",
    "ValidationConstraints",
    "WalkForward",
    "WindowSpec",
    "check_equivalence",
    "check_trial",
    "deflated_sharpe",
    "effective_trials",
    "evaluate_candidate",
    "expected_max_sharpe",
    "market_runs",
    "pbo",
    "fold_windows",
    "missing_artifacts",
    "select_candidates",
    "survived",
    "tried_alike",
    "validate",
]
