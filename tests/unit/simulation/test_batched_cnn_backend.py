"""A conv-net task on the default backend trains with the batched CNN trainer, and the
run's model equals the sequential backend's (the per-client loop) within float tolerance."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from procs import final_model

from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.simulation.engine import run_simulation

CONV_TASK = """
import numpy as np
from torch import nn


def build_model():
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3),
        nn.GroupNorm(2, 4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16, 8),
        nn.Dropout(0.0),
        nn.Tanh(),
        nn.Linear(8, 3),
    )


def load_data(site, num_sites):
    rng = np.random.default_rng([5, site])
    n = 14 + 5 * site  # ragged: 14..29 rows, short last minibatches
    x = rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0, :4].mean(axis=(1, 2)) > 0) + (x[:, 0, 4:, :4].mean(axis=(1, 2)) > 0.2)
    y = y.astype(np.int64)
    return (x[:-4], y[:-4]), (x[-4:], y[-4:])
"""


def _run(tmp_path: Path, backend: str, strategy: str) -> dict[str, Any]:
    path = tmp_path / "conv_task.py"
    path.write_text(CONV_TASK)
    cfg = SimulateConfig(rounds=2, seed=6, task=str(path))
    cfg.simulation = SimulationConfig(backend=backend, num_clients=4)
    cfg.client.epochs, cfg.client.batch_size, cfg.client.momentum = 2, 4, 0.5
    cfg.client.lr = 0.05  # at the default 0.5 float32 rounding differences grow to 5e-5
    cfg.strategy.name = strategy
    if strategy == "fedprox":
        cfg.strategy.mu = 0.1
    return run_simulation(validate(cfg), tmp_path / f"run-{backend}")


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox"])
def test_a_conv_task_trains_batched_and_equals_the_sequential_backend(
    tmp_path: Path, strategy: str, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.INFO, logger="fedops.simulate"):
        vec = _run(tmp_path, "vectorized", strategy)
    said = [r.getMessage() for r in caplog.records if r.name == "fedops.simulate"]
    assert vec["status"] == "completed" and vec["backend"] == "vectorized"
    assert any("batched_cnn trainer" in line for line in said), said
    assert not any("not the batched one" in line for line in said), said
    seq = _run(tmp_path, "sequential", strategy)
    assert seq["status"] == "completed"
    got, want = final_model(tmp_path / "run-vectorized"), final_model(tmp_path / "run-sequential")
    assert got.keys() == want.keys() and "1.running_mean" in want
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert vec["final_metrics"]["eval_accuracy"] == pytest.approx(
        seq["final_metrics"]["eval_accuracy"], abs=1e-9
    )
