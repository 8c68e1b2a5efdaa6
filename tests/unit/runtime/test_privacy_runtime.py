"""Unit tests for fedops.runtime.privacy.CentralPrivacy: the budget, σ=auto, resume, reporting.

The expected rounds and ε are computed here with the accountant directly
(:func:`fedops.core.privacy.accountant.epsilon`), never read back from the
object under test.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import pytest

from fedops.core.privacy.accountant import epsilon
from fedops.core.privacy.central import AdaptiveClipping
from fedops.core.results import FitResult
from fedops.runtime import privacy
from fedops.runtime.privacy import BudgetExhausted, CentralPrivacy, PrivacySettings


@pytest.fixture(autouse=True)
def _quiet_opacus():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _current() -> dict[str, np.ndarray]:
    return {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}


def _results(current, n: int, scale: float = 2.0) -> list[FitResult]:
    rng = np.random.default_rng(n)
    return [
        FitResult(
            node_id=f"site-{i}",
            params={
                k: (v + scale * rng.normal(size=v.shape)).astype(v.dtype)
                for k, v in current.items()
            },
            num_examples=10 + i,
        )
        for i in range(n)
    ]


def _round(dp: CentralPrivacy, server_round: int, sampled: int, population: int, params=None):
    """One round as the driver runs it: budget check, then the private aggregate."""
    params = _current() if params is None else params
    dp.check_budget(server_round, sampled, population)
    return dp.aggregate(
        server_round,
        params,
        _results(params, sampled),
        sampled=sampled,
        population=population,
    )


def _first_round_over(target: float, sigma: float, q: float, delta: float = 1e-5) -> int:
    r = 1
    while epsilon([(sigma, q, r)], delta, "rdp") <= target:
        r += 1
    return r


# -- the budget --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sigma", "sampled", "population", "target"),
    [(1.0, 2, 10, 4.0), (1.0, 10, 10, 8.0), (2.0, 10, 10, 5.0)],
)
def test_the_budget_stops_exactly_at_the_first_round_that_would_exceed_it(
    sigma, sampled, population, target
):
    q = sampled / population
    stop = _first_round_over(target, sigma, q)
    assert stop > 1  # the premise: some rounds fit
    dp = CentralPrivacy(
        PrivacySettings(noise_multiplier=sigma, target_epsilon=target, seed=0),
        planned_rounds=100,
    )
    for server_round in range(1, stop):
        _round(dp, server_round, sampled, population)
    assert dp.ledger.rounds == stop - 1
    spent = dp.ledger.epsilon(1e-5)
    assert spent <= target
    with pytest.raises(BudgetExhausted) as info:
        dp.check_budget(stop, sampled, population)
    message = str(info.value)
    assert "privacy.target_epsilon" in message and f"ε={target:g}" in message, message
    assert f"round {stop} would raise" in message and f"after {stop - 1} rounds" in message
    # the refused round spent nothing
    assert dp.ledger.rounds == stop - 1 and dp.ledger.epsilon(1e-5) == spent


def test_a_target_below_one_round_stops_before_the_first():
    dp = CentralPrivacy(
        PrivacySettings(noise_multiplier=0.5, target_epsilon=0.1, seed=0), planned_rounds=5
    )
    with pytest.raises(BudgetExhausted, match=r"ε=0\.1\b.*privacy\.target_epsilon.*after 0 rounds"):
        dp.check_budget(1, 10, 10)
    assert dp.ledger.rounds == 0


def test_without_a_target_the_budget_never_stops_the_run():
    dp = CentralPrivacy(PrivacySettings(noise_multiplier=0.3, seed=0), planned_rounds=3)
    for server_round in range(1, 6):
        _round(dp, server_round, 10, 10)
    assert dp.ledger.rounds == 5 and dp.ledger.epsilon(1e-5) > 50


# -- noise_multiplier=auto ---------------------------------------------------------------------
@pytest.mark.parametrize(("sampled", "population", "rounds"), [(2, 10, 5), (10, 10, 4)])
def test_auto_noise_spends_the_target_over_the_planned_rounds(sampled, population, rounds):
    target, q = 2.0, sampled / population
    dp = CentralPrivacy(
        PrivacySettings(noise_multiplier=None, target_epsilon=target, seed=0),
        planned_rounds=rounds,
    )
    assert dp.sigma is None
    dp.check_budget(1, sampled, population)
    sigma = dp.sigma
    assert sigma is not None and sigma > 0
    dp.aggregate(
        1, _current(), _results(_current(), sampled), sampled=sampled, population=population
    )
    for server_round in range(2, rounds + 1):
        _round(dp, server_round, sampled, population)
    assert dp.sigma == sigma  # derived once
    spent = dp.ledger.epsilon(1e-5)
    assert 0.99 * target <= spent <= target
    assert spent == pytest.approx(epsilon([(sigma, q, rounds)], 1e-5, "rdp"), rel=1e-9)
    with pytest.raises(BudgetExhausted, match=r"privacy\.target_epsilon"):
        dp.check_budget(rounds + 1, sampled, population)


def test_auto_noise_without_a_target_is_refused():
    with pytest.raises(ValueError, match="target_epsilon"):
        CentralPrivacy(PrivacySettings(noise_multiplier=None), planned_rounds=3)


# -- resume --------------------------------------------------------------------------------------
def _stored_rows(dp: CentralPrivacy, rounds: range, schedule) -> list[dict[str, Any]]:
    """Run ``rounds`` and return their metric rows the way RunStore.round_metrics gives them."""
    rows = []
    for server_round in rounds:
        sampled, population = schedule(server_round)
        _round(dp, server_round, sampled, population)
        rows.append({"round": server_round, "num_clients": sampled, **dp.metrics()})
    return rows


def _schedule(server_round: int) -> tuple[int, int]:
    return (10, 10) if server_round % 3 == 0 else (5, 10)  # q changes between rounds


@pytest.fixture
def rdp_only(monkeypatch: pytest.MonkeyPatch):
    """Skip the PRV ε beside RDP's (seconds for a mixed history; not what is checked here)."""
    monkeypatch.setattr(privacy, "PRV_MAX_ENTRIES", -1)


