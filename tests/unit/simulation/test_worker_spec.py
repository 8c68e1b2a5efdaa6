"""What a simulation worker is sent: a small spec that rebuilds the parent's federation."""

from __future__ import annotations

import numpy as np

from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.simulation.federation import FederationSpec, build_federation, load_federation
from fedops.simulation.worker import WorkerSpec


def _config() -> SimulateConfig:
    cfg = SimulateConfig(
        rounds=1, seed=7, simulation=SimulationConfig(backend="process", num_clients=6)
    )
    cfg.partition.alpha = 0.8
    cfg.model.name, cfg.model.hidden = "mlp", 16
    cfg.client.lr, cfg.client.epochs = 0.05, 3
    return validate(cfg)


def test_the_spec_survives_json_and_leaves_the_run_behind():
    cfg = _config()
    spec = WorkerSpec.of(cfg)
    assert WorkerSpec.from_json(spec.to_json()) == spec
    assert (spec.train.lr, spec.train.epochs, spec.federation.num_clients) == (0.05, 3, 6)
    text = spec.to_json()
    for run_only in ("rounds", "privacy", "secagg", "mlflow", "monitoring", "strategy"):
        assert run_only not in text  # a worker trains; the run's records stay with the parent


def test_a_worker_rebuilds_the_parents_task_and_data():
    cfg = _config()
    parent_task, _ = load_federation(cfg)
    spec = FederationSpec.from_json(FederationSpec.of(cfg).to_json())
    worker_task, _ = build_federation(spec)
    assert worker_task.digest == parent_task.digest
    for site in (0, 5):
        (px, py), _ = parent_task.load_data(site, 6)
        (wx, wy), _ = worker_task.load_data(site, 6)
        np.testing.assert_array_equal(px, wx)
        np.testing.assert_array_equal(py, wy)
    assert [p.shape for p in worker_task.build_model().parameters()] == [
        p.shape for p in parent_task.build_model().parameters()
    ]
