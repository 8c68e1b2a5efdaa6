"""Client sampling for DP rounds: Poisson at rate q from the CSPRNG, and secret fixed-size.

DP-FedAvg's amplification by sampling holds only for the sampling actually
run and only against parties that cannot predict it; these tests check the
inclusion frequencies statistically and that the CSPRNG ignores every seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedops.core.rounds import poisson_sample, sample_clients, secret_fixed_sample

NODES = [f"node-{i:03d}" for i in range(40)]
#: a test fails by chance with probability ~1e-9 per assertion (two-sided tail)
ALPHA = 1e-9


@pytest.mark.parametrize("rate", [0.05, 0.25, 0.9])
def test_each_node_joins_with_probability_q_independently_of_the_others(rate):
    draws = 4000
    counts = np.zeros(len(NODES))
    sizes = []
    for _ in range(draws):
        picked = poisson_sample(NODES, rate)
        sizes.append(len(picked))
        counts += np.isin(NODES, picked)
    # every node's count is Binomial(draws, q): a two-sided test per node, Bonferroni
    for c in counts:
        p = stats.binomtest(int(c), draws, rate).pvalue
        assert p > ALPHA / len(NODES), (c, draws * rate)
    # independence: the cohort size is Binomial(N, q), whose variance differs from a fixed m
    expected_var = len(NODES) * rate * (1 - rate)
    var = float(np.var(sizes, ddof=1))
    chi2 = (draws - 1) * var / expected_var
    lo, hi = stats.chi2.ppf([ALPHA / 2, 1 - ALPHA / 2], draws - 1)
    assert lo < chi2 < hi, (var, expected_var)


def test_a_poisson_round_may_sample_nobody_and_q_one_samples_everybody():
    assert poisson_sample(NODES, 1.0) == sorted(NODES)
    empty = sum(not poisson_sample(NODES[:3], 0.05) for _ in range(2000))
    assert stats.binomtest(empty, 2000, 0.95**3).pvalue > ALPHA


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5, math.nan])
def test_a_rate_outside_zero_one_is_refused(rate):
    with pytest.raises(ValueError, match="sampling rate"):
        poisson_sample(NODES, rate)


def test_the_csprng_sample_is_not_a_function_of_anything_the_coordinator_knows():
    """Same nodes, same round, same process: 50 draws of 20-of-40 give 50 different cohorts
    (two equal by chance: p < 50² / C(40, 20) ~ 2e-8)."""
    poisson = {tuple(poisson_sample(NODES, 0.5)) for _ in range(50)}
    fixed = {tuple(secret_fixed_sample(NODES, 20)) for _ in range(50)}
    assert len(poisson) == 50 and len(fixed) == 50


def test_a_seeded_generator_reproduces_the_poisson_sample():
    a = poisson_sample(NODES, 0.3, np.random.default_rng([7, 1]))
    b = poisson_sample(NODES, 0.3, np.random.default_rng([7, 1]))
    assert a == b and a != poisson_sample(NODES, 0.3, np.random.default_rng([7, 2]))


def test_the_secret_fixed_sample_has_exactly_m_and_is_uniform():
    draws, m = 4000, 10
    counts = np.zeros(len(NODES))
    for _ in range(draws):
        picked = secret_fixed_sample(NODES, m)
        assert len(picked) == m == len(set(picked)) and picked == sorted(picked)
        counts += np.isin(NODES, picked)
    chi2, p = stats.chisquare(counts)
    assert p > ALPHA, (chi2, counts)
    assert secret_fixed_sample(NODES, 100) == sorted(NODES)


def test_the_seeded_sampler_of_plain_rounds_is_reproducible():
    """Not for DP rounds: the same (seed, round) gives the same cohort, by design."""
    a = sample_clients(NODES, 10, seed=3, server_round=4)
    assert a == sample_clients(list(reversed(NODES)), 10, seed=3, server_round=4)
