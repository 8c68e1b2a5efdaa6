"""A simulated run and a deployed run of the same seeded job end with the same model.

Same strategy, driver, data split, initial model, shuffling, local loop and training
settings: the run's, set once (the coordinator's --epochs --lr --lr-decay, the
simulation's client.*) and sent with every fit task; the sites pass no training flag.
The only difference is the transport (gRPC processes vs. vmapped clients).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from procs import Procs, query

from fedops.runtime.checkpoint_file import read_checkpoint
from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
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
        epochs=2,
        lr=0.3,
        lr_decay=0.8,
    )
    for i in range(sites):
        procs.client(f"site{i}", port, i, sites, partition="dirichlet", alpha=0.5, data_seed=seed)
    assert procs.wait(coord, 180, "coordinator") == 0, procs.log("coordinator")
    # the run's settings: in its stored config and summary, and in each site's journal,
    # round by round with the decayed rate
    run = {"epochs": 2, "batch_size": 16, "lr": 0.3, "optimizer": "sgd", "momentum": 0.0}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["train"] == {**run, "lr_decay": 0.8}
    ((stored,),) = query(run_dir, "SELECT config_json FROM runs")
    assert json.loads(stored)["train"] == {**run, "lr_decay": 0.8}
    for i in range(sites):
        journal = (tmp_path / f"site{i}" / "client.jsonl").read_text().splitlines()
        models = [e for e in map(json.loads, journal) if e.get("event") == "model"]
        fits = [e for e in models if e["kind"] == "TASK_KIND_FIT"]
        assert [e["round"] for e in fits] == [1, 2, 3]
        for e in fits:
            assert e["train"] == {**run, "lr": pytest.approx(0.3 * 0.8 ** (e["round"] - 1))}
    ((name,),) = query(run_dir, "SELECT checkpoint FROM rounds WHERE round = ?", rounds)
    deployed = read_checkpoint(run_dir / "checkpoints" / name)

    cfg = SimulateConfig(
        rounds=rounds,
        seed=seed,
        simulation=SimulationConfig(backend="vectorized", num_clients=sites),
    )
    cfg.strategy.name, cfg.strategy.mu = strategy, 0.1
    cfg.partition.name, cfg.partition.alpha = "dirichlet", 0.5
    cfg.client.epochs, cfg.client.lr, cfg.client.lr_decay = 2, 0.3, 0.8
    run_simulation(validate(cfg), tmp_path / "simulated")
    ((name,),) = query(
        tmp_path / "simulated", "SELECT checkpoint FROM rounds WHERE round = ?", rounds
    )
    simulated = read_checkpoint(tmp_path / "simulated" / "checkpoints" / name)

    assert list(simulated) == list(deployed)
    for key in deployed:
        np.testing.assert_allclose(simulated[key], deployed[key], rtol=1e-4, atol=1e-5)
