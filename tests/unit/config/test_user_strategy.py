"""A user's own strategy class, named where a built-in would be: ``module:Class``.

The class is imported from the current directory (or PYTHONPATH) by the run's
settings check, registered under that name and then run like a built-in; a
module that does not import, a missing class or a class without the Strategy
methods is refused by the key the user typed, never with a traceback.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import fedops
from fedops.core.strategies import STRATEGIES
from fedops.runtime.rules import ConfigError
from fedops.runtime.schema import StrategyConfig
from fedops.runtime.section_rules import check_strategy_fits, check_strategy_options

MODULE = textwrap.dedent('''
    from dataclasses import dataclass

    from fedops.core.strategies import FedAvg


    @dataclass(frozen=True)
    class HalfStep(FedAvg):
        """FedAvg that moves half way to the mean (reads strategy.server_lr, as FedAvg)."""

        name: str = "{module}:HalfStep"
        server_lr: float = 0.5


    class NotAStrategy:
        pass


    @dataclass(frozen=True)
    class Picky(FedAvg):
        """Refuses any settings at all."""

        name: str = "{module}:Picky"

        def __post_init__(self):
            raise ValueError("Picky refuses its settings")
''')


@pytest.fixture()
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request) -> str:
    name = f"user_strategies_{request.node.name[:20].replace('[', '_').replace(']', '_')}"
    (tmp_path / f"{name}.py").write_text(MODULE.replace("{module}", name))
    monkeypatch.chdir(tmp_path)  # imported from the current directory
    yield name
    for key in [k for k in STRATEGIES if k.startswith(name)]:
        del STRATEGIES[key]


def test_a_user_strategy_runs_a_simulation_and_is_recorded(module, tmp_path):
    run_dir = tmp_path / "run"
    fedops.simulate(f"strategy.name={module}:HalfStep", "rounds=2", run_dir=run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["strategy"] == f"{module}:HalfStep"
    assert type(STRATEGIES[f"{module}:HalfStep"]).__name__ == "type"


@pytest.mark.parametrize(
    ("attr", "says"),
    [
        ("NotAStrategy", "is not a strategy class: it lacks fit_config"),
        ("Missing", "has no 'Missing'"),
    ],
)
def test_a_class_that_is_not_a_strategy_is_refused_by_key(module, attr, says):
    with pytest.raises(ConfigError, match=r"strategy\.name") as refused:
        check_strategy_options(StrategyConfig(name=f"{module}:{attr}"))
    assert says in str(refused.value)


def test_a_module_that_does_not_import_is_refused_by_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="cannot import 'no_such_module_here'"):
        check_strategy_options(StrategyConfig(name="no_such_module_here:X"))
    (tmp_path / "raises_on_import.py").write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(ConfigError, match="RuntimeError: boom at import"):
        check_strategy_options(StrategyConfig(name="raises_on_import:X"))


def test_an_option_the_user_strategy_does_not_read_is_refused(module):
    with pytest.raises(ConfigError, match=r"strategy\.mu"):
        check_strategy_options(StrategyConfig(name=f"{module}:HalfStep", mu=0.5))


def test_a_user_strategy_that_refuses_its_settings_is_a_config_error(module):
    """Its constructor's error is named by the key, before any run starts (no traceback)."""
    picky = StrategyConfig(name=f"{module}:Picky")
    check_strategy_options(picky)  # the name imports, the options are its to read …
    with pytest.raises(ConfigError, match="Picky refuses its settings") as refused:
        check_strategy_fits(picky, per_round=5, secagg="none", privacy="none")
    assert refused.value.key == "strategy.name"
