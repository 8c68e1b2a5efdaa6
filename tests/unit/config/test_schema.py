"""Unit tests for the configuration schemas: every refused value names its key.

The schemas are re-exported by :mod:`fedops.config` and defined in
:mod:`fedops.runtime.settings` (with the address helpers).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedops.config import (
    ClientConfig,
    ClientTrainConfig,
    ConfigError,
    CoordinatorConfig,
    StrategyConfig,
)
from fedops.runtime.settings import as_dict, is_loopback, parse_address


def _key(factory, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        factory(**kwargs)
    assert str(info.value).startswith(f"{info.value.key}: ")
    return info.value.key


def test_defaults_are_valid():
    CoordinatorConfig()
    ClientConfig()


def test_config_error_carries_key_and_message():
    err = ConfigError("rounds", "must be >= 1, got 0")
    assert (err.key, err.message, str(err)) == (
        "rounds",
        "must be >= 1, got 0",
        "rounds: must be >= 1, got 0",
    )
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"rounds": 0}, "rounds"),
        ({"min_clients": 0}, "min_clients"),
        ({"clients_per_round": 0}, "clients_per_round"),
        ({"strategy": StrategyConfig(name="fedsgd")}, "strategy.name"),
        ({"strategy": StrategyConfig(name="fedprox", mu=-0.1)}, "strategy.mu"),
        ({"partition": "shards"}, "partition"),
        ({"alpha": 0.0}, "alpha"),
        ({"round_timeout_s": 0.0}, "round_timeout_s"),
        ({"join_timeout_s": -1.0}, "join_timeout_s"),
        ({"liveness_timeout_s": 0.5}, "liveness_timeout_s"),
        ({"keep_checkpoints": 0}, "keep_checkpoints"),
        ({"min_fit_results": 0}, "min_fit_results"),
        ({"min_fit_results": 5, "clients_per_round": 3}, "min_fit_results"),
        ({"heartbeat_interval_s": 0.0}, "heartbeat_interval_s"),
        ({"heartbeat_interval_s": 20.0}, "heartbeat_interval_s"),  # beyond liveness (10 s)
        ({"max_workers": 3}, "max_workers"),
        ({"address": "8765"}, "address"),
        ({"address": "127.0.0.1:99999"}, "address"),
        ({"address": ":8765"}, "address"),
    ],
)
def test_coordinator_errors_name_the_key(kwargs, key):
    assert _key(CoordinatorConfig, **kwargs) == key


def test_rounds_zero_message():
    with pytest.raises(ConfigError, match="rounds: must be >= 1, got 0") as info:
        CoordinatorConfig(rounds=0)
    assert info.value.key == "rounds"


@pytest.mark.parametrize("address", ["0.0.0.0:8765", "10.1.2.3:8765", "example.org:443", "[::]:80"])
def test_non_loopback_address_needs_insecure(address):
    with pytest.raises(ConfigError, match="--insecure") as info:
        CoordinatorConfig(address=address)
    assert info.value.key == "address"
    assert CoordinatorConfig(address=address, insecure=True).address == address


@pytest.mark.parametrize(
    "address", ["127.0.0.1:1", "127.9.9.9:8765", "localhost:8765", "[::1]:8765"]
)
def test_loopback_addresses_are_accepted(address):
    assert CoordinatorConfig(address=address).address == address


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"site": 2, "num_sites": 2}, "site"),
        ({"site": -1, "num_sites": 2}, "site"),
        ({"num_sites": 0}, "num_sites"),
        ({"task": None}, "task"),
        ({"coordinator": "nohost"}, "coordinator"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_lr": float("nan")}, "max_lr"),
        ({"max_lr": 0.0}, "max_lr"),
    ],
)
def test_client_errors_name_the_key(kwargs, key):
    assert _key(ClientConfig, **kwargs) == key


@pytest.mark.parametrize(
    ("train", "key"),
    [
        (ClientTrainConfig(epochs=0), "client.epochs"),
        (ClientTrainConfig(epochs=101), "client.epochs"),  # past every site's bound
        (ClientTrainConfig(batch_size=0), "client.batch_size"),
        (ClientTrainConfig(lr=0.0), "client.lr"),
        (ClientTrainConfig(lr=float("inf")), "client.lr"),
        (ClientTrainConfig(lr_decay=0.0), "client.lr_decay"),
        (ClientTrainConfig(lr_decay=1.01), "client.lr_decay"),
        (ClientTrainConfig(optimizer="lbfgs"), "client.optimizer"),
        (ClientTrainConfig(momentum=1.0), "client.momentum"),
        # Adam has no momentum term: the setting would be ignored
        (ClientTrainConfig(optimizer="adam", momentum=0.9), "client.momentum"),
    ],
)
def test_the_runs_training_errors_name_the_key(train, key):
    """The run owns the training settings: the coordinator refuses what every site would."""
    assert _key(CoordinatorConfig, train=train) == key


def test_site_out_of_range_message_names_num_sites():
    with pytest.raises(ConfigError, match=r"must be in \[0, 3\) for --num-sites 3, got 3") as info:
        ClientConfig(site=3, num_sites=3)
    assert info.value.key == "site"


def test_parse_address():
    assert parse_address("x", "host.example:80") == ("host.example", 80)
    assert parse_address("x", "[::1]:9") == ("::1", 9)
    with pytest.raises(ConfigError) as info:
        parse_address("coordinator", "host:port")
    assert info.value.key == "coordinator"


def test_is_loopback():
    assert is_loopback("localhost")
    assert is_loopback("127.0.0.1") and is_loopback("::1")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.168.1.1")
    assert not is_loopback("my-laptop")


def test_as_dict_turns_paths_into_strings():
    d = as_dict(CoordinatorConfig(run_dir=Path("/tmp/x"), rounds=2))
    assert d["run_dir"] == "/tmp/x"
    assert d["rounds"] == 2
    assert d["task"] is None
    assert d["min_clients"] == 2
