"""After the explore phase: out-of-sample validation, overfitting statistics and proofs that
stored results reproduce."""

from genesis_core.validation._equivalence import Equivalence, check_equivalence, check_trial, resolve_run
from genesis_core.validation._stats import deflated_sharpe, expected_max_sharpe
from genesis_core.validation._validate import (
    evaluate_candidate,
    load_run,
    load_validation,
    select_candidates,
    validate,
)
from genesis_core.validation._walk_forward import fold_windows, walk_forward

__all__ = [
    "Equivalence",
    "check_equivalence",
    "check_trial",
    "deflated_sharpe",
    "evaluate_candidate",
    "expected_max_sharpe",
    "fold_windows",
    "load_run",
    "load_validation",
    "resolve_run",
    "select_candidates",
    "validate",
    "walk_forward",
]
