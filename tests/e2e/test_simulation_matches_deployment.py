"""A simulated run and a deployed run of the same seeded job end with the same model.

Same strategy, driver, data split, initial model, shuffling and local loop:
the only difference is the transport (gRPC processes vs. vmapped clients).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from procs import Procs, query

from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.runtime.store import read_checkpoint
from fedops.simulation.engine import run_simulation

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("strategy", ["fedprox"])
def test_simulate_equals_coordinator_and_clients(procs: Procs, tmp_path: Path, strategy: str):
    rounds, sites, seed = 3, 3, 0
    run_dir = tmp_path / "deployed"
    coord, port = procs.coordinator(
        "coordinator",
        run_dir,
        task="digits",
        rounds=rounds,
        min_clients=sites,
        strategy=strategy,
        mu=0.1,
        seed=seed,
    )
    for i in range(sites):
        procs.client(
            f"site{i}", port, i, sites, partition="dirichlet", alpha=0.5, data_seed=seed, epochs=2
        )
    assert procs.wait(coord, 180, "coordinator") == 0, procs.log("coordinator")
    ((name,),) = query(run_dir, "SELECT checkpoint FROM rounds WHERE round = ?", rounds)
    deployed = read_checkpoint(run_dir / "checkpoints" / name)

    cfg = SimulateConfig(
        rounds=rounds,
        seed=seed,
        simulation=SimulationConfig(backend="vectorized", num_clients=sites),
    )
    cfg.strategy.name, cfg.strategy.mu = strategy, 0.1
    cfg.partition.name, cfg.partition.alpha = "dirichlet", 0.5
    cfg.client.epochs = 2
    run_simulation(validate(cfg), tmp_path / "simulated")
    ((name,),) = query(
        tmp_path / "simulated", "SELECT checkpoint FROM rounds WHERE round = ?", rounds
    )
    simulated = read_checkpoint(tmp_path / "simulated" / "checkpoints" / name)

    assert list(simulated) == list(deployed)
    for key in deployed:
        np.testing.assert_allclose(simulated[key], deployed[key], rtol=1e-4, atol=1e-5)
