"""The deflated Sharpe ratio against simulation and its own special cases."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from genesis_core.validation import deflated_sharpe, expected_max_sharpe


def test_expected_max_sharpe_matches_the_simulated_maximum_of_skill_less_trials():
    rng = np.random.default_rng(1)
    for n in (10, 100, 1000):
        simulated = rng.standard_normal((4000, n)).max(axis=1).mean()
        assert abs(expected_max_sharpe(n, 1.0) - simulated) / simulated < 0.03
    assert expected_max_sharpe(100, 0.25) == 0.5 * expected_max_sharpe(100, 1.0)
    assert expected_max_sharpe(1, 1.0) == 0.0


def test_one_trial_is_the_probabilistic_sharpe_ratio_against_zero():
    rng = np.random.default_rng(2)
    r = rng.normal(0.001, 0.01, 2000)
    out = deflated_sharpe(r, np.array([0.1]), 1)
    sr = r.mean() / r.std(ddof=1)
    z = (r - r.mean()) / r.std()
    g3, g4 = (z**3).mean(), (z**4).mean()
    psr = NormalDist().cdf(sr * math.sqrt(len(r) - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr * sr))
    assert out["sr0_per_bar"] == 0.0 and math.isclose(out["dsr"], psr, rel_tol=1e-12)


def test_the_best_of_many_noise_strategies_is_not_significant_once_deflated():
    rng = np.random.default_rng(3)
    returns = rng.normal(0.0, 0.01, (500, 1000))  # 500 strategies without skill, 1,000 bars each
    sharpes = returns.mean(axis=1) / returns.std(axis=1, ddof=1)
    best = returns[int(np.argmax(sharpes))]
    naive = deflated_sharpe(best, sharpes[:1], 1)["dsr"]
    deflated = deflated_sharpe(best, sharpes, 500)["dsr"]
    assert naive > 0.95 and deflated < 0.5  # looks significant alone; is luck given 500 trials
    fewer = deflated_sharpe(best, sharpes, 50)["dsr"]
    assert deflated < fewer < naive  # more trials, more deflation


def test_flat_returns_have_no_dsr():
    assert deflated_sharpe(np.zeros(100), np.array([0.0, 0.1]), 2)["dsr"] is None
