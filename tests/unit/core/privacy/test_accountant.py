"""Unit tests for fedops.core.privacy.accountant against Google's dp_accounting as the oracle.

Every expected ε here is composed in the test with dp_accounting's own
accountants and events, built by hand from the mechanism's description (not
through :meth:`RoundEvent.dp_event`), at dp_accounting's default
discretisation; fedops' coarser PLD interval rounds pessimistically, so its ε
may only lie above the oracle's, by little.
"""

from __future__ import annotations

import math

import dp_accounting as dpa
import pytest
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from dp_accounting.rdp.rdp_privacy_accountant import RdpAccountant

from fedops.core.privacy.accountant import (
    PrivacyLedger,
    RoundEvent,
    epsilon,
    epsilon_text,
    noise_for_target,
)

REL = dpa.NeighboringRelation


def poisson(sigma: float, q: float) -> RoundEvent:
    return RoundEvent(noise_multiplier=sigma, sampling="poisson", sample_rate=q)


def known(sigma: float) -> RoundEvent:
    return RoundEvent(noise_multiplier=sigma, sampling="known")


def fixed(sigma: float, n: int, m: int) -> RoundEvent:
    return RoundEvent(noise_multiplier=sigma, sampling="fixed", population=n, sample_size=m)


def oracle(events: list[tuple[object, int]], delta: float, kind: str, relation=None) -> float:
    acc = (
        PLDAccountant(neighboring_relation=relation or REL.ADD_OR_REMOVE_ONE)
        if kind == "pld"
        else RdpAccountant(neighboring_relation=relation or REL.ADD_OR_REMOVE_ONE)
    )
    for event, count in events:
        acc.compose(event, count)
    return float(acc.get_epsilon(delta))


def close_above(ours: float, truth: float) -> None:
    """Pessimistic rounding: never below the oracle, and within 0.5% (+1e-3) of it."""
    assert ours >= truth - 1e-9, (ours, truth)
    assert ours <= truth * 1.005 + 1e-3, (ours, truth)


POISSON = [
    # (q, σ, rounds, δ)
    (0.1, 1.0, 20, 1e-5),  # the README's headline run: 100 of 1000, 20 rounds
    (0.01, 0.8, 1000, 1e-6),
    (0.5, 2.0, 5, 1e-5),
    (1.0, 1.0, 3, 1e-5),  # every client every round
    (100 / 763430, 1.0, 5000, 1e-9),  # a large population sampled thinly
]


@pytest.mark.parametrize(("q", "sigma", "rounds", "delta"), POISSON)
def test_poisson_rounds_are_dp_accountings_poisson_sampled_gaussian(q, sigma, rounds, delta):
    ledger = PrivacyLedger()
    for _ in range(rounds):
        ledger.record(poisson(sigma, q))
    assert ledger.rounds == rounds and len(ledger.history) == 1  # repeats merge
    event = dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma))
    close_above(ledger.epsilon(delta), oracle([(event, rounds)], delta, "pld"))
    # RDP: fedops' orders include dp_accounting's, so its ε is at most the oracle's
    ours, truth = ledger.epsilon(delta, "rdp"), oracle([(event, rounds)], delta, "rdp")
    assert ours <= truth + 1e-12 and ours >= 0.9 * truth, (ours, truth)


@pytest.mark.parametrize(("sigma", "rounds"), [(1.0, 20), (3.0, 100), (0.7, 1)])
def test_known_participation_is_the_gaussian_mechanism_without_amplification(sigma, rounds):
    ledger = PrivacyLedger([(known(sigma), rounds)])
    truth = oracle([(dpa.GaussianDpEvent(sigma), rounds)], 1e-5, "pld")
    close_above(ledger.epsilon(1e-5), truth)
    # no amplification: the same σ sampled at q = 1 is the same mechanism
    close_above(PrivacyLedger([(poisson(sigma, 1.0), rounds)]).epsilon(1e-5), truth)


def test_the_headline_run_reports_more_without_amplification_than_with_it():
    """Issue 16, finding 4: against a party that knows who took part, ε is 3x larger."""
    sampled = PrivacyLedger([(poisson(1.0, 0.1), 20)]).epsilon(1e-5)
    knowing = PrivacyLedger([(known(1.0), 20)]).epsilon(1e-5)
    assert knowing > 2 * sampled


@pytest.mark.parametrize(("n", "m", "sigma", "rounds"), [(1000, 100, 1.0, 20), (50, 10, 2.0, 30)])
def test_fixed_size_sampling_is_without_replacement_under_replace_one_at_half_sigma(
    n, m, sigma, rounds
):
    """Replacing one client's clipped update by any other moves the sum by up to 2C."""
    ledger = PrivacyLedger([(fixed(sigma, n, m), rounds)])
    assert ledger.headline_accountant() == "rdp" and ledger.adjacency == "replace-one"
    event = dpa.SampledWithoutReplacementDpEvent(n, m, dpa.GaussianDpEvent(sigma / 2))
    truth = oracle([(event, rounds)], 1e-5, "rdp", REL.REPLACE_ONE)
    ours = ledger.epsilon(1e-5)
    assert ours <= truth + 1e-12 and ours >= 0.9 * truth, (ours, truth)
    with pytest.raises(ValueError, match="no event for sampling without replacement"):
        ledger.epsilon(1e-5, "pld")


