"""The public API of ``fedops`` (issue 19 item 4): its names, its registry, its example."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
import types
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

import fedops
from fedops.config.hydra_app import compose_settings
from fedops.core.results import FitResult
from fedops.core.strategies import STRATEGIES
from fedops.runtime.rules import ConfigError
from fedops.runtime.run import make_strategy
from fedops.runtime.simulate_settings import validate


@pytest.fixture(autouse=True)
def registry():
    """Each test's registrations are undone: the registry is process-wide."""
    saved = dict(STRATEGIES)
    yield
    STRATEGIES.clear()
    STRATEGIES.update(saved)


def test_the_package_docstring_example_runs():
    result = doctest.testmod(fedops, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0, result


@pytest.mark.parametrize("name", fedops.__all__)
def test_every_public_name_resolves(name: str):
    assert getattr(fedops, name) is not None
    assert name in dir(fedops)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Simulate'"):
        fedops.Simulate  # noqa: B018


def test_import_fedops_loads_no_torch():
    code = "import sys, fedops; assert 'torch' not in sys.modules and 'hydra' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@dataclass(frozen=True, kw_only=True)
class Damped(fedops.FedAvg):
    """Reads ``strategy.mu`` as its damping: current + (1 - damping) * (mean - current)."""

    options: ClassVar[dict[str, str]] = {"mu": "damping"}
    name: str = "damped"
    damping: float = 0.5

    def aggregate_fit(self, server_round, current, results):
        mean = fedops.FedAvg.aggregate_fit(self, server_round, current, results)
        return {k: current[k] + (1 - self.damping) * (mean[k] - current[k]) for k in current}


def test_a_registered_strategy_takes_the_schema_options_it_names():
    fedops.register_strategy("damped", Damped)
    built = make_strategy(
        validate(compose_settings("strategy.name=damped", "strategy.mu=0.75")).strategy
    )
    assert built == Damped(damping=0.75)
    result = FitResult(node_id="a", params={"w": np.array([4.0])}, num_examples=3)
    assert built.aggregate_fit(1, {"w": np.array([0.0])}, [result])["w"][0] == pytest.approx(1.0)


def test_an_option_a_registered_strategy_does_not_read_is_refused():
    fedops.register_strategy("damped", Damped)
    with pytest.raises(ConfigError) as refused:
        validate(compose_settings("strategy.name=damped", "strategy.byzantine=3"))
    assert refused.value.key == "strategy.byzantine"
    assert "has no effect with strategy damped" in refused.value.message


def test_an_unregistered_name_is_refused_by_its_key():
    with pytest.raises(ConfigError) as refused:
        validate(compose_settings("strategy.name=damped"))
    assert refused.value.key == "strategy.name" and "damped" in refused.value.message


@pytest.mark.parametrize(
    ("name", "cls", "error", "words"),
    [
        ("fedavg", Damped, ValueError, "already registered"),  # a built-in keeps its meaning
        ("not a name", Damped, ValueError, "identifier"),
        ("lazy", object, TypeError, "lacks fit_config, aggregate_fit, aggregate_evaluate"),
    ],
)
def test_registration_refuses(name, cls, error, words):
    with pytest.raises(error, match=words):
        fedops.register_strategy(name, cls)


def test_a_name_taken_by_another_class_is_refused_and_the_same_class_is_not():
    fedops.register_strategy("damped", Damped)
    assert fedops.register_strategy("damped", Damped) is Damped  # re-imported module: fine

    @dataclass(frozen=True, kw_only=True)
    class Other(Damped):
        pass

    with pytest.raises(ValueError, match="already registered"):
        fedops.register_strategy("damped", Other)
    assert STRATEGIES["damped"] is Damped


def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```python\n(# notebook\.py\n.*?)```", readme, re.S)
    assert block is not None, "the README's notebook.py example is gone"
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType("notebook")  # dataclasses look their module up
    monkeypatch.setitem(sys.modules, "notebook", module)
    exec(compile(block.group(1), "README.md:notebook.py", "exec"), module.__dict__)
    status, accuracy = capsys.readouterr().out.split()[-2:]
    assert status == "completed" and 0.5 < float(accuracy) <= 1.0
    assert (tmp_path / "runs" / "notebook" / "summary.json").is_file()
