"""Overfitting statistics: how much of the best explore score is selection luck.

Deflated Sharpe ratio (Bailey and López de Prado, "The Deflated Sharpe Ratio: Correcting for
Selection Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio Management 40(5),
2014, eq. 8-9). With SR the per-bar (not annualised) Sharpe ratio of the selected trial's
returns over T bars, skewness g3 and kurtosis g4 (3 for a normal law) of those returns, N the
number of distinct configurations evaluated and V the variance of their per-bar Sharpe ratios:

    SR0 = sqrt(V) * ((1 - gamma) * Z^-1(1 - 1/N) + gamma * Z^-1(1 - 1/(N e)))
    DSR = Z((SR - SR0) * sqrt(T - 1) / sqrt(1 - g3 * SR + (g4 - 1) / 4 * SR^2))

gamma is the Euler-Mascheroni constant and Z the standard normal CDF. SR0 is the Sharpe ratio
the best of N skill-less trials is expected to show; DSR is the probability that the true
Sharpe ratio of the selection exceeds it. With N = 1 there is no selection: SR0 = 0 and DSR is
the probabilistic Sharpe ratio against zero.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

EULER_GAMMA = 0.5772156649015329
_Z = NormalDist()


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """SR0: the expected maximum per-bar Sharpe ratio of ``n_trials`` trials without skill."""
    if n_trials < 2 or variance <= 0:
        return 0.0
    return math.sqrt(variance) * (
        (1 - EULER_GAMMA) * _Z.inv_cdf(1 - 1 / n_trials) + EULER_GAMMA * _Z.inv_cdf(1 - 1 / (n_trials * math.e))
    )


def deflated_sharpe(returns: np.ndarray, trial_sharpes: np.ndarray, n_trials: int) -> dict[str, float | int | None]:
    """DSR of the selected trial's per-bar ``returns`` given the per-bar Sharpe ratios of all
    evaluated trials; ``dsr`` is None when the returns have no variance."""
    r = np.asarray(returns, dtype=np.float64)
    t = len(r)
    std = float(r.std(ddof=1)) if t >= 2 else 0.0
    variance = float(np.var(trial_sharpes, ddof=1)) if len(trial_sharpes) >= 2 else 0.0
    sr0 = expected_max_sharpe(n_trials, variance)
    out: dict[str, float | int | None] = {"n_trials": n_trials, "bars": t, "sharpe_per_bar": None, "sr0_per_bar": sr0,
                                          "skewness": None, "kurtosis": None, "dsr": None}
    if std == 0.0:
        return out
    sr = float(r.mean()) / std
    z = (r - r.mean()) / r.std()
    g3, g4 = float(np.mean(z**3)), float(np.mean(z**4))
    denominator = 1 - g3 * sr + (g4 - 1) / 4 * sr * sr
    out.update(sharpe_per_bar=sr, skewness=g3, kurtosis=g4)
    if denominator > 0:
        out["dsr"] = _Z.cdf((sr - sr0) * math.sqrt(t - 1) / math.sqrt(denominator))
    return out
