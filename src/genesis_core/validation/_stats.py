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

The trials of one search are far from independent (TPE samples around its best points), so N
overstates the selection: ``effective_trials`` estimates the number of independent ones from the
average correlation rho of the configurations' per-bar returns, N_eff = rho + (1 - rho) * N
(Bailey and López de Prado 2014, section 4), and the DSR is also given with N_eff.

Probability of backtest overfitting (Bailey, Borwein, López de Prado and Zhu, "The Probability of
Backtest Overfitting", Journal of Computational Finance 20(4), 2017), by combinatorially symmetric
cross-validation: the T bars of K configurations' per-bar returns are cut into S blocks; for each
of the C(S, S/2) ways to pick half of them as in-sample, the configuration with the best
in-sample Sharpe ratio is ranked among all K on the other half, omega = rank / (K + 1), and
lambda = ln(omega / (1 - omega)). PBO is the share of splits with lambda <= 0: how often the
in-sample favourite is no better than the median out of sample.
"""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np
from numba import njit

EULER_GAMMA = 0.5772156649015329
_Z = NormalDist()


def expected_max_sharpe(n_trials: float, variance: float) -> float:
    """SR0: the expected maximum per-bar Sharpe ratio of ``n_trials`` trials without skill."""
    if n_trials <= 1 or variance <= 0:
        return 0.0
    return math.sqrt(variance) * (
        (1 - EULER_GAMMA) * _Z.inv_cdf(1 - 1 / n_trials) + EULER_GAMMA * _Z.inv_cdf(1 - 1 / (n_trials * math.e))
    )


def deflated_sharpe(returns: np.ndarray, trial_sharpes: np.ndarray, n_trials: float) -> dict[str, float | int | None]:
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
    z2 = z * z  # products, not z**3: NumPy's power takes the SIMD path of the CPU, and a fleet's machines differed in its last bits
    g3, g4 = float(np.mean(z2 * z)), float(np.mean(z2 * z2))
    denominator = 1 - g3 * sr + (g4 - 1) / 4 * sr * sr
    out.update(sharpe_per_bar=sr, skewness=g3, kurtosis=g4)
    if denominator > 0:
        out["dsr"] = _Z.cdf((sr - sr0) * math.sqrt(t - 1) / math.sqrt(denominator))
    return out


def effective_trials(returns: np.ndarray, n_trials: int) -> tuple[float, float]:
    """(rho, N_eff): the mean pairwise correlation of the columns of ``returns`` (per-bar returns,
    one column per configuration) and the number of independent trials it implies among
    ``n_trials`` (rho clipped to [0, 1]; a constant column counts as uncorrelated)."""
    r = np.asarray(returns, dtype=np.float64)
    k = r.shape[1]
    if k < 2:
        return 0.0, float(n_trials)
    gram = _gram(r - r.mean(axis=0))
    norms = np.sqrt(np.diag(gram))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.clip(gram / np.outer(norms, norms), -1.0, 1.0)  # NaN for a constant column, as np.corrcoef
    off = corr[~np.eye(k, dtype=bool)]
    rho = float(np.clip(np.nanmean(off) if np.isfinite(off).any() else 0.0, 0.0, 1.0))
    return rho, rho + (1.0 - rho) * n_trials


@njit(cache=True)
def _gram(c: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """``c.T @ c`` summed bar by bar, in one order on every machine: np.corrcoef's BLAS kernels sum
    in an order of the CPU's, and a fleet's machines reported other last digits of the correlation."""
    bars, k = c.shape
    gram = np.zeros((k, k))
    for t in range(bars):
        for i in range(k):
            ci = c[t, i]
            for j in range(i, k):
                gram[i, j] += ci * c[t, j]
    for i in range(k):
        for j in range(i):
            gram[i, j] = gram[j, i]
    return gram


def _sharpe(total: np.ndarray, squares: np.ndarray, n: int) -> np.ndarray:
    """Per-column Sharpe ratios from sums and sums of squares over ``n`` bars (0 without variance)."""
    mean = total / n
    var = np.maximum(squares / n - mean * mean, 0.0) * n / (n - 1)
    std = np.sqrt(var)
    return np.divide(mean, std, out=np.zeros_like(mean), where=std > 1e-15)


def pbo(returns: np.ndarray, blocks: int = 16) -> dict[str, float | int]:
    """The probability of backtest overfitting of the module docstring, by CSCV over ``blocks``
    (even) blocks of the rows of ``returns`` (bars x configurations; trailing rows that do not
    fill a block are left out)."""
    r = np.asarray(returns, dtype=np.float64)
    t, k = r.shape
    if blocks < 2 or blocks % 2 or k < 2 or t // blocks < 2:
        raise ValueError(f"PBO needs an even number of blocks >= 2, 2+ configurations and 2+ bars per block "
                         f"(got {blocks} blocks, {k} configurations, {t} bars)")
    size = t // blocks
    cut = r[: size * blocks].reshape(blocks, size, k)
    sums, squares = cut.sum(axis=1), (cut * cut).sum(axis=1)  # blocks x k
    splits = np.array([[b in chosen for b in range(blocks)] for chosen in itertools.combinations(range(blocks), blocks // 2)])
    n_half = size * blocks // 2
    is_sharpe = _sharpe(splits @ sums, splits @ squares, n_half)
    oos_sharpe = _sharpe(~splits @ sums, ~splits @ squares, n_half)
    best = np.argmax(is_sharpe, axis=1)
    chosen = oos_sharpe[np.arange(len(splits)), best][:, None]
    rank = (oos_sharpe < chosen).sum(axis=1) + 0.5 * ((oos_sharpe == chosen).sum(axis=1) - 1) + 1  # ties share ranks
    omega = rank / (k + 1)
    logits = np.log(omega / (1 - omega))
    return {"configs": k, "blocks": blocks, "bars": size * blocks, "splits": len(splits),
            "pbo": float((logits <= 0).mean()), "median_logit": float(np.median(logits))}

