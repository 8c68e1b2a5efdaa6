"""Unit tests for fedops.runtime.privacy: budgets, σ=auto, resume, what is claimed against whom.

Expected ε are composed here with Google's dp_accounting from the mechanism's
description (the oracle), never read back from the object under test.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from dp_accounting.rdp.rdp_privacy_accountant import RdpAccountant

from fedops.core.privacy.central import AdaptiveClipping
from fedops.core.results import FitResult
from fedops.core.secagg.policy import implied_noise_multiplier
from fedops.core.secagg.update import round_encoding
from fedops.core.strategies import FedAvg
from fedops.core.training import TrainConfig, get_params
from fedops.runtime.driver import DriverConfig, RoundDriver
from fedops.runtime.privacy import (
    BudgetExhausted,
    CentralPrivacy,
    DistributedPrivacy,
    LocalPrivacy,
    PrivacySettings,
    RoundSample,
    privacy_round,
    restore_ledger,
)
from fedops.runtime.store import RunStore
from fedops.simulation.inmemory import InMemoryTransport
from fedops.tasks import load_task
from fedops.tasks.site import Site

NODES = [f"n{i:02d}" for i in range(10)]


def _current() -> dict[str, np.ndarray]:
    return {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}


def _results(current, nodes, scale: float = 2.0) -> list[FitResult]:
    rng = np.random.default_rng(len(nodes))
    return [
        FitResult(
            node_id=node,
            params={
                k: (v + scale * rng.normal(size=v.shape)).astype(v.dtype)
                for k, v in current.items()
            },
            num_examples=10,
        )
        for node in nodes
    ]


def _round(dp: CentralPrivacy, server_round: int, per_round: int, nodes=NODES):
    """One round as the driver runs it: sample, check the budget, aggregate, spend."""
    params = _current()
    sample = dp.sample(nodes, per_round, server_round)
    dp.begin_round(server_round, sample, params)
    new = dp.aggregate(server_round, params, _results(params, sample.selected), sample=sample)
    dp.spend(sample.selected)
    return sample, new


def _pld(events, delta=1e-5, relation=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE) -> float:
    acc = PLDAccountant(neighboring_relation=relation)
    for event, count in events:
        acc.compose(event, count)
    return float(acc.get_epsilon(delta))


def _poisson(sigma: float, q: float):
    return dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma))


# -- central DP: sampling and the budget -----------------------------------------------------
def test_central_dp_samples_poisson_with_a_fixed_denominator_and_accounts_it():
    dp = CentralPrivacy(PrivacySettings(noise_multiplier=1.1), planned_rounds=50)
    sizes = []
    for server_round in range(1, 31):
        sample, _ = _round(dp, server_round, 3)
        assert sample.denominator == 3.0 and sample.population == 10
        sizes.append(len(sample.selected))
    assert len(set(sizes)) > 1  # a Poisson cohort's size varies; a fixed one would not
    close = _pld([(_poisson(1.1, 0.3), 30)])
    assert close <= dp.epsilon() <= close * 1.005 + 1e-3


def test_the_budget_stops_before_the_first_round_that_would_exceed_it():
    target, sigma, q = 4.0, 1.0, 0.2
    stop = 1
    while _pld([(_poisson(sigma, q), stop)]) <= target:
        stop += 1
    dp = CentralPrivacy(
        PrivacySettings(noise_multiplier=sigma, target_epsilon=target), planned_rounds=100
    )
    for server_round in range(1, stop):
        _round(dp, server_round, 2)
    spent = dp.epsilon()
    assert dp.ledger.rounds == stop - 1 and spent <= target
    sample = dp.sample(NODES, 2, stop)
    with pytest.raises(BudgetExhausted) as info:
        dp.begin_round(stop, sample, _current())
    message = str(info.value)
    assert "privacy.target_epsilon" in message and f"ε={target:g}" in message, message
    assert f"round {stop} could raise" in message and f"after {stop - 1} rounds" in message
    assert dp.ledger.rounds == stop - 1 and dp.epsilon() == spent  # the refusal spent nothing


def test_fixed_size_sampling_is_accounted_without_replacement_under_replace_one():
    dp = CentralPrivacy(
        PrivacySettings(noise_multiplier=1.0, sampling="fixed", accountant="rdp"),
        planned_rounds=5,
    )
    for server_round in (1, 2, 3):
        sample, _ = _round(dp, server_round, 4)
        assert len(sample.selected) == 4
    acc = RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
    acc.compose(dpa.SampledWithoutReplacementDpEvent(10, 4, dpa.GaussianDpEvent(0.5)), 3)
    truth = float(acc.get_epsilon(1e-5))
    assert truth * 0.9 <= dp.epsilon() <= truth + 1e-12
    assert "replace-one" in dp.guarantee() and "RDP" in dp.guarantee()


@pytest.mark.parametrize(("per_round", "rounds"), [(2, 5), (10, 4)])
def test_auto_noise_spends_at_most_the_target_over_the_planned_rounds(per_round, rounds):
    target, q = 2.0, per_round / 10
    dp = CentralPrivacy(
        PrivacySettings(noise_multiplier=None, target_epsilon=target), planned_rounds=rounds
    )
    for server_round in range(1, rounds + 1):
        _round(dp, server_round, per_round)
    sigma = dp.sigma
    assert sigma is not None and sigma > 0
    truth = _pld([(_poisson(sigma, q), rounds)])
    assert 0.98 * target <= truth <= dp.epsilon() <= target
    with pytest.raises(BudgetExhausted, match=r"privacy\.target_epsilon"):
        dp.begin_round(rounds + 1, dp.sample(NODES, per_round, rounds + 1), _current())


def test_publishing_the_participants_accounts_without_amplification():
    dp = CentralPrivacy(
        PrivacySettings(noise_multiplier=1.0, publish_participants=True), planned_rounds=5
    )
    for server_round in (1, 2, 3):
        _round(dp, server_round, 2)
    close = _pld([(dpa.GaussianDpEvent(1.0), 3)])
    assert close <= dp.epsilon() <= close * 1.005 + 1e-3
    assert "no amplification" in dp.guarantee()


def test_the_guarantee_reports_both_the_amplified_and_the_known_participation_bound():
    dp = CentralPrivacy(PrivacySettings(noise_multiplier=1.0), planned_rounds=5)
    for server_round in (1, 2, 3):
        _round(dp, server_round, 2)
    m = dp.metrics()
    known = _pld([(dpa.GaussianDpEvent(1.0), 3)])
    assert known <= m["epsilon_known_participants"] <= known * 1.005 + 1e-3
    assert m["epsilon"] < m["epsilon_known_participants"]
    sentence = dp.guarantee()
    for words in (
        "secret Poisson sampling",
        "add/remove-one",
        "PLD accountant",
        "reads the run's records",
        "none against the coordinator",
    ):
        assert words in sentence, (words, sentence)


# -- what is released ----------------------------------------------------------------------------
def test_under_dp_the_sites_are_not_asked_to_evaluate_unless_their_metrics_are_released(
    tmp_path,
):
    """Red team, issue 16: the sampled sites' eval metrics named the secret cohort."""
    task = load_task("digits")
    asked = []

    class Recording(InMemoryTransport):
        def dispatch(self, server_round, nodes, instruction):
            asked.append(str(instruction.phase))
            return super().dispatch(server_round, nodes, instruction)

    for release in (False, True):
        asked.clear()
        sites = [
            Site(task, site=i, num_sites=3, train_config=TrainConfig(epochs=1)) for i in range(3)
        ]
        RoundDriver(
            transport=Recording(sites),
            strategy=FedAvg(),
            config=DriverConfig(rounds=1, min_clients=3),
            store=RunStore(tmp_path / str(release)),
            plugins=[
                privacy_round(PrivacySettings(release_site_metrics=release), planned_rounds=1)
            ],
        ).run(get_params(task.build_model()))
        assert ("evaluate" in asked) is release, asked
        metrics = RunStore(tmp_path / str(release)).round_metrics()[-1]
        assert ("eval_accuracy" in metrics) is release and ("train_loss" in metrics) is release


