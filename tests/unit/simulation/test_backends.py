"""Every simulation backend runs the same rounds: same data, same seeds, same model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from procs import final_model
from torch import nn

from fedops.core.training import TrainConfig
from fedops.data import FederatedData
from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.runtime.store import RunStore
from fedops.simulation.engine import run_simulation
from fedops.simulation.faults import FaultPlan
from fedops.simulation.vectorized_backend import VectorizedTransport


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox"])
def test_vectorized_equals_sequential(tmp_path: Path, strategy: str):
    results = {}
    for backend in ("vectorized", "sequential"):
        cfg = SimulateConfig(
            rounds=2,
            seed=3,
            simulation=SimulationConfig(
                backend=backend, num_clients=4, clients_per_round=3, dropout_rate=0.2
            ),
        )
        cfg.strategy.name = strategy
        if strategy == "fedprox":
            cfg.strategy.mu = 0.1
        cfg.client.epochs = 2
        summary = run_simulation(validate(cfg), tmp_path / backend)
        assert summary["status"] == "completed"
        results[backend] = (final_model(tmp_path / backend), summary["final_metrics"])
    (vec, vec_metrics), (seq, seq_metrics) = results["vectorized"], results["sequential"]
    for name in seq:
        np.testing.assert_allclose(vec[name], seq[name], rtol=1e-4, atol=1e-5)
    assert vec_metrics["num_clients"] == seq_metrics["num_clients"]
    assert vec_metrics["eval_accuracy"] == pytest.approx(seq_metrics["eval_accuracy"], abs=1e-9)


def test_synthetic_fleet_runs_vectorized(tmp_path: Path):
    cfg = SimulateConfig(rounds=2, simulation=SimulationConfig(num_clients=200))
    cfg.dataset.name = "synthetic"
    cfg.client.epochs, cfg.client.batch_size, cfg.client.lr = 1, 10, 0.01
    summary = run_simulation(validate(cfg), tmp_path)
    assert summary["rounds_completed"] == 2
    assert summary["final_metrics"]["num_clients"] == 200


def test_faults_are_reproducible_and_roughly_at_rate():
    plan = FaultPlan(seed=1, dropout_rate=0.3, straggler_rate=0.5)
    drops = [plan.drops(r, c) for r in range(5) for c in range(200)]
    assert drops == [plan.drops(r, c) for r in range(5) for c in range(200)]
    assert 0.25 < np.mean(drops) < 0.35
    epochs = [plan.epochs(1, c, 20) for c in range(400)]
    assert all(1 <= e <= 20 for e in epochs)
    assert 0.4 < np.mean([e < 20 for e in epochs]) < 0.6
    assert FaultPlan().epochs(1, 1, 20) == 20 and not FaultPlan().drops(1, 1)


def test_min_fit_results_aborts_thin_rounds_in_simulation_as_deployed(tmp_path: Path):
    """The simulation hands simulation.min_fit_results to the same round driver."""
    cfg = SimulateConfig(
        rounds=6,
        seed=5,
        simulation=SimulationConfig(
            backend="sequential", num_clients=4, dropout_rate=0.4, min_fit_results=3
        ),
    )
    cfg.client.epochs = 1
    summary = run_simulation(validate(cfg), tmp_path)
    assert summary["status"] == "completed"
    rows = [
        json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if line
    ]
    store = RunStore(tmp_path)
    try:
        digests = [store.model_digest(r) for r in range(len(rows) + 1)]
    finally:
        store.close()
    thin = [r for r in rows if r["num_clients"] < 3]
    assert thin, "with 40% dropout some round must lose two clients (seeded)"
    assert len(thin) < len(rows), "and some round must keep three (seeded)"
    for i, row in enumerate(rows, start=1):
        if row["num_clients"] < 3:
            assert "fewer than the 3 required" in row["round_aborted"]
            assert digests[i] == digests[i - 1]  # the model is the one the round started from
        else:
            assert "round_aborted" not in row
            assert digests[i] != digests[i - 1]


def test_the_vectorized_backend_says_which_trainer_a_model_gets(caplog: pytest.LogCaptureFixture):
    """A user whose model misses the fast stacked trainer is told why, once, at start."""
    rng = np.random.default_rng(0)
    data = FederatedData(
        train_x=rng.normal(size=(12, 6)).astype(np.float32),
        train_y=rng.integers(0, 2, 12),
        train_offsets=np.array([0, 5, 12]),
        test_x=rng.normal(size=(4, 6)).astype(np.float32),
        test_y=rng.integers(0, 2, 4),
        test_offsets=np.array([0, 2, 4]),
        num_classes=2,
    )
    train = TrainConfig(batch_size=4, lr=0.1)
    mlp = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 2))
    conv = nn.Sequential(nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 1, 3), nn.Flatten(), nn.Linear(4, 2))
    with caplog.at_level(logging.INFO, logger="fedops.simulate"):
        VectorizedTransport(data, mlp, train)
        VectorizedTransport(data, conv, train)
    said = [r.getMessage() for r in caplog.records if r.name == "fedops.simulate"]
    assert said[0].endswith("with the stacked trainer")
    assert "torch.func" in said[1] and "Unflatten" in said[1]
