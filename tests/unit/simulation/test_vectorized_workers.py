"""The default backend trains a round's clients in ``simulation.workers`` threads: the run
is the same with one thread or several, on each of its three trainers, up to float rounding
(a client's chunk-mates change with the split, and with them the kernels' summation order)."""

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
from fedops.simulation.engine import run_simulation
from fedops.simulation.vectorized_backend import VectorizedTransport

DATA = """
import numpy as np


def load_data(site, num_sites):
    rng = np.random.default_rng([9, site])
    n = 12 + 7 * site  # ragged sites: short last minibatches, chunks of different steps
    x = rng.normal(size=(n, 1, 6, 6)).astype(np.float32)
    y = (x[:, 0, :3].mean(axis=(1, 2)) > 0).astype(np.int64)
    return (x[:-3], y[:-3]), (x[-3:], y[-3:])
"""

MODELS = {
    "stacked": """
from torch import nn


def build_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.ReLU(), nn.Linear(8, 2))
""",
    "batched_cnn": """
from torch import nn


def build_model():
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2)
    )
""",
    "torch.func": """
import torch
from torch import nn


class Net(nn.Module):  # not a chain of known layers: the vmap path
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-0.1, 0.1, 36 * 2).reshape(36, 2))

    def forward(self, x):
        return torch.sin(x.flatten(1)) @ self.w


def build_model():
    return Net()
""",
}


DP_CONV = """
from torch import nn


def build_model():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2))
"""


def _run(tmp_path: Path, trainer: str, workers: int) -> Path:
    path = tmp_path / f"task_{trainer.replace('.', '_')}.py"
    path.write_text(MODELS[trainer] + DATA)
    cfg = SimulateConfig(rounds=2, seed=3, task=str(path))
    cfg.simulation = SimulationConfig(backend="vectorized", num_clients=9, workers=workers)
    cfg.client.epochs, cfg.client.batch_size, cfg.client.lr = 2, 4, 0.05
    cfg.monitoring.name = "default"  # evaluation and reports go through the threads too
    run_dir = tmp_path / f"run-{workers}"
    result = run_simulation(validate(cfg), run_dir)
    assert result["status"] == "completed"
    return run_dir


def test_the_stacked_trainer_stays_on_one_thread(tmp_path: Path) -> None:
    """Its small kernels gained nothing from a second thread (GIL hand-overs)."""
    x = np.random.default_rng(0).normal(size=(48, 1, 4, 4)).astype(np.float32)
    y, offsets = np.arange(48) % 2, np.arange(0, 49, 6)
    data = FederatedData(
        train_x=x, train_y=y, train_offsets=offsets, test_x=x, test_y=y, test_offsets=offsets,
        num_classes=2,
    )  # fmt: skip
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    for model, fit_workers in ((nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), 1), (conv, 3)):
        transport = VectorizedTransport(data, model, TrainConfig(), workers=3)
        assert transport.spread.workers == 3 and transport.fit_spread.workers == fit_workers
        assert transport.local_dp.spread is transport.fit_spread
        transport.close()


@pytest.mark.parametrize("trainer", list(MODELS))
def test_threads_train_the_same_model_as_one_thread(
    tmp_path: Path, trainer: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="fedops.simulate"):
        one = final_model(_run(tmp_path, trainer, 1))
    said = " ".join(r.getMessage() for r in caplog.records)
    assert trainer in said, said  # the model took the trainer this case is about
    three = final_model(_run(tmp_path, trainer, 3))
    assert one.keys() == three.keys()
    for name in one:  # ~1 float32 ulp apart after two rounds
        np.testing.assert_allclose(three[name], one[name], rtol=1e-5, atol=1e-6, err_msg=name)
    last = [
        json.loads((tmp_path / f"run-{w}" / "metrics.jsonl").read_text().splitlines()[-1])
        for w in (1, 3)
    ]
    for key in ("train_loss", "eval_loss", "eval_accuracy"):
        assert last[1][key] == pytest.approx(last[0][key], rel=1e-5), key


@pytest.mark.usefixtures("quiet_warnings")
def test_local_dp_sites_train_in_threads_as_in_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each site's secret noise seed is drawn before the split, so with the same seeds the
    threads compute what one thread does; the ledgers charge the same."""
    from types import SimpleNamespace

    from fedops.simulation import local_dp_sites
    from fedops.simulation.engine import site_ledger_book

    def run(workers: int) -> tuple[dict[str, np.ndarray], list[object]]:
        drawn = iter(range(10_000, 20_000))  # the same "secret" seeds for both runs
        monkeypatch.setattr(
            local_dp_sites, "secrets", SimpleNamespace(randbits=lambda _: next(drawn))
        )
        path = tmp_path / "dp_conv_task.py"  # a conv net: the vmap DP-SGD path, in threads
        path.write_text(DP_CONV + DATA)
        cfg = SimulateConfig(rounds=2, seed=0, task=str(path))
        cfg.simulation = SimulationConfig(backend="vectorized", num_clients=8, workers=workers)
        cfg.privacy.name, cfg.privacy.noise_multiplier = "local", 1.0
        run_dir = tmp_path / f"dp-{workers}"
        assert run_simulation(validate(cfg), run_dir)["status"] == "completed"
        book = site_ledger_book(run_dir)
        return final_model(run_dir), [book.charges(i) for i in range(8)]

    (one, charges_one), (three, charges_three) = run(1), run(3)
    assert charges_one == charges_three and all(charges_one)
    for name in one:
        np.testing.assert_allclose(three[name], one[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_evaluation_spread_over_threads_scores_like_one_thread(tmp_path: Path) -> None:
    """Image test splits are scored in slices of 256 rows, one slice per thread at a time:
    885 test rows make four slices, enough to spread."""
    big_tests = DATA.replace("n = 12 + 7 * site", "n = 150 + 7 * site").replace(
        "(x[:-3], y[:-3]), (x[-3:], y[-3:])", "(x[:20], y[:20]), (x[20:], y[20:])"
    )
    path = tmp_path / "task_big_tests.py"
    path.write_text(MODELS["batched_cnn"] + big_tests)

    def last_metrics(workers: int) -> dict[str, float]:
        cfg = SimulateConfig(rounds=1, seed=3, task=str(path))
        cfg.simulation = SimulationConfig(backend="vectorized", num_clients=6, workers=workers)
        run_dir = tmp_path / f"eval-{workers}"
        assert run_simulation(validate(cfg), run_dir)["status"] == "completed"
        return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])

    one, three = last_metrics(1), last_metrics(3)
    for key in ("eval_loss", "eval_accuracy"):
        assert three[key] == pytest.approx(one[key], rel=1e-6), key