def test_metrics_release_no_exact_statistic_of_the_updates():
    dp = CentralPrivacy(
        PrivacySettings(noise_multiplier=1.1, adaptive=AdaptiveClipping(count_noise=5.0)),
        planned_rounds=3,
    )
    _round(dp, 1, 5)
    m = dp.metrics()
    assert "dp_clipped_fraction" not in m
    assert {"epsilon", "epsilon_rdp", "delta", "accountant", "privacy_event"} <= set(m)
    assert m["privacy_event"] == {
        "noise_multiplier": 1.1,
        "sampling": "poisson",
        "sample_rate": 0.5,
    }
    assert "dp_noised_unclipped_fraction" in m  # adaptive clipping's count, noised and paid for


def test_a_round_without_noise_reports_epsilon_as_the_string_inf():
    dp = CentralPrivacy(PrivacySettings(noise_multiplier=0.0), planned_rounds=2)
    _round(dp, 1, 5)
    assert dp.metrics()["epsilon"] == "inf"


def test_a_seeded_run_says_it_is_not_private_and_an_unseeded_one_draws_fresh_noise():
    seeded = [CentralPrivacy(PrivacySettings(seed=3), planned_rounds=2) for _ in range(2)]
    a, b = (_round(dp, 1, 5) for dp in seeded)
    assert a[0].selected == b[0].selected
    np.testing.assert_array_equal(a[1]["w"], b[1]["w"])
    assert "NOT private" in seeded[0].guarantee()
    fresh = [CentralPrivacy(PrivacySettings(), planned_rounds=2) for _ in range(2)]
    c, d = (_round(dp, 1, 10) for dp in fresh)  # q = 1: the same cohort, noise differs
    assert not np.array_equal(c[1]["w"], d[1]["w"])
    assert "NOT private" not in fresh[0].guarantee()


