"""After the explore phase: proofs that stored results reproduce, and out-of-sample validation."""

from genesis_core.validation._equivalence import Equivalence, check_equivalence, resolve_run

__all__ = ["Equivalence", "check_equivalence", "resolve_run"]
