"""Central DP wraps the strategy: the strategy's server step applies to DP's release.

The release (the clipped, noised mean) is the mechanism's output; what the strategy
does with it is post-processing. With the noise seeded, a strategy that moves half
way must land exactly half way between the start and FedAvg's DP model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import fedops
from fedops.config.hydra_app import compose_settings
from fedops.core.strategies import STRATEGIES
from fedops.runtime.simulate_settings import validate
from fedops.simulation.engine import run_simulation


@dataclass(frozen=True, kw_only=True)
class HalfWay(fedops.FedAvg):
    name: str = "half_way"

    def aggregate_fit(self, server_round, current, results):
        mean = fedops.FedAvg.aggregate_fit(self, server_round, current, results)
        return {k: current[k] + 0.5 * (mean[k] - current[k]) for k in current}


@pytest.fixture
def half_way():
    saved = dict(STRATEGIES)
    fedops.register_strategy("half_way", HalfWay)
    yield
    STRATEGIES.clear()
    STRATEGIES.update(saved)


def _run(tmp_path: Path, strategy: str) -> tuple[dict, dict]:
    cfg = compose_settings(
        f"strategy.name={strategy}",
        "rounds=1",
        "simulation.num_clients=6",
        "privacy=central",
        "privacy.seed=7",  # the same noise and sample for both runs
        "privacy.noise_multiplier=1.0",
    )
    run_dir = tmp_path / strategy
    run_simulation(validate(cfg), run_dir)
    checkpoints = run_dir / "checkpoints"
    return (
        load_file(str(checkpoints / "round-00000.safetensors")),
        load_file(str(checkpoints / "round-00001.safetensors")),
    )


def test_the_strategy_post_processes_the_dp_release(tmp_path: Path, half_way):
    start, fedavg = _run(tmp_path, "fedavg")
    start_again, halfway = _run(tmp_path, "half_way")
    for name in start:
        np.testing.assert_array_equal(start[name], start_again[name])
        assert not np.allclose(fedavg[name], start[name])  # DP's release moved the model
        expected = start[name] + 0.5 * (fedavg[name] - start[name])
        np.testing.assert_allclose(halfway[name], expected, rtol=0, atol=1e-6)