# -- resume --------------------------------------------------------------------------------------
def test_a_restored_ledger_continues_like_an_uninterrupted_run():
    settings = PrivacySettings(
        noise_multiplier=1.2, clip_norm=0.5, adaptive=AdaptiveClipping(count_noise=5.0)
    )
    whole = CentralPrivacy(settings, planned_rounds=4)
    for server_round in (1, 2):
        _round(whole, server_round, 5)
    saved = whole.ledger_json()
    resumed = CentralPrivacy(settings, planned_rounds=4)
    restore_ledger(resumed, saved, [{"epsilon": 1.0}])
    assert resumed.ledger == whole.ledger and resumed.clip_norm == whole.clip_norm
    for dp in (whole, resumed):
        _round(dp, 3, 10)  # q = 1: the same event for both
    assert resumed.ledger == whole.ledger and resumed.epsilon() == whole.epsilon()


def test_a_run_that_spent_dp_rounds_but_lost_its_ledger_refuses_to_resume():
    dp = CentralPrivacy(PrivacySettings(), planned_rounds=4)
    with pytest.raises(ValueError, match="no committed privacy ledger"):
        restore_ledger(dp, None, [{"round": 1, "epsilon": 0.8}])
    restore_ledger(dp, None, [{"round": 1}])  # rounds before DP was on: nothing to restore


def test_the_driver_commits_the_ledger_before_the_noised_model_reaches_evaluators(tmp_path):
    """A coordinator that crashes after sending the round's model must still count it."""

    class CrashAtEvaluation(InMemoryTransport):
        def dispatch(self, server_round, nodes, instruction):
            if str(instruction.phase) == "evaluate":
                raise SystemExit("the coordinator crashed while sending the model")
            return super().dispatch(server_round, nodes, instruction)

    task = load_task("digits")
    sites = [Site(task, site=i, num_sites=3, train_config=TrainConfig(epochs=1)) for i in range(3)]
    store = RunStore(tmp_path)
    # the sites evaluate under DP only when their metrics are released
    settings = PrivacySettings(noise_multiplier=1.0, release_site_metrics=True)
    driver = RoundDriver(
        transport=CrashAtEvaluation(sites),
        strategy=FedAvg(),
        config=DriverConfig(rounds=2, min_clients=3),
        store=store,
        plugins=[privacy_round(settings, planned_rounds=2)],
    )
    with pytest.raises(SystemExit):
        driver.run(get_params(task.build_model()))
    assert store.last_round() is None  # the round never committed …
    saved = store.privacy_ledger()
    assert saved is not None  # … but its ε is on disk
    assert sum(e["rounds"] for e in saved["events"]) == 1


# -- distributed DP ------------------------------------------------------------------------------
def _distributed(*, rounds: int = 50, **kw) -> DistributedPrivacy:
    settings = PrivacySettings(
        noise_multiplier=kw.pop("sigma", 1.0), clip_norm=0.5, mode="distributed", **kw
    )
    return DistributedPrivacy(settings, planned_rounds=rounds)