@pytest.mark.usefixtures("rdp_only")
def test_a_restored_ledger_and_clip_norm_continue_like_an_uninterrupted_run():
    settings = PrivacySettings(
        noise_multiplier=1.2,
        clip_norm=0.5,
        adaptive=AdaptiveClipping(count_noise=5.0),  # the clip norm is restored too
        seed=3,
    )
    whole = CentralPrivacy(settings, planned_rounds=4)
    rows = _stored_rows(whole, range(1, 5), _schedule)

    resumed = CentralPrivacy(settings, planned_rounds=4)
    # a row without DP keys (a round committed before privacy was on) is skipped
    resumed.restore([{"round": 0, "num_clients": 3}, *rows[:2]])
    assert resumed.ledger.rounds == 2
    assert resumed.clip_norm == pytest.approx(rows[1]["next_clip_norm"])
    assert resumed.ledger.epsilon(1e-5) == pytest.approx(rows[1]["epsilon"], rel=1e-12)
    for server_round in (3, 4):
        sampled, population = _schedule(server_round)
        _round(resumed, server_round, sampled, population)
    assert resumed.ledger.history == whole.ledger.history
    assert resumed.ledger.epsilon(1e-5) == pytest.approx(rows[-1]["epsilon"], rel=1e-12)
    expected = epsilon([(1.2, 0.5, 2), (1.2, 1.0, 1), (1.2, 0.5, 1)], 1e-5, "rdp")
    assert rows[-1]["epsilon"] == pytest.approx(expected, rel=1e-9)
    assert [r["epsilon"] for r in rows] == sorted(r["epsilon"] for r in rows)


@pytest.mark.usefixtures("rdp_only")
def test_restore_keeps_an_auto_sigma_and_the_budget_counts_the_restored_rounds():
    settings = PrivacySettings(noise_multiplier=None, target_epsilon=3.0, seed=0)
    whole = CentralPrivacy(settings, planned_rounds=3)
    rows = _stored_rows(whole, range(1, 4), lambda r: (10, 10))
    resumed = CentralPrivacy(settings, planned_rounds=3)
    resumed.restore(rows)
    assert resumed.sigma == whole.sigma  # not derived again
    with pytest.raises(BudgetExhausted, match=r"round 4 .*ε=3\b.*privacy\.target_epsilon"):
        resumed.check_budget(4, 10, 10)


def test_a_resumed_run_never_repeats_the_noise_of_an_earlier_round():
    def noises(dp: CentralPrivacy, rounds: range) -> list[np.ndarray]:
        out = []
        for server_round in rounds:
            current = _current()
            dp.check_budget(server_round, 4, 10)
            # every client sends the model back unchanged: the result is current + noise / 4
            same = [FitResult(node_id=f"n{i}", params=current, num_examples=1) for i in range(4)]
            new = dp.aggregate(server_round, current, same, sampled=4, population=10)
            out.append(np.concatenate([np.ravel(new[k]) for k in ("w", "b")]) * 4)
        return out

    settings = PrivacySettings(noise_multiplier=1.0, seed=7)
    whole = CentralPrivacy(settings, planned_rounds=3)
    before = noises(whole, range(1, 3))
    rows = [{"noise_multiplier": 1.0, "sample_rate": 0.4, "clip_norm": 1.0}] * 2
    resumed = CentralPrivacy(settings, planned_rounds=3)
    resumed.restore(rows)
    (after,) = noises(resumed, range(3, 4))
    assert np.any(after != 0)
    for earlier in before:
        assert not np.allclose(after, earlier), "round 3 re-used an earlier round's noise"


