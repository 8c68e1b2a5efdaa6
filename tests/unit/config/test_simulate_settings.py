"""The simulator's config tree: composition by Hydra, validation naming dotted keys."""

from __future__ import annotations

import pytest
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from fedops.config.hydra_app import compose_settings
from fedops.runtime.settings import ConfigError
from fedops.runtime.simulate_settings import SimulateConfig, validate


def _compose(*overrides: str) -> SimulateConfig:
    return compose_settings(*overrides)


def test_defaults_compose_and_validate():
    cfg = validate(_compose())
    assert (cfg.dataset.name, cfg.partition.name, cfg.strategy.name) == (
        "digits",
        "dirichlet",
        "fedavg",
    )
    assert cfg.simulation.backend == "vectorized"
    assert (cfg.client.epochs, cfg.client.batch_size, cfg.client.lr) == (5, 16, 0.5)


def test_group_and_key_overrides():
    cfg = validate(
        _compose(
            "strategy=fedprox",
            "strategy.mu=0.1",
            "dataset=synthetic",
            "simulation.num_clients=1000",
            "client.epochs=1",
        )
    )
    assert cfg.strategy.name == "fedprox" and cfg.strategy.mu == 0.1
    assert cfg.dataset.name == "synthetic" and cfg.dataset.num_features == 60
    assert cfg.simulation.num_clients == 1000 and cfg.client.epochs == 1


def test_unknown_key_fails_at_composition_naming_it():
    with pytest.raises((ConfigKeyError, ConfigAttributeError, Exception)) as info:
        _compose("strategy.muu=1")
    assert "muu" in str(info.value)


def test_wrong_type_fails_naming_the_key():
    with pytest.raises(Exception) as info:
        _compose("rounds=abc")
    assert "rounds" in str(info.value) or isinstance(info.value, ValidationError)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("rounds=0", "rounds"),
        ("simulation.num_clients=0", "simulation.num_clients"),
        ("simulation.clients_per_round=9", "simulation.clients_per_round"),
        ("simulation.backend=gpu", "simulation.backend"),
        ("simulation.dropout_rate=1.0", "simulation.dropout_rate"),
        ("simulation.min_fit_results=0", "simulation.min_fit_results"),
        ("simulation.min_fit_results=6", "simulation.min_fit_results"),  # of 5 clients
        ("client.lr=0", "client.lr"),
        ("client.batch_size=0", "client.batch_size"),
        ("partition.alpha=0", "partition.alpha"),
        ("strategy.mu=-1", "strategy.mu"),
        ("model.name=resnet", "model.name"),
        ("dataset.name=mnist", "dataset.name"),
    ],
)
def test_validation_names_the_dotted_key(override: str, key: str):
    with pytest.raises(ConfigError) as info:
        validate(_compose(override))
    assert info.value.key == key


@pytest.mark.parametrize(
    ("scenario", "dataset", "clients"),
    [
        ("fleet_1000", "synthetic", 1000),
        ("hospitals_20", "digits", 20),
        ("banks_5", "breast_cancer", 5),
    ],
)
def test_scenarios_compose_and_validate(scenario: str, dataset: str, clients: int):
    from fedops.config.hydra_app import SCENARIO_DIR

    cfg = validate(_compose(f"hydra.searchpath=[file://{SCENARIO_DIR}]", f"+scenario={scenario}"))
    assert cfg.dataset.name == dataset
    assert cfg.simulation.num_clients == clients
