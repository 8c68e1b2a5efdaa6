"""SecAgg+ on the process backend: each client's side runs in the worker that owns it.

The parent (the simulated coordinator) relays the protocol's messages; the result is
bit for bit what the in-driver path (``SecureSimTransport`` around the same backend)
gives: training and stochastic rounding are seeded by (seed, round, client), and the
masks, drawn from the OS CSPRNG in either path, cancel exactly in the sum.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fedops.simulation.engine as engine
from fedops.core.params import Params
from fedops.core.secagg.client import SecAggClient
from fedops.crypto import Crypto
from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.runtime.store import RunStore
from fedops.simulation.engine import run_simulation
from fedops.simulation.faults import FaultPlan

pytestmark = pytest.mark.slow

N, SEED = 10, 0


def _config(dropout_rate: float) -> SimulateConfig:
    cfg = SimulateConfig(
        rounds=2,
        seed=SEED,
        simulation=SimulationConfig(
            backend="process", num_clients=N, workers=2, dropout_rate=dropout_rate
        ),
    )
    cfg.partition.name = "iid"
    cfg.secagg.name = "secaggplus"
    return validate(cfg)


def _run(cfg: SimulateConfig, run_dir: Path) -> tuple[dict[int, Params], list[Any], list[Any]]:
    summary = run_simulation(cfg, run_dir)
    assert summary["status"] == "completed", summary
    store = RunStore(run_dir)
    try:
        models = {r: store.load_round(r) for r in (0, 1, 2)}
        metrics = store.round_metrics()
        people = [
            (r, p.node_id, p.outcome, p.num_examples)
            for r in (1, 2)
            for p in store.participants(r)
            if p.phase == "fit"
        ]
    finally:
        store.close()
    return models, metrics, people


@pytest.mark.parametrize("dropout_rate", [0.0, 0.3])
def test_workers_give_the_in_driver_result_bit_for_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dropout_rate: float
):
    plan = FaultPlan(seed=SEED, dropout_rate=dropout_rate)
    drops = {r: {c for c in range(N) if plan.drops(r, c)} for r in (1, 2)}
    assert bool(dropout_rate) == all(drops.values()), drops  # the premise: some drop, or none
    workers = _run(_config(dropout_rate), tmp_path / "workers")
    with monkeypatch.context() as m:  # the engine wraps the backend as for in-process ones
        m.setattr(engine, "WorkerTransport", type("NotAWorkerBackend", (), {}))
        driver = _run(_config(dropout_rate), tmp_path / "driver")
    (w_models, w_metrics, w_people), (d_models, d_metrics, d_people) = workers, driver
    assert w_people == d_people  # the same survivors, dropouts and example counts
    for r in (1, 2):
        assert w_metrics[r - 1]["secagg_survivors"] == N - len(drops[r])
        assert "secagg_error" not in w_metrics[r - 1]
        assert w_metrics[r - 1]["train_loss"] == d_metrics[r - 1]["train_loss"]
        dropped = {p[1] for p in w_people if p[0] == r and p[2] == "dropped"}
        assert dropped == {f"site-{c}" for c in drops[r]}
        assert list(w_models[r]) == list(d_models[r])
        for name, value in d_models[r].items():
            np.testing.assert_array_equal(w_models[r][name], value, err_msg=f"{r} {name}")
        assert any(not np.array_equal(w_models[r][k], w_models[r - 1][k]) for k in w_models[r])


def test_the_driver_holds_no_client_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """In the parent, no client-side protocol object is built and no client key, seed or
    share is made or opened: the server's side needs none (workers are spawned, so this
    process's patches do not reach them)."""
    made: list[str] = []

    def refuse(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            made.append(name)
            raise AssertionError(f"the driver called {name}")

        return call

    monkeypatch.setattr(SecAggClient, "__init__", refuse("SecAggClient"))
    for method in ("keypair", "random", "seal", "open"):
        monkeypatch.setattr(Crypto, method, refuse(f"Crypto.{method}"))
    _, metrics, people = _run(_config(0.3), tmp_path / "run")
    assert made == []
    assert all(m["secagg_survivors"] > 0 and "secagg_error" not in m for m in metrics)
    assert {p[2] for p in people} == {"ok", "dropped"}
