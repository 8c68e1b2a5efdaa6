"""``strategy.server_lr`` / ``--server-lr``: FedAvg's server learning rate, end to end."""

from __future__ import annotations

import numpy as np
import pytest

from fedops.cli.configs import config_of as _config
from fedops.cli.parser import build_parser
from fedops.config.hydra_app import compose_settings
from fedops.core.results import FitResult
from fedops.core.strategies import FedAvg, FedProx
from fedops.runtime.rules import ConfigError
from fedops.runtime.run import make_strategy
from fedops.runtime.simulate_settings import validate


def _results() -> list[FitResult]:
    return [
        FitResult(node_id="a", params={"w": np.array([1.0], np.float32)}, num_examples=1),
        FitResult(node_id="b", params={"w": np.array([4.0], np.float32)}, num_examples=2),
    ]


@pytest.mark.parametrize(("lr", "expected"), [(1.0, 3.0), (0.5, 1.5), (2.0, 6.0)])
def test_the_model_moves_lr_times_the_mean_update(lr: float, expected: float):
    # mean = (1 * 1 + 2 * 4) / 3 = 3 from w = 0: moved by lr * 3
    out = FedAvg(server_lr=lr).aggregate_fit(1, {"w": np.zeros(1, np.float32)}, _results())
    assert out["w"].dtype == np.float32 and out["w"][0] == pytest.approx(expected)


def test_integer_tensors_take_the_mean():
    results = [
        FitResult(node_id=n, params={"steps": np.array([v])}, num_examples=1)
        for n, v in (("a", 4), ("b", 6))
    ]
    out = FedAvg(server_lr=0.5).aggregate_fit(1, {"steps": np.array([0])}, results)
    assert out["steps"].dtype == np.array([0]).dtype and out["steps"][0] == 5


def test_the_flag_and_the_key_reach_fedavg_and_fedprox():
    args = build_parser().parse_args(["coordinator", "--server-lr", "0.5"])
    assert make_strategy(_config(args).strategy) == FedAvg(server_lr=0.5)
    settings = validate(compose_settings("strategy=fedprox", "strategy.server_lr=0.25"))
    assert make_strategy(settings.strategy) == FedProx(server_lr=0.25, mu=0.01)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["strategy.server_lr=0"], "must be a number > 0"),
        (["strategy.server_lr=inf"], "must be a number > 0"),
        (["strategy=median", "strategy.server_lr=0.5"], "has no effect with strategy median"),
    ],
)
def test_a_bad_or_unread_server_lr_is_refused_by_its_key(overrides: list[str], words: str):
    with pytest.raises(ConfigError) as refused:
        validate(compose_settings(*overrides))
    assert refused.value.key == "strategy.server_lr" and words in refused.value.message