def test_fixed_size_headline_is_above_the_published_lower_bound():
    """Lebeda, Regehr, Kamath, Steinke 2024: σ=1, 100 of 1000, 20 rounds, δ=1e-5 spends at
    least 4.59 under substitution; the old accountant reported 4.22."""
    assert PrivacyLedger([(fixed(1.0, 1000, 100), 20)]).epsilon(1e-5) >= 4.59


def test_a_history_of_different_rounds_composes_like_the_oracle():
    ledger = PrivacyLedger()
    for event in [poisson(1.0, 0.5)] * 2 + [poisson(1.5, 1.0)] + [poisson(1.0, 0.5)]:
        ledger.record(event)
    assert [n for _, n in ledger.history] == [2, 1, 1]
    g = dpa.GaussianDpEvent
    truth = oracle(
        [
            (dpa.PoissonSampledDpEvent(0.5, g(1.0)), 3),
            (dpa.PoissonSampledDpEvent(1.0, g(1.5)), 1),
        ],
        1e-5,
        "pld",
    )
    close_above(ledger.epsilon(1e-5), truth)


def test_rounds_of_different_adjacency_cannot_share_a_ledger():
    ledger = PrivacyLedger([(poisson(1.0, 0.1), 3)])
    with pytest.raises(ValueError, match="one adjacency"):
        ledger.record(fixed(1.0, 100, 10))


def test_the_ledger_round_trips_through_json_and_refuses_what_it_cannot_read():
    ledger = PrivacyLedger()
    ledger.record(poisson(1.0, 0.2), 3)
    ledger.record(poisson(0.8, 0.25))
    again = PrivacyLedger.from_json(ledger.to_json())
    assert again == ledger and again.epsilon(1e-5) == ledger.epsilon(1e-5)
    for bad in (
        {"events": []},
        [{"noise_multiplier": 1.0, "sampling": "poisson", "sample_rate": 0.1}],  # no rounds
        [{"noise_multiplier": 1.0, "sampling": "poisson", "sample_rate": 0.1, "rounds": 0}],
        [{"noise_multiplier": 1.0, "sampling": "poisson", "sample_rate": 2.0, "rounds": 1}],
        [{"noise_multiplier": -1.0, "sampling": "known", "rounds": 1}],
        [{"noise_multiplier": 1.0, "sampling": "secret", "rounds": 1}],
        [{"noise_multiplier": 1.0, "sampling": "known", "rounds": 1, "extra": 1}],
    ):
        with pytest.raises((ValueError, KeyError, TypeError)):
            PrivacyLedger.from_json(bad)


def test_no_rounds_spend_nothing_and_a_round_without_noise_spends_infinity():
    assert PrivacyLedger().epsilon(1e-5) == 0.0
    assert PrivacyLedger([(known(0.0), 1)]).epsilon(1e-5) == math.inf
    assert epsilon_text(math.inf) == "inf" and epsilon_text(1.5) == 1.5


@pytest.mark.parametrize("delta", [0.0, 1.0, 5.0, -1e-5, math.nan])
def test_a_delta_outside_zero_one_is_refused(delta):
    with pytest.raises(ValueError, match="δ must be in"):
        epsilon([(poisson(1.0, 0.1), 1)], delta, "pld")


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
@pytest.mark.parametrize(("target", "q", "rounds"), [(1.0, 0.1, 20), (4.0, 0.5, 10), (8.0, 1.0, 3)])
def test_noise_for_target_reaches_the_target_within_a_percent_from_below(
    accountant, target, q, rounds
):
    sigma = noise_for_target(target, 1e-5, poisson(1.0, q), rounds, accountant)
    spent = epsilon([(poisson(sigma, q), rounds)], 1e-5, accountant)
    assert 0.99 * target <= spent <= target
    event = dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma))
    assert oracle([(event, rounds)], 1e-5, accountant) <= target * 1.001


def test_a_small_target_calibrates_where_orders_up_to_63_could_not():
    """Opacus's orders stop at 63: its RDP ε floor at δ=1e-5 was ~0.103."""
    sigma = noise_for_target(0.05, 1e-5, poisson(1.0, 0.1), 20, "rdp")
    assert epsilon([(poisson(sigma, 0.1), 20)], 1e-5, "rdp") <= 0.05


@pytest.mark.parametrize("target", [0.0, -1.0, math.inf, math.nan])
def test_noise_for_target_refuses_a_target_that_is_not_a_positive_number(target):
    with pytest.raises(ValueError, match="target epsilon"):
        noise_for_target(target, 1e-5, poisson(1.0, 0.1), 10)
