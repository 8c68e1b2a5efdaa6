"""``trimmed_mean`` is refused at configuration time when it would trim nothing.

With ``n`` clients a round it drops ``floor(trim_fraction * n)`` values at each end;
the default 0.1 drops none below 10 clients, and the plain mean lets one site set
the model (red team B8: 3 sites, the model went to float32-max). The refusal names
``strategy.trim_fraction`` and the smallest fraction that drops one at each end.
"""

from __future__ import annotations

import pytest

from fedops.config.hydra_app import compose_settings
from fedops.runtime.schema import StrategyConfig
from fedops.runtime.settings import ConfigError, CoordinatorConfig
from fedops.runtime.simulate_settings import validate


def _coordinator(fraction: float, **settings: int) -> CoordinatorConfig:
    strategy = StrategyConfig(name="trimmed_mean", trim_fraction=fraction)
    return CoordinatorConfig(strategy=strategy, **settings)


@pytest.mark.parametrize(
    ("fraction", "settings", "smallest"),
    [
        (0.1, {"min_clients": 3}, "0.334"),  # the red team's run
        (0.1, {"min_clients": 5}, "0.2"),
        (0.2, {"min_clients": 20, "clients_per_round": 4}, "0.25"),  # 4 sampled a round
        (0.1, {"min_clients": 7}, "0.143"),
    ],
)
def test_a_fraction_that_trims_nothing_is_refused_with_the_one_that_would(
    fraction: float, settings: dict[str, int], smallest: str
):
    with pytest.raises(ConfigError) as refused:
        _coordinator(fraction, **settings)
    assert refused.value.key == "strategy.trim_fraction"
    assert f"use trim_fraction >= {smallest} to drop one at each end" in refused.value.message
    fixed = _coordinator(float(smallest), **settings)  # and the suggestion is accepted
    assert fixed.strategy.trim_fraction == float(smallest)


def test_two_clients_a_round_cannot_be_trimmed_at_all():
    with pytest.raises(ConfigError) as refused:
        _coordinator(0.4, min_clients=2)
    assert refused.value.key == "strategy.trim_fraction"
    assert "at least 3 clients per round" in refused.value.message


def test_enough_clients_for_the_fraction_pass():
    assert _coordinator(0.1, min_clients=10).strategy.trim_fraction == 0.1
    assert _coordinator(0.25, min_clients=4).strategy.trim_fraction == 0.25


def test_a_simulation_is_checked_against_its_clients_per_round():
    with pytest.raises(ConfigError) as refused:  # 5 clients (the default), 0.1
        validate(compose_settings("strategy=trimmed_mean"))
    assert refused.value.key == "strategy.trim_fraction"
    assert "trim_fraction >= 0.2" in refused.value.message
    validate(compose_settings("strategy=trimmed_mean", "simulation.num_clients=10"))
    validate(compose_settings("strategy=trimmed_mean", "strategy.trim_fraction=0.2"))