def _expected_effective(sigma, cohort, survivors, colluders, d, clip=0.5) -> float:
    """The grid scales the noise to cover the rounding: σ survives it whole."""
    return sigma * math.sqrt((survivors - colluders) / cohort)


@pytest.mark.parametrize(("survivors", "colluders"), [(10, 0), (6, 0), (10, 3), (6, 2)])
def test_distributed_dp_accounts_dropouts_colluders_and_rounding_without_amplification(
    survivors, colluders
):
    dp = _distributed(colluders=colluders)
    params = {"w": np.zeros(100_000, np.float32)}
    sample = dp.sample(NODES, 10, 1)
    dp.begin_round(1, sample, params)
    assert dp.secure_noise() == (1.0, 0.5)
    dp.spend([SimpleNamespace(metrics={})] * survivors)
    expected = _expected_effective(1.0, 10, survivors, colluders, 100_000)
    assert dp.metrics()["effective_noise_multiplier"] == pytest.approx(expected, rel=1e-12)
    truth = _pld([(dpa.GaussianDpEvent(expected), 1)])
    assert truth <= dp.epsilon() <= truth * 1.005 + 1e-3
    assert "no amplification" in dp.guarantee() and "against the coordinator" in dp.guarantee()


@pytest.mark.parametrize(("cohort", "d"), [(10, 10), (10, 10_000_000), (1000, 100_000)])
def test_the_grid_covers_the_rounding_so_the_site_and_the_accountant_agree(cohort, d):
    """Stochastic rounding adds up to √d grid units to a clipped update (issue 16, finding
    9): the coordinator scales the noise to σ·(S + √d) words, and a site's policy, which
    counts the rounding in the sensitivity, sees exactly σ."""
    encoding = round_encoding(
        summands=cohort, cohort=cohort, clip=0.5, max_examples=1, noise=(1.0, 0.5), dimension=d
    )
    assert implied_noise_multiplier(encoding, cohort, d) == pytest.approx(1.0, rel=1e-9)
    plain = round_encoding(
        summands=cohort, cohort=cohort, clip=0.5, max_examples=1, noise=(1.0, 0.5)
    )
    assert implied_noise_multiplier(plain, cohort, d) < 1.0  # without it, less than claimed


def test_distributed_budget_never_overshoots_when_rounds_end_at_the_fewest_survivors():
    """Issue 16, finding 7: the budget was checked with the nominal σ and dropouts cut it
    after (target 6 ended at 6.027); now it is checked with the fewest survivors."""
    target = 6.0
    dp = _distributed(sigma=3.0, target_epsilon=target, min_survivors=3)
    params = {"w": np.zeros(1000, np.float32)}
    rounds = 0
    for server_round in range(1, 200):
        sample = dp.sample(NODES, 10, server_round)
        try:
            dp.begin_round(server_round, sample, params)
        except BudgetExhausted:
            break
        dp.spend([SimpleNamespace(metrics={})] * 3)  # every round ends with the fewest
        rounds += 1
    assert rounds > 1 and dp.epsilon() <= target
    sigma = _expected_effective(3.0, 10, 3, 0, 1000)
    assert _pld([(dpa.GaussianDpEvent(sigma), rounds)]) <= target


def test_auto_noise_under_distributed_dp_reaches_the_target_with_the_fewest_survivors():
    target, rounds = 3.0, 5
    dp = _distributed(sigma=None, target_epsilon=target, min_survivors=4, rounds=rounds)
    params = {"w": np.zeros(1000, np.float32)}
    for server_round in range(1, rounds + 1):
        dp.begin_round(server_round, dp.sample(NODES, 10, server_round), params)
        dp.spend([SimpleNamespace(metrics={})] * 4)
    assert 0.95 * target <= dp.epsilon() <= target


def test_colluders_that_leave_no_honest_noise_give_infinite_epsilon():
    dp = _distributed(colluders=10)
    dp.begin_round(1, RoundSample(selected=NODES, population=10, denominator=10), _current())
    dp.spend([SimpleNamespace(metrics={})] * 10)
    assert dp.metrics()["epsilon"] == "inf"


