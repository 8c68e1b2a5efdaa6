"""A malicious site against FedAvg and the robust strategies, simulated end to end.

Ten digits sites (IID split) train a logistic regression for five rounds with
``simulation=sequential``. Site 0 is malicious: it trains honestly, then sends
``global - 10 * (trained - global)``, a scaled sign flip of its update. FedAvg
follows it; the coordinate-wise median, the trimmed mean, Krum and multi-Krum
do not. Without the attacker every strategy learns about equally well.

The task is a user task file written to ``tmp_path``; the malicious site is
the one whose training data carries ``malicious = True``.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from fedops.cli import main as cli_main
from fedops.config.hydra_app import compose_settings
from fedops.core.strategies import Krum, Median, MultiKrum, TrimmedMean
from fedops.runtime.schema import StrategyConfig
from fedops.runtime.settings import ConfigError, CoordinatorConfig
from fedops.runtime.simulate_settings import SimulateConfig, validate
from fedops.simulation.engine import run_simulation

TASK = textwrap.dedent(
    """
    import torch
    from torch.utils.data import TensorDataset

    from fedops.core import training
    from fedops.tasks.digits import make_task

    MALICIOUS_SITE = {malicious}
    SCALE = 10.0
    _DIGITS = make_task(model="logreg", partition="iid", seed=0)
    build_model = _DIGITS.build_model
    load_server_data = _DIGITS.load_server_data


    class MaliciousData(TensorDataset):
        malicious = True


    def load_data(site, num_sites):
        (x, y), test = _DIGITS.load_data(site, num_sites)
        if site == MALICIOUS_SITE:
            return MaliciousData(torch.as_tensor(x), torch.as_tensor(y)), test
        return (x, y), test


    def train(model, data, config):
        if not getattr(data, "malicious", False):
            return training.train(model, data, config)
        # the model arrives loaded with the global parameters: remember them
        start = {{k: v.detach().clone() for k, v in model.state_dict().items()}}
        metrics = training.train(model, data, config)
        with torch.no_grad():
            for name, value in model.state_dict().items():
                if value.is_floating_point():
                    value.copy_(start[name] - SCALE * (value - start[name]))
        return metrics
    """
)

ROBUST = ("median", "trimmed_mean", "krum", "multi_krum")
ROUNDS = 5


def _compose(*overrides: str) -> SimulateConfig:
    return compose_settings(*overrides)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """``{attacked: task file}``: site 0 malicious, or no malicious site."""
    root = tmp_path_factory.mktemp("robust_tasks")
    files = {}
    for attacked in (True, False):
        path = root / f"digits_{'attacked' if attacked else 'clean'}.py"
        path.write_text(TASK.format(malicious=0 if attacked else None))
        files[attacked] = path
    return files


@pytest.fixture(scope="module")
def accuracy(
    tasks: dict[bool, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, bool], float]:
    """Final global accuracy of every strategy, with and without the attacker (run once)."""
    out = {}
    for strategy in ("fedavg", *ROBUST):
        for attacked, task in tasks.items():
            cfg = _compose(
                f"task={task}",
                "simulation=sequential",
                "simulation.num_clients=10",
                f"rounds={ROUNDS}",
                "client.epochs=3",
                f"strategy={strategy}",
            )
            run_dir = tmp_path_factory.mktemp(f"{strategy}_{attacked}")
            summary = run_simulation(validate(cfg), run_dir)
            assert summary["status"] == "completed", summary
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
            metrics = [json.loads(line) for line in lines]
            assert [m["round"] for m in metrics] == list(range(1, ROUNDS + 1))
            assert all(m["num_clients"] == 10 for m in metrics)
            out[strategy, attacked] = float(metrics[-1]["global_accuracy"])
    return out


def test_the_sign_flipping_site_wrecks_fedavg(accuracy: dict[tuple[str, bool], float]):
    assert accuracy["fedavg", False] >= 0.85
    assert accuracy["fedavg", True] < 0.4  # about chance (0.1) on 10 classes


@pytest.mark.parametrize("strategy", ROBUST)
def test_robust_strategies_shrug_it_off(strategy: str, accuracy: dict[tuple[str, bool], float]):
    assert accuracy[strategy, True] >= 0.8
    assert accuracy[strategy, True] >= accuracy["fedavg", True] + 0.4


@pytest.mark.parametrize("strategy", ROBUST)
def test_without_an_attacker_all_strategies_learn_alike(
    strategy: str, accuracy: dict[tuple[str, bool], float]
):
    assert accuracy[strategy, False] >= 0.85
    assert abs(accuracy[strategy, False] - accuracy["fedavg", False]) <= 0.05


# ---- configuration: Hydra keys and coordinator flags ----------------------------------------


def test_the_strategy_group_builds_each_rule():
    from fedops.runtime.run import make_strategy

    def built(*overrides: str) -> object:
        return make_strategy(validate(_compose(*overrides)).strategy)

    assert built("strategy=median") == Median()
    # 0.1 trims one value per side from 10 clients a round (of 5 it would trim none: refused)
    assert built("strategy=trimmed_mean", "simulation.num_clients=10") == TrimmedMean(beta=0.1)
    assert built("strategy=trimmed_mean", "strategy.trim_fraction=0.3") == TrimmedMean(beta=0.3)
    assert built("strategy=krum") == Krum(byzantine=1, select=1)
    assert built("strategy=multi_krum") == MultiKrum(byzantine=1, select=None)
    assert built(
        "strategy=multi_krum",
        "strategy.byzantine=2",
        "strategy.select=4",
        "simulation.num_clients=7",
    ) == MultiKrum(byzantine=2, select=4)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["strategy=trimmed_mean", "strategy.trim_fraction=0.5"], "strategy.trim_fraction"),
        (["strategy=krum", "strategy.byzantine=-1"], "strategy.byzantine"),
        (["strategy=krum", "simulation.num_clients=4"], "strategy.byzantine"),  # n > 2f + 2
        (["strategy=krum", "strategy.select=3"], "strategy.select"),
        (["strategy=multi_krum", "strategy.select=0"], "strategy.select"),
        (["strategy=multi_krum", "strategy.select=6"], "strategy.select"),  # of 5 clients
        (["strategy=median", "secagg=secaggplus"], "strategy.name"),
        (["strategy=trimmed_mean", "privacy=central"], "strategy.name"),
    ],
)
def test_validation_names_the_strategy_key(overrides: list[str], key: str):
    with pytest.raises(ConfigError) as info:
        validate(_compose(*overrides))
    assert info.value.key == key


def test_the_coordinator_takes_the_robust_flags():
    multi = StrategyConfig(name="multi_krum", byzantine=2, select=3)
    cfg = CoordinatorConfig(strategy=multi, min_clients=7)
    assert (cfg.strategy.byzantine, cfg.strategy.select) == (2, 3)
    trimmed = StrategyConfig(name="trimmed_mean", trim_fraction=0.2)
    assert CoordinatorConfig(strategy=trimmed, min_clients=5).strategy.trim_fraction == 0.2
    with pytest.raises(ConfigError) as unread:  # multi_krum would ignore it: refused
        CoordinatorConfig(
            strategy=StrategyConfig(name="multi_krum", trim_fraction=0.2), min_clients=7
        )
    assert unread.value.key == "strategy.trim_fraction"
    assert "has no effect" in unread.value.message
    with pytest.raises(ConfigError) as info:
        CoordinatorConfig(strategy=StrategyConfig(name="krum"), min_clients=4)
    assert info.value.key == "strategy.byzantine" and "at least 5 clients" in info.value.message


def test_the_cli_names_the_flag(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as info:
        cli_main(["coordinator", "--strategy", "trimmed_mean", "--trim-fraction", "0.7"])
    assert info.value.code == 2
    assert "--trim-fraction: must be in [0, 0.5)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["coordinator", "--strategy", "krum", "--min-clients", "3"])
    assert "--byzantine: krum with byzantine=1 needs more than 2f+2" in capsys.readouterr().err
