"""Unit tests for fedops.core.strategies (FedAvg, FedProx) and fedops.core.results."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedops.core.results import EvaluateResult, FitResult, weighted_metrics
from fedops.core.strategies import STRATEGIES, FedAvg, FedProx


def _fit(node: str, w: list[float], b: float, n: int, **metrics: float) -> FitResult:
    return FitResult(
        node_id=node,
        params={"w": np.array(w, np.float32), "b": np.array([b], np.float64)},
        num_examples=n,
        metrics=metrics,
    )


def test_registry_maps_names_to_classes():
    assert {"fedavg": FedAvg, "fedprox": FedProx}.items() <= STRATEGIES.items()
    assert FedAvg().name == "fedavg"
    assert FedProx().name == "fedprox"


def test_fedavg_weights_by_num_examples_hand_computed():
    results = [
        _fit("a", [0.0, 10.0], 1.0, n=1),
        _fit("b", [4.0, 2.0], 5.0, n=3),
        _fit("c", [8.0, -4.0], 0.0, n=4),
    ]
    current = {"w": np.array([100.0, 100.0], np.float32), "b": np.array([100.0])}
    out = FedAvg().aggregate_fit(1, current, results)
    # w0: (0*1 + 4*3 + 8*4)/8 = 44/8 = 5.5 ; w1: (10 + 6 - 16)/8 = 0 ; b: (1 + 15 + 0)/8 = 2
    np.testing.assert_array_equal(out["w"], np.array([5.5, 0.0], np.float32))
    np.testing.assert_array_equal(out["b"], np.array([2.0]))
    assert out["w"].dtype == np.float32
    assert list(out) == ["w", "b"]


def test_fedavg_is_not_the_unweighted_mean():
    results = [_fit("a", [0.0], 0.0, n=1), _fit("b", [9.0], 0.0, n=2)]
    out = FedAvg().aggregate_fit(1, {"w": np.zeros(1, np.float32), "b": np.zeros(1)}, results)
    assert out["w"][0] == pytest.approx(6.0)  # unweighted would be 4.5


def test_fedavg_without_results_keeps_the_current_model():
    current = {"w": np.array([1.0, 2.0], np.float32), "b": np.array([3.0])}
    assert FedAvg().aggregate_fit(4, current, []) is current


def test_fedavg_sends_no_hyperparameters():
    assert FedAvg().fit_config(1) == {}


def test_fedavg_aggregate_evaluate_weights_metrics_by_examples():
    results = [
        EvaluateResult(node_id="a", num_examples=1, metrics={"accuracy": 0.0, "loss": 2.0}),
        EvaluateResult(node_id="b", num_examples=3, metrics={"accuracy": 1.0, "loss": 1.0}),
    ]
    assert FedAvg().aggregate_evaluate(1, results) == {"accuracy": 0.75, "loss": 1.25}


def test_fedprox_sends_proximal_mu_every_round():
    strategy = FedProx(mu=0.25)
    assert strategy.fit_config(1) == {"proximal_mu": 0.25}
    assert strategy.fit_config(7) == {"proximal_mu": 0.25}
    assert FedProx().fit_config(1) == {"proximal_mu": 0.01}
    assert FedProx(mu=0).fit_config(1) == {"proximal_mu": 0.0}


@pytest.mark.parametrize("mu", [-0.01, -1.0])
def test_fedprox_refuses_negative_mu(mu):
    with pytest.raises(ValueError, match="mu must be >= 0"):
        FedProx(mu=mu)


def test_fedprox_aggregates_exactly_like_fedavg():
    results = [_fit("a", [1.0, 2.0], 3.0, n=2), _fit("b", [3.0, 0.0], 1.0, n=6)]
    current = {"w": np.zeros(2, np.float32), "b": np.zeros(1)}
    prox = FedProx(mu=1.0).aggregate_fit(2, current, results)
    avg = FedAvg().aggregate_fit(2, current, results)
    for name in avg:
        np.testing.assert_array_equal(prox[name], avg[name])
    # w0: (2 + 18)/8 = 2.5 ; w1: 4/8 = 0.5 ; b: (6 + 6)/8 = 1.5
    np.testing.assert_array_equal(prox["w"], np.array([2.5, 0.5], np.float32))
    np.testing.assert_array_equal(prox["b"], np.array([1.5]))


def test_strategies_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FedProx(mu=0.1).mu = 5.0  # type: ignore[misc]


# --- weighted_metrics -------------------------------------------------------------------------


def test_weighted_metrics_keeps_only_metrics_every_result_reports():
    results = [
        _fit("a", [0.0], 0.0, n=1, train_loss=4.0, extra=1.0),
        _fit("b", [0.0], 0.0, n=3, train_loss=0.0),
    ]
    assert weighted_metrics(results) == {"train_loss": 1.0}


def test_weighted_metrics_skips_results_without_examples():
    results = [
        EvaluateResult(node_id="a", num_examples=0, metrics={"accuracy": 0.0}),
        EvaluateResult(node_id="b", num_examples=2, metrics={"accuracy": 0.5}),
    ]
    assert weighted_metrics(results) == {"accuracy": 0.5}


def test_weighted_metrics_of_nothing_is_empty():
    assert weighted_metrics([]) == {}
    assert weighted_metrics([EvaluateResult(node_id="a", num_examples=0, metrics={"x": 1.0})]) == {}
