"""The process-pool backend computes what the sequential backend computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from procs import final_model

from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.simulation.engine import run_simulation

pytestmark = pytest.mark.slow

BATCHNORM_TASK = """
import numpy as np
import torch
from fedops.tasks.digits import make_task

_digits = make_task(partition="iid")
load_data = _digits.load_data


def build_model():
    # BatchNorm has buffers: the vectorized backend refuses it, the process backend runs it.
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32),
                               torch.nn.ReLU(), torch.nn.Linear(32, 10))
"""


def test_process_pool_equals_sequential_on_a_user_task(tmp_path: Path):
    task = tmp_path / "bn_task.py"
    task.write_text(BATCHNORM_TASK)
    finals = {}
    for backend in ("process", "sequential"):
        cfg = SimulateConfig(
            rounds=2,
            seed=1,
            task=str(task),
            simulation=SimulationConfig(backend=backend, num_clients=4, dropout_rate=0.25),
        )
        cfg.client.lr, cfg.client.epochs, cfg.client.batch_size = 0.1, 1, 64
        summary = run_simulation(validate(cfg), tmp_path / backend)
        assert summary["status"] == "completed"
        finals[backend] = final_model(tmp_path / backend)
    assert "1.running_mean" in finals["process"]  # buffers travelled and were averaged
    for name, value in finals["sequential"].items():
        np.testing.assert_allclose(finals["process"][name], value, rtol=1e-5, atol=1e-6)
