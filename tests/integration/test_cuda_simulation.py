"""``simulation.device=cuda`` computes what the CPU computes (issue 22 item 6).

Each case runs twice on the batched (vectorized) backend, once on the device and once on
the CPU, and the two runs must end with the same model within float tolerance, with the
same per-round metrics (evaluation and, where on, monitoring). The cases cover every
batched path a device run takes: the stacked trainer (an MLP), the batched CNN trainer
(convolutions, BatchNorm, dropout), the monitor's counting (drift and fairness), and local
DP-SGD on both its paths (the stacked one for an MLP, torch.func's for a CNN).

Without CUDA the ``cuda`` cases are skipped (with the reason) and the ``cpu`` ones run:
CPU against CPU, which keeps this harness itself checked (runs, determinism, the
comparison) on machines without a GPU.

TF32 is turned off for the device runs: it rounds convolution inputs to 10 bits of
mantissa on purpose, and the claim here is the arithmetic's, not TF32's precision.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from procs import final_model

from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.simulation.engine import run_simulation

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
CASES = ["mlp_monitored", "cnn_monitored", "mlp_local_dp", "cnn_local_dp"]
pytestmark = pytest.mark.usefixtures("quiet_warnings")  # Opacus warns on every DP-SGD step

CNN_TASK = """
import numpy as np
from torch import nn

# local DP refuses BatchNorm; its torch.func path draws dropout masks from torch's RNG
# (the device's own generator), where the batched CNN trainer hashes the site's seed
BATCHED_LAYERS = {batched_layers}


def build_model():
    norm = [nn.BatchNorm2d(4)] if BATCHED_LAYERS else []
    dropout = [nn.Dropout(0.25)] if BATCHED_LAYERS else []
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        *norm,
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 16),
        *dropout,
        nn.ReLU(),
        nn.Linear(16, 3),
    )


def load_data(site, num_sites):
    rng = np.random.default_rng([9, site])
    n = 24 + 7 * site  # ragged: short last minibatches
    x = rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0, :4].mean(axis=(1, 2)) > 0) + (x[:, 0, 4:, :4].mean(axis=(1, 2)) > 0.2)
    return (x[:-6], y[:-6].astype(np.int64)), (x[-6:], y[-6:].astype(np.int64))
"""


def _config(case: str, device: str, task_dir: Path) -> SimulateConfig:
    cfg = SimulateConfig(
        rounds=2,
        seed=4,
        simulation=SimulationConfig(backend="vectorized", num_clients=4, device=device),
    )
    cfg.client.epochs, cfg.client.batch_size, cfg.client.momentum = 2, 8, 0.5
    cfg.client.lr = 0.05  # small steps: float32 rounding differences stay ~1e-6
    if case.startswith("cnn"):
        task_dir.mkdir(parents=True, exist_ok=True)
        task = task_dir / f"{case}_task.py"
        task.write_text(CNN_TASK.format(batched_layers=case == "cnn_monitored"))
        cfg.task = str(task)
    else:
        cfg.model.name = "mlp"
    if case.endswith("monitored"):
        cfg.monitoring.name, cfg.monitoring.min_count = "default", 1
    else:
        cfg.privacy.name, cfg.privacy.noise_multiplier = "local", 1.0
    return validate(cfg)


def _run(
    case: str, device: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """The run's summary, its metrics rows and its final model."""
    # every site's DP noise seed (LocalDPSites draws secrets.randbits(63)), the same
    # sequence in both runs
    seeds = itertools.count(12345)
    monkeypatch.setattr(secrets, "randbits", lambda bits: next(seeds))
    run_dir = tmp_path / f"{case}-{device}"
    summary = run_simulation(_config(case, device, tmp_path), run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return summary, rows, final_model(run_dir)


def _same(got: Any, want: Any, where: str) -> None:
    """Metrics equal: numbers within float tolerance, everything else exactly."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            if key != "duration_s":
                _same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            _same(a, b, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-5), (where, got, want)
    else:
        assert got == want, (where, got, want)


@pytest.fixture(autouse=True)
def _no_tf32() -> Iterator[None]:
    """Full float32 matrix products and convolutions on the device (see the module's note);
    restored after (torch's flags are not attributes monkeypatch can put back)."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES)
def test_a_device_run_ends_with_the_cpu_runs_model(
    case: str, device: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    summary, rows, model = _run(case, device, tmp_path, monkeypatch)
    if device == "cuda":  # trained there, not quietly on the CPU
        assert torch.cuda.max_memory_allocated() > 0
    reference, want_rows, want = _run(case, "cpu", tmp_path / "reference", monkeypatch)
    assert summary["status"] == reference["status"] == "completed"
    assert summary["rounds_completed"] == 2
    if case.endswith("monitored"):  # the monitor counted on the device, too
        assert all(row["drift"] and "fairness" in row for row in rows), rows[-1].keys()
    else:  # every site trained with DP-SGD (none declined) on the device
        assert all(row["num_clients"] == 4 for row in rows), rows
    assert model.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(model[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)
    _same(rows, want_rows, "metrics")
