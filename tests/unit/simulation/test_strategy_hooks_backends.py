"""A user's ``module:Class`` strategy with both optional hooks runs alike on every backend.

Odd-numbered sites train with their own FedProx μ (``client_fit_config``), so the
vectorized backend must train two groups with different μ and still match the
sequential one; the strategy's own fit metrics land in ``metrics.jsonl``. Under
secure aggregation or central DP the per-client hook is refused by key, before a run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
from procs import final_model

from fedops.core.results import FitResult
from fedops.core.strategies import (
    STRATEGIES,
    ClientInfo,
    build_strategy,
    client_fit_configs,
    fit_metrics,
)
from fedops.runtime.rules import ConfigError
from fedops.runtime.schema import StrategyConfig
from fedops.runtime.section_rules import check_strategy_fits, check_strategy_options
from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.simulation.engine import run_simulation

MODULE = textwrap.dedent('''
    from dataclasses import dataclass

    from fedops.core.strategies import FedProx


    @dataclass(frozen=True)
    class PerSite(FedProx):
        """Odd sites pull hard towards the global model; fit metrics as max and count."""

        name: str = "{module}:PerSite"

        def client_fit_config(self, server_round, client, base):
            odd = int(client.node_id.rsplit("-", 1)[1]) % 2
            return {"proximal_mu": 1.0} if odd else {}

        def aggregate_fit_metrics(self, server_round, results):
            losses = [r.metrics["train_loss"] for r in results]
            return {"train_loss_max": max(losses), "fit_reports": float(len(results))}
''')


@pytest.fixture()
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = "user_hooked_strategy"
    (tmp_path / f"{name}.py").write_text(MODULE.replace("{module}", name))
    monkeypatch.chdir(tmp_path)  # imported from the current directory
    yield name
    for key in [k for k in STRATEGIES if k.startswith(name)]:
        del STRATEGIES[key]


def _simulate(run_dir: Path, strategy: str, backend: str) -> dict[str, np.ndarray]:
    cfg = SimulateConfig(
        rounds=2,
        seed=3,
        simulation=SimulationConfig(backend=backend, num_clients=4, clients_per_round=4),
    )
    cfg.strategy.name, cfg.strategy.mu = strategy, 0.01
    cfg.client.epochs = 2
    summary = run_simulation(validate(cfg), run_dir)
    assert summary["status"] == "completed"
    return final_model(run_dir)


def test_vectorized_equals_sequential_with_per_client_configs(module: str, tmp_path: Path):
    finals = {
        backend: _simulate(tmp_path / backend, f"{module}:PerSite", backend)
        for backend in ("vectorized", "sequential")
    }
    for name, value in finals["sequential"].items():
        np.testing.assert_allclose(finals["vectorized"][name], value, rtol=1e-4, atol=1e-5)
    plain = _simulate(tmp_path / "plain", "fedprox", "sequential")  # μ = 0.01 everywhere
    gap = max(np.abs(plain[n] - finals["sequential"][n]).max() for n in plain)
    assert gap > 1e-3  # the odd sites' own μ changed what they trained
    for backend in ("vectorized", "sequential"):
        lines = (tmp_path / backend / "metrics.jsonl").read_text().splitlines()
        for line in map(json.loads, lines):
            assert line["fit_reports"] == 4.0
            assert line["train_loss_max"] >= line["train_loss"] > 0


@pytest.mark.slow
def test_the_process_backend_sends_each_worker_its_client_config(module: str, tmp_path: Path):
    process = _simulate(tmp_path / "process", f"{module}:PerSite", "process")
    sequential = _simulate(tmp_path / "sequential", f"{module}:PerSite", "sequential")
    for name, value in sequential.items():
        np.testing.assert_allclose(process[name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("secagg", "privacy", "refused"),
    [
        ("secaggplus", "none", "secure aggregation refuses"),
        ("none", "central", "central DP refuses"),
        ("secaggplus", "distributed", "secure aggregation refuses"),
        ("none", "local", ""),
        ("none", "none", ""),
    ],
)
def test_per_client_configs_are_refused_by_key_under_secagg_and_central_dp(
    module: str, secagg: str, privacy: str, refused: str
):
    st = StrategyConfig(name=f"{module}:PerSite")
    check_strategy_options(st)
    if not refused:
        check_strategy_fits(st, per_round=4, secagg=secagg, privacy=privacy)
        return
    with pytest.raises(ConfigError, match=refused) as caught:
        check_strategy_fits(st, per_round=4, secagg=secagg, privacy=privacy)
    assert caught.value.key == "strategy.name"


def test_the_readme_example_is_a_per_client_strategy(tmp_path: Path, monkeypatch):
    """The README's per_site.py, imported as ``per_site:PerSite``, configures one site."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    block = re.search(r"```python\n(# per_site\.py.*?)```", readme, re.S)
    assert block is not None, "the README's per_site.py example is gone"
    (tmp_path / "per_site.py").write_text(block.group(1))
    monkeypatch.chdir(tmp_path)
    st = StrategyConfig(name="per_site:PerSite", mu=0.01)
    try:
        check_strategy_options(st)
        check_strategy_fits(st, per_round=2, secagg="none", privacy="none")
        strategy = build_strategy(st.name, dataclasses.asdict(st))
    finally:
        STRATEGIES.pop("per_site:PerSite", None)
    clients = [
        ClientInfo(node_id=f"n{i}", site=f"site-{i}", index=i, cohort_size=2) for i in range(2)
    ]
    configs = client_fit_configs(strategy, 1, clients, strategy.fit_config(1))
    assert configs == {"n0": {"proximal_mu": 0.01}, "n1": {"proximal_mu": 1.0}}
    fits = [FitResult(node_id="n0", params={}, num_examples=1, metrics={"train_loss": 0.5})]
    assert fit_metrics(strategy, 1, fits) == {"train_loss": 0.5, "train_loss_max": 0.5}
