"""The optional strategy hooks: a fit config per client, and a strategy's own fit metrics."""

from __future__ import annotations

import doctest
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from fedops.core.results import FitResult, StageResult
from fedops.core.strategies import (
    ClientConfigStrategy,
    ClientInfo,
    FedAvg,
    FedProx,
    FitMetricsStrategy,
    client_fit_configs,
    fit_metrics,
    hooks,
)


@dataclass(frozen=True)
class PerClient(FedProx):
    """Gives the client at an odd index its own proximal_mu and a custom key."""

    extra: Mapping[str, object] | None = None

    def client_fit_config(
        self, server_round: int, client: ClientInfo, base: Mapping[str, float]
    ) -> dict[str, float]:
        if self.extra is not None:
            return dict(self.extra)  # type: ignore[arg-type]
        if client.index % 2:
            return {"proximal_mu": base["proximal_mu"] * 10, "tau": server_round + 0.5}
        return {}


@dataclass(frozen=True)
class Spread(FedAvg):
    """Reports the spread of the clients' train losses instead of their mean."""

    out: Mapping[str, object] | None = None

    def aggregate_fit_metrics(
        self, server_round: int, results: Sequence[FitResult | StageResult]
    ) -> dict[str, float]:
        if self.out is not None:
            return dict(self.out)  # type: ignore[arg-type]
        losses = [r.metrics["train_loss"] for r in results]
        return {"train_loss": min(losses), "train_loss_spread": max(losses) - min(losses)}


def _cohort(*nodes: str) -> list[ClientInfo]:
    return [
        ClientInfo(node_id=n, site=f"hospital-{n}", index=i, cohort_size=len(nodes))
        for i, n in enumerate(nodes)
    ]


def _fit(node: str, n: int, loss: float) -> FitResult:
    return FitResult(node_id=node, params={}, num_examples=n, metrics={"train_loss": loss})


BASE = {"proximal_mu": 0.1, "seed": 7.0}


def test_the_protocols_recognise_only_strategies_with_the_method():
    assert isinstance(PerClient(), ClientConfigStrategy)
    assert not isinstance(FedProx(), ClientConfigStrategy)
    assert isinstance(Spread(), FitMetricsStrategy)
    assert not isinstance(PerClient(), FitMetricsStrategy)


def test_a_strategy_without_the_hook_sends_every_client_the_base():
    assert client_fit_configs(FedProx(), 1, _cohort("a", "b"), BASE) == {}


def test_each_client_gets_the_base_updated_by_its_own_keys():
    configs = client_fit_configs(PerClient(), 3, _cohort("a", "b", "c"), BASE)
    assert configs == {
        "a": {"proximal_mu": 0.1, "seed": 7.0},
        "b": {"proximal_mu": 1.0, "seed": 7.0, "tau": 3.5},  # 0.1 * 10, round 3 + 0.5
        "c": {"proximal_mu": 0.1, "seed": 7.0},
    }
    assert all(type(v) is float for config in configs.values() for v in config.values())


@pytest.mark.parametrize(
    "key", ["seed", "server-round", "epochs", "lr", "lr_decay", "dp_noise_multiplier", "secagg_x"]
)
def test_a_key_the_run_owns_is_refused_by_name(key: str):
    with pytest.raises(ValueError, match=rf"sets '{key}', a key the run owns"):
        client_fit_configs(PerClient(extra={key: 1.0}), 1, _cohort("a"), BASE)


def test_a_key_a_round_plugin_added_is_refused():
    strategy = PerClient(extra={"fairness_weight": 2.0})
    assert client_fit_configs(strategy, 1, _cohort("a"), BASE)["a"]["fairness_weight"] == 2.0
    with pytest.raises(ValueError, match="'fairness_weight', a key the run owns"):
        client_fit_configs(strategy, 1, _cohort("a"), BASE, reserved={"fairness_weight"})


@pytest.mark.parametrize("value", ["0.5", True, None, [1.0]])
def test_a_value_that_is_not_a_number_is_refused(value: object):
    with pytest.raises(ValueError, match="is not a number"):
        client_fit_configs(PerClient(extra={"proximal_mu": value}), 1, _cohort("a"), BASE)


def test_the_default_fit_metrics_are_the_weighted_mean_train_loss():
    results = [_fit("a", 1, 2.0), _fit("b", 3, 6.0)]
    assert fit_metrics(FedAvg(), 1, results) == {"train_loss": 5.0}  # (2 + 18) / 4
    assert fit_metrics(FedAvg(), 1, []) == {}


def test_a_strategy_reduces_the_fit_metrics_its_own_way():
    results = [_fit("a", 1, 2.0), _fit("b", 3, 6.0), _fit("c", 2, 3.0)]
    assert fit_metrics(Spread(), 1, results) == {"train_loss": 2.0, "train_loss_spread": 4.0}


def test_a_hook_without_train_loss_keeps_the_mean_beside_its_own():
    results = [_fit("a", 1, 2.0), _fit("b", 3, 6.0)]
    assert fit_metrics(Spread(out={"max": 6.0}), 1, results) == {"train_loss": 5.0, "max": 6.0}


def test_secure_aggregation_reports_reach_the_hook_as_well():
    reported = [StageResult(node_id="a", reply=None, num_examples=2, metrics={"train_loss": 1.5})]
    assert fit_metrics(Spread(), 1, reported) == {"train_loss": 1.5, "train_loss_spread": 0.0}


@pytest.mark.parametrize("name", ["num_clients", "eval_accuracy", "duration_s", "round", ""])
def test_a_metric_name_the_round_line_holds_is_refused(name: str):
    with pytest.raises(ValueError, match="already holds"):
        fit_metrics(Spread(out={name: 1.0}), 1, [_fit("a", 1, 1.0)])


def test_a_metric_that_is_not_a_number_is_refused():
    with pytest.raises(ValueError, match="is not a number"):
        fit_metrics(Spread(out={"median": "1"}), 1, [_fit("a", 1, 1.0)])
    nan = fit_metrics(Spread(out={"median": np.float32("nan")}), 1, [_fit("a", 1, 1.0)])
    assert math.isnan(nan["median"])  # numpy scalars are numbers; NaN is as train_loss's


def test_the_module_example_runs():
    assert doctest.testmod(hooks).failed == 0
