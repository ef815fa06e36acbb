"""The deflated Sharpe ratio against simulation and its own special cases."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from genesis_core.validation import deflated_sharpe, effective_trials, expected_max_sharpe, pbo


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


def test_pbo_of_skill_less_configs_is_a_coin_toss_on_average():
    """Noise: the in-sample favourite is as likely below the out-of-sample median as above it."""
    rng = np.random.default_rng(3)
    values = [pbo(rng.normal(0.0, 0.01, (1600, 20)), 8)["pbo"] for _ in range(40)]
    assert 0.4 < float(np.mean(values)) < 0.6


def test_pbo_is_near_zero_for_one_planted_edge_and_near_one_for_luck_that_reverses():
    rng = np.random.default_rng(4)
    noise = rng.normal(0.0, 0.01, (3200, 30))
    edge = noise.copy()
    edge[:, 11] += 0.003  # one configuration with a real edge over the whole sample
    result = pbo(edge, 16)
    assert result["pbo"] < 0.02 and result["median_logit"] > 2 and result["splits"] == 12870
    # overfit configurations: each earns on half the blocks what it loses on the other half, so the
    # in-sample favourite is the one whose losing half is exactly out of sample
    blocks = np.repeat(np.arange(16), 200)
    luck = noise.copy()
    for j in range(30):
        good = rng.permutation(16)[:8]
        luck[:, j] += np.where(np.isin(blocks, good), 0.002, -0.002)
    assert pbo(luck, 16)["pbo"] > 0.9


def test_pbo_refuses_what_it_cannot_measure():
    for shape, blocks in [((100, 1), 4), ((100, 5), 3), ((10, 5), 8)]:
        try:
            pbo(np.zeros(shape), blocks)
        except ValueError as exc:
            assert "PBO needs" in str(exc)
        else:
            raise AssertionError(f"{shape}, {blocks} accepted")


def test_effective_trials_count_independent_configurations_once():
    rng = np.random.default_rng(5)
    independent = rng.normal(0.0, 0.01, (5000, 40))
    rho, n = effective_trials(independent, 300)
    assert rho < 0.02 and n > 290
    common = rng.normal(0.0, 0.01, (5000, 1))
    rho, n = effective_trials(common + rng.normal(0.0, 0.001, (5000, 40)), 300)
    assert rho > 0.98 and n < 7  # 300 near-copies are a handful of trials
    assert effective_trials(np.repeat(common, 5, axis=1), 300) == (1.0, 1.0)