# -- what is reported --------------------------------------------------------------------------
def test_metrics_report_epsilon_delta_and_the_round_parameters():
    dp = CentralPrivacy(
        PrivacySettings(noise_multiplier=1.1, clip_norm=0.8, delta=1e-6, seed=0),
        planned_rounds=3,
    )
    assert dp.metrics()["epsilon"] == 0.0
    _round(dp, 1, 5, 10)
    _round(dp, 2, 5, 10)
    m = dp.metrics()
    assert set(m) == {
        "epsilon",
        "epsilon_prv",
        "delta",
        "noise_multiplier",
        "clip_norm",
        "next_clip_norm",
        "dp_clipped_fraction",
        "sample_rate",
    }
    assert m["epsilon"] == pytest.approx(epsilon([(1.1, 0.5, 2)], 1e-6, "rdp"), rel=1e-12)
    assert m["epsilon_prv"] == pytest.approx(epsilon([(1.1, 0.5, 2)], 1e-6, "prv"), rel=1e-9)
    assert 0 < m["epsilon_prv"] < m["epsilon"]
    assert (m["delta"], m["noise_multiplier"], m["clip_norm"], m["next_clip_norm"]) == (
        1e-6,
        1.1,
        0.8,
        0.8,
    )
    assert m["sample_rate"] == 0.5
    assert m["dp_clipped_fraction"] == 1.0  # updates of norm ~2·√8 against a clip of 0.8


def test_with_the_prv_accountant_epsilon_is_prv_and_reported_once():
    dp = CentralPrivacy(PrivacySettings(accountant="prv", seed=0), planned_rounds=2)
    _round(dp, 1, 10, 10)
    m = dp.metrics()
    assert "epsilon_prv" not in m
    assert m["epsilon"] == pytest.approx(epsilon([(1.0, 1.0, 1)], 1e-5, "prv"), rel=1e-9)


def test_the_guarantee_names_epsilon_delta_rounds_and_clients_per_round():
    dp = CentralPrivacy(
        PrivacySettings(noise_multiplier=1.5, clip_norm=2.0, seed=0), planned_rounds=3
    )
    for server_round in (1, 2, 3):
        _round(dp, server_round, 3, 10)
    sentence = dp.guarantee()
    eps = epsilon([(1.5, 0.3, 3)], 1e-5, "rdp")
    assert f"ε={eps:.3g}" in sentence, sentence
    assert "δ=1e-05" in sentence
    assert "over 3 rounds" in sentence
    assert "3 of 10 clients per round" in sentence
    assert "RDP" in sentence and "σ=1.5" in sentence and "clip 2" in sentence
    assert "adaptive" not in sentence


def test_the_guarantee_of_a_run_whose_sample_rate_changed_omits_clients_per_round():
    dp = CentralPrivacy(PrivacySettings(seed=0), planned_rounds=3)
    _round(dp, 1, 5, 10)
    _round(dp, 2, 10, 10)
    sentence = dp.guarantee()
    assert "over 2 rounds" in sentence and "clients per round" not in sentence
    assert re.search(r"ε=[0-9.]+", sentence), sentence


def test_the_guarantee_before_any_round_says_zero_and_auto():
    dp = CentralPrivacy(
        PrivacySettings(
            noise_multiplier=None, target_epsilon=1.0, adaptive=AdaptiveClipping(), seed=0
        ),
        planned_rounds=3,
    )
    sentence = dp.guarantee()
    assert "ε=0" in sentence and "over 0 rounds" in sentence
    assert "σ=auto" in sentence and "adaptive" in sentence


def test_distributed_dp_accounts_dropouts_with_less_noise():
    from types import SimpleNamespace

    from fedops.runtime.privacy import DistributedPrivacy

    settings = PrivacySettings(noise_multiplier=1.0, clip_norm=0.5, delta=1e-5, mode="distributed")
    full = DistributedPrivacy(settings, planned_rounds=5)
    partial = DistributedPrivacy(settings, planned_rounds=5)
    for dp, survivors in ((full, 10), (partial, 6)):
        dp.check_budget(1, sampled=10, population=100)
        assert dp.secure_noise() == (1.0, 0.5)
        m = dp.metrics([SimpleNamespace(metrics={})] * survivors)
        assert m["effective_noise_multiplier"] == pytest.approx(np.sqrt(survivors / 10))
    assert partial.ledger.epsilon(1e-5) > full.ledger.epsilon(1e-5)  # less noise: more ε
    assert full.ledger.history == [(1.0, 0.1, 1)]
