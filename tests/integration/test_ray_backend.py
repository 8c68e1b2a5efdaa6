"""The Ray backend (a local Ray instance) computes what the sequential backend computes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from one_ray import one_ray_at_a_time
from procs import final_model

from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.simulation.engine import run_simulation

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _one_ray() -> Iterator[None]:
    with one_ray_at_a_time():  # the two-node test starts Ray too
        yield


def test_ray_actors_equal_sequential(tmp_path: Path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    finals = {}
    for backend in ("ray", "sequential"):
        cfg = SimulateConfig(
            rounds=2,
            seed=2,
            simulation=SimulationConfig(backend=backend, num_clients=3, straggler_rate=0.5),
        )
        cfg.strategy.name, cfg.strategy.mu = "fedprox", 0.1
        summary = run_simulation(validate(cfg), tmp_path / backend)
        assert summary["status"] == "completed"
        finals[backend] = final_model(tmp_path / backend)
    for name, value in finals["sequential"].items():
        np.testing.assert_allclose(finals["ray"][name], value, rtol=1e-5, atol=1e-6)
