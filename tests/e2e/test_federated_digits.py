"""Real coordinator and client processes train on digits over loopback gRPC."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from procs import Procs, journal, metrics

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox"])
def test_five_sites_dirichlet_reach_90_percent(procs: Procs, tmp_path: Path, strategy: str):
    run_dir = tmp_path / "run"
    coord, port = procs.coordinator(
        "coordinator", run_dir, task="digits", rounds=10, min_clients=5, strategy=strategy, mu=0.01
    )
    clients = [
        procs.client(f"site{i}", port, i, 5, partition="dirichlet", alpha=0.5) for i in range(5)
    ]
    assert procs.wait(coord, 240, "coordinator") == 0, procs.log("coordinator")
    for i, client in enumerate(clients):
        assert procs.wait(client, 30, f"site{i}") == 0, procs.log(f"site{i}")

    rows = metrics(run_dir)
    assert [r["round"] for r in rows] == list(range(1, 11))
    assert all(r["num_clients"] == 5 for r in rows)
    assert rows[-1]["eval_accuracy"] >= 0.90, rows[-1]
    assert rows[-1]["eval_accuracy"] > rows[0]["eval_accuracy"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["rounds_completed"] == 10
    assert summary["strategy"] == strategy
    # Every site was told the proximal coefficient exactly when FedProx ran.
    for i in range(5):
        fits = [
            e
            for e in journal(tmp_path / f"site{i}")
            if e.get("event") == "model" and e["kind"] == "TASK_KIND_FIT"
        ]
        assert len(fits) == 10
        mus = {e["config"].get("proximal_mu") for e in fits}
        assert mus == ({0.01} if strategy == "fedprox" else {None}), mus


USER_TASK = textwrap.dedent('''
    """A user task: breast cancer (sklearn bundled), standardised, logistic regression."""
    import numpy as np
    import torch
    from sklearn.datasets import load_breast_cancer


    def build_model() -> torch.nn.Module:
        return torch.nn.Linear(30, 2)


    def load_data(site: int, num_sites: int):
        x, y = load_breast_cancer(return_X_y=True)
        x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
        order = np.random.default_rng(7).permutation(len(y))
        mine = order[site::num_sites]
        cut = int(len(mine) * 0.8)
        return (x[mine[:cut]], y[mine[:cut]]), (x[mine[cut:]], y[mine[cut:]])
''')


def test_user_task_file_and_initial_model_from_first_client(procs: Procs, tmp_path: Path):
    task = tmp_path / "my_task.py"
    task.write_text(USER_TASK)
    run_dir = tmp_path / "run"
    coord, port = procs.coordinator("coordinator", run_dir, rounds=4, min_clients=3, lr=0.1)
    clients = [procs.client(f"site{i}", port, i, 3, task=str(task)) for i in range(3)]
    assert procs.wait(coord, 180, "coordinator") == 0, procs.log("coordinator")
    for i, client in enumerate(clients):
        assert procs.wait(client, 30, f"site{i}") == 0
    assert "taking the initial model from the first client" in procs.log("coordinator")
    rows = metrics(run_dir)
    assert len(rows) == 4
    assert rows[-1]["eval_accuracy"] >= 0.93, rows[-1]
    assert "global_accuracy" not in rows[-1]  # no --task on the coordinator: no held-out data
