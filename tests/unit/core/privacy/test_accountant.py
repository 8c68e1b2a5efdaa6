"""Unit tests for fedops.core.privacy.accountant: ε is Opacus's, for the run's (σ, q, rounds).

One round of DP-FedAvg is one step of the subsampled Gaussian mechanism, so
the reference is Opacus's own accountant stepped round by round with
``step(noise_multiplier=σ, sample_rate=q)``; the ledger must give the same ε
(to 1e-6 relative) without replaying every round.
"""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import PRVAccountant, RDPAccountant

from fedops.core.privacy.accountant import (
    ACCOUNTANTS,
    PrivacyLedger,
    epsilon,
    noise_for_target,
)

OPACUS = {"rdp": RDPAccountant, "prv": PRVAccountant}


@pytest.fixture(autouse=True)
def _quiet_opacus():
    # Opacus warns about its alpha grid and PRV's log(0) at q=1; not what these tests check
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _opacus_epsilon(rounds: list[tuple[float, float]], delta: float, accountant: str) -> float:
    """The reference: a fresh Opacus accountant stepped once per round."""
    acc = OPACUS[accountant]()
    for sigma, q in rounds:
        acc.step(noise_multiplier=sigma, sample_rate=q)
    return float(acc.get_epsilon(delta))


SETTINGS = [
    # (q, σ, rounds, δ)
    (100 / 763430, 1.0, 5000, 1e-9),  # a large population sampled thinly: PRV ≪ RDP
    (0.1, 1.1, 100, 1e-5),
    (0.5, 2.0, 5, 1e-5),
    (1.0, 1.0, 3, 1e-5),  # every client every round
    (0.01, 0.8, 1000, 1e-6),
    (0.2, 5.0, 1, 1e-5),
]


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
@pytest.mark.parametrize(("q", "sigma", "rounds", "delta"), SETTINGS)
def test_epsilon_equals_opacus_stepped_round_by_round(q, sigma, rounds, delta, accountant):
    ledger = PrivacyLedger()
    for _ in range(rounds):
        ledger.record(sigma, q)
    assert ledger.history == [(sigma, q, rounds)] and ledger.rounds == rounds
    expected = _opacus_epsilon([(sigma, q)] * rounds, delta, accountant)
    assert math.isfinite(expected) and expected > 0
    assert ledger.epsilon(delta, accountant) == pytest.approx(expected, rel=1e-6)


def test_prv_is_much_tighter_than_rdp_for_a_thinly_sampled_large_population():
    history = [(1.0, 100 / 763430, 5000)]
    rdp, prv = epsilon(history, 1e-9, "rdp"), epsilon(history, 1e-9, "prv")
    assert 0 < prv < rdp / 2, (prv, rdp)


def test_the_ledger_merges_repeats_and_starts_a_new_entry_when_q_or_sigma_changes():
    ledger = PrivacyLedger()
    for q in (0.5, 0.5, 1.0, 1.0, 1.0, 0.5):
        ledger.record(1.0, q)
    ledger.record(1.5, 0.5, rounds=3)
    ledger.record(1.5, 0.5)
    assert ledger.history == [(1.0, 0.5, 2), (1.0, 1.0, 3), (1.0, 0.5, 1), (1.5, 0.5, 4)]
    assert ledger.rounds == 10
    rounds = [(1.0, 0.5)] * 2 + [(1.0, 1.0)] * 3 + [(1.0, 0.5)] + [(1.5, 0.5)] * 4
    assert ledger.epsilon(1e-5) == pytest.approx(_opacus_epsilon(rounds, 1e-5, "rdp"), rel=1e-6)


def test_a_changing_sample_rate_costs_more_than_the_lower_one_and_less_than_the_higher():
    mixed = PrivacyLedger()
    for q in [0.05, 0.2] * 2:
        mixed.record(1.0, q)
    assert len(mixed.history) == 4
    low, high = [(1.0, 0.05, 4)], [(1.0, 0.2, 4)]
    eps = mixed.epsilon(1e-5)
    assert epsilon(low, 1e-5, "rdp") < eps < epsilon(high, 1e-5, "rdp")
    reference = _opacus_epsilon([(1.0, 0.05), (1.0, 0.2)] * 2, 1e-5, "rdp")
    assert eps == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_no_rounds_spend_nothing(accountant):
    assert PrivacyLedger().epsilon(1e-5, accountant) == 0.0
    assert epsilon([], 1e-5, accountant) == 0.0
    assert epsilon([(1.0, 0.1, 0)], 1e-5, accountant) == 0.0
    assert PrivacyLedger().rounds == 0


@settings(max_examples=6, deadline=None)
@given(
    q=st.floats(min_value=1e-3, max_value=1.0),
    sigma=st.floats(min_value=0.5, max_value=8.0),
    rounds=st.integers(min_value=1, max_value=500),
    delta=st.sampled_from([1e-5, 1e-7]),
)
def test_rdp_epsilon_grows_with_every_round(q, sigma, rounds, delta):
    before = epsilon([(sigma, q, rounds)], delta, "rdp")
    after = epsilon([(sigma, q, rounds + 1)], delta, "rdp")
    assert 0 < before <= after
    # and falls as the noise grows
    assert epsilon([(sigma * 1.5, q, rounds)], delta, "rdp") <= before


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_epsilon_grows_along_a_run(accountant):
    eps = [epsilon([(1.0, 0.1, r)], 1e-5, accountant) for r in (1, 2, 5, 50)]
    assert all(a < b for a, b in itertools.pairwise(eps)), eps


@pytest.mark.parametrize(
    ("target", "delta", "q", "rounds", "accountant"),
    [
        (2.0, 1e-5, 0.1, 20, "rdp"),
        (8.0, 1e-5, 1.0, 5, "rdp"),
        (0.5, 1e-6, 0.01, 1000, "rdp"),
        (1.0, 1e-5, 1.0, 3, "rdp"),
        (1.0, 1e-9, 100 / 763430, 5000, "rdp"),
        (3.0, 1e-5, 1.0, 10, "prv"),
    ],
)
def test_noise_for_target_reaches_the_target_within_one_percent_from_below(
    target, delta, q, rounds, accountant
):
    sigma = noise_for_target(target, delta, q, rounds, accountant)
    reached = epsilon([(sigma, q, rounds)], delta, accountant)
    assert 0.99 * target <= reached <= target, (sigma, reached)
    # the smallest such σ: 1% less noise overshoots
    assert epsilon([(sigma * 0.99, q, rounds)], delta, accountant) > target


@pytest.mark.parametrize("target", [0.0, -1.0])
def test_noise_for_target_refuses_a_target_that_is_not_positive(target):
    with pytest.raises(ValueError, match="target epsilon must be > 0"):
        noise_for_target(target, 1e-5, 0.1, 10)


@pytest.mark.parametrize("accountant", ["RDP", "gdp", "moments", ""])
def test_an_unknown_accountant_is_refused(accountant):
    with pytest.raises(ValueError, match="accountant must be one of"):
        epsilon([(1.0, 0.1, 1)], 1e-5, accountant)
    with pytest.raises(ValueError, match="accountant must be one of"):
        PrivacyLedger(history=[(1.0, 0.1, 1)]).epsilon(1e-5, accountant)
    with pytest.raises(ValueError, match="accountant must be one of"):
        noise_for_target(1.0, 1e-5, 0.1, 10, accountant)