# -- local DP --------------------------------------------------------------------------------
def test_local_dp_refuses_a_noise_multiplier_and_a_target_together():
    """Issue 16, finding 7: target_epsilon was silently ignored beside an explicit σ."""
    with pytest.raises(ValueError, match="not both"):
        LocalPrivacy(
            PrivacySettings(mode="local", noise_multiplier=1.0, target_epsilon=1.0),
            planned_rounds=3,
        )


def test_local_dp_reports_what_it_asked_for_and_no_site_epsilon():
    """Issue 16 (red team F1): a site's ε depends on its record count, so the sites keep
    it; the coordinator reports σ, clip, δ and where each site's ε is kept."""
    dp = LocalPrivacy(PrivacySettings(mode="local", delta=1e-6), planned_rounds=3)
    dp.spend([SimpleNamespace(metrics={}), SimpleNamespace(metrics={})])
    dp.spend([SimpleNamespace(metrics={})])
    again = LocalPrivacy(PrivacySettings(mode="local", delta=1e-6), planned_rounds=3)
    again.restore(dp.ledger_json())
    assert again.rounds == 2
    metrics = again.metrics()
    assert not any(key.startswith("epsilon") for key in metrics), metrics
    assert (metrics["noise_multiplier"], metrics["clip_norm"], metrics["delta"]) == (1.0, 1.0, 1e-6)
    assert "Poisson sampling of records" in metrics["privacy_mechanism"]
    assert "own privacy ledger" in metrics["privacy_mechanism"]
    assert "coordinator" in metrics["privacy_holds_against"]
    sentence = again.guarantee()
    assert "ε=" not in sentence and "2 rounds" in sentence, sentence
    for words in ("coordinator", "Poisson sampling of records", "--max-epsilon", "audit log"):
        assert words in sentence, (words, sentence)
    assert "weights the DP sites equally" in sentence
    # a ledger an older fedops committed (with the largest ε sites then reported) restores
    old = LocalPrivacy(PrivacySettings(mode="local"), planned_rounds=3)
    old.restore({"epsilon": 0.9, "site_delta": 1e-5, "rounds": 4})
    assert old.rounds == 4 and "epsilon" not in old.metrics()


# -- monitoring beside DP --------------------------------------------------------------------
def test_monitoring_is_off_under_dp_unless_asked_for_and_then_says_it_is_outside_dp(caplog):
    """Issue 16, finding 8: drift histograms and fairness counts ran by default under DP."""
    from fedops.coordinator.app import _monitoring
    from fedops.runtime.round_monitor import OUTSIDE_DP
    from fedops.runtime.schema import MonitoringConfig, PrivacyConfig
    from fedops.runtime.settings import CoordinatorConfig

    central = PrivacyConfig(name="central")
    assert _monitoring(CoordinatorConfig()) is not None  # no DP: on by default
    assert _monitoring(CoordinatorConfig(privacy=central)) is None
    assert OUTSIDE_DP not in caplog.text
    explicit = CoordinatorConfig(privacy=central, monitoring=MonitoringConfig(name="default"))
    assert _monitoring(explicit) is not None
    assert OUTSIDE_DP in caplog.text


def test_central_dp_refuses_a_minimum_of_updates_it_would_not_honour():
    from fedops.runtime.schema import PrivacyConfig
    from fedops.runtime.settings import ConfigError, CoordinatorConfig

    with pytest.raises(ConfigError) as info:
        CoordinatorConfig(
            privacy=PrivacyConfig(name="central"), clients_per_round=5, min_fit_results=2
        )
    assert info.value.key == "min_fit_results" and "noised mean" in str(info.value)


def test_a_distributed_round_that_aborted_before_the_sum_spends_nothing():
    """Red team, issue 16: an aborted SecAgg round was charged as σ = 0, so ε became ∞ and
    any one site able to abort a round could end the run."""
    dp = _distributed(target_epsilon=20.0)
    params = {"w": np.zeros(100, np.float32)}
    dp.begin_round(1, dp.sample(NODES, 10, 1), params)
    dp.spend([])  # nothing unmasked
    assert dp.ledger.rounds == 0 and dp.epsilon() == 0.0
    dp.begin_round(2, dp.sample(NODES, 10, 2), params)  # the budget still allows rounds
    dp.spend([SimpleNamespace(metrics={})] * 10)
    assert dp.ledger.rounds == 1 and 0 < dp.epsilon() < 20.0
