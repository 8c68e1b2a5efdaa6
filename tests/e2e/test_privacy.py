"""Central DP with real coordinator and client processes: ε per round, and the budget stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from procs import Procs, free_port, metrics, query

pytestmark = pytest.mark.slow


def test_central_dp_reports_epsilon_and_the_budget_stops_the_run(procs: Procs, tmp_path: Path):
    port, run_dir = free_port(), tmp_path / "run"
    coord = procs.coordinator(
        "coordinator",
        port,
        run_dir,
        "--task",
        "digits",
        "--rounds",
        "10",
        "--min-clients",
        "4",
        "--clients-per-round",
        "2",
        "--privacy",
        "central",
        "--noise-multiplier",
        "1.0",
        "--clip-norm",
        "2.0",
        "--target-epsilon",
        "5.0",
    )
    for i in range(4):
        procs.client(f"site{i}", port, i, 4)
    assert procs.wait(coord, 180, "coordinator") == 0, procs.log("coordinator")

    rows = metrics(run_dir)
    eps = [r["epsilon"] for r in rows]
    assert 1 <= len(rows) < 10, eps  # stopped before the planned 10 rounds
    assert eps == sorted(eps) and eps[-1] <= 5.0
    for r in rows:
        assert (r["delta"], r["noise_multiplier"], r["clip_norm"], r["sample_rate"]) == (
            1e-5,
            1.0,
            2.0,
            0.5,
        )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "budget_exhausted"
    assert "--target-epsilon" in summary["stop_reason"], summary["stop_reason"]
    assert f"over {len(rows)} rounds" in summary["privacy"], summary["privacy"]
    assert "2 of 4 clients per round" in summary["privacy"]
    log = procs.log("coordinator")
    assert "privacy budget reached" in log and "budget_exhausted" in log


FLEET = [
    "+scenario=fleet_1000",
    "rounds=20",
    "simulation.clients_per_round=100",
    "dataset.iid=true",
    "dataset.sigma_log=0",  # equal sizes: DP-FedAvg weighs clients equally, FedAvg by size
]


def test_1000_clients_with_central_dp_stay_within_5_points(procs: Procs, tmp_path: Path):
    runs = {}
    for name, extra in {
        "plain": [],
        "central": ["privacy=central", "privacy.clip_norm=0.3"],
        "distributed": ["privacy=distributed", "secagg=secaggplus", "privacy.clip_norm=0.3"],
    }.items():
        run_dir = tmp_path / name
        proc = procs.start(name, "simulate", *FLEET, *extra, f"hydra.run.dir={run_dir}")
        assert procs.wait(proc, 300, name) == 0, procs.log(name)
        runs[name] = metrics(run_dir)[-1]
    plain, central, distributed = runs["plain"], runs["central"], runs["distributed"]
    assert abs(plain["eval_accuracy"] - central["eval_accuracy"]) <= 0.05, (plain, central)
    assert central["noise_multiplier"] == 1.0 and central["sample_rate"] == 0.1
    assert 3 < central["epsilon"] < 6  # RDP: 4.22 for q=0.1, sigma=1, 20 rounds, delta=1e-5
    assert "privacy: (ε=" in procs.log("central")
    # the clients add the noise under SecAgg+: same epsilon, comparable accuracy
    assert distributed["secagg_survivors"] == 100
    assert abs(distributed["epsilon"] - central["epsilon"]) <= 0.01 * central["epsilon"]
    assert abs(distributed["eval_accuracy"] - central["eval_accuracy"]) <= 0.05


def test_local_dp_sites_report_epsilon_and_enforce_their_limit(procs: Procs, tmp_path: Path):
    port, run_dir = free_port(), tmp_path / "local"
    coord = procs.coordinator(
        "coordinator",
        port,
        run_dir,
        "--task",
        "digits",
        "--rounds",
        "3",
        "--min-clients",
        "3",
        "--privacy",
        "local",
        "--noise-multiplier",
        "1.0",
        "--clip-norm",
        "1.0",
    )
    procs.client("site0", port, 0, 3)
    procs.client("site1", port, 1, 3, "--max-epsilon", "1000")
    procs.client("site2", port, 2, 3, "--max-epsilon", "0.5")  # refuses: one round costs more
    assert procs.wait(coord, 180, "coordinator") == 0, procs.log("coordinator")
    rows = metrics(run_dir)
    assert [r["num_clients"] for r in rows] == [2, 2, 2]
    eps = [r["epsilon"] for r in rows]
    assert 0 < eps[0] < eps[1] < eps[2], eps
    reasons = dict(
        query(run_dir, "SELECT site, reason FROM participants WHERE round = 1 AND phase = 'fit'")
    )
    assert "--max-epsilon" in reasons["site-2"], reasons
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "record-level DP at every site over 3 rounds" in summary["privacy"]
