"""Flower apps run unchanged as deployed sites: ``fedops client --flower-app`` against a
real ``fedops coordinator`` on loopback (issue 20 items 4-5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from procs import Procs, metrics

pytest.importorskip("flwr")
pytestmark = pytest.mark.slow

SUPPORT = Path(__file__).resolve().parents[1] / "support"  # where flower_apps lives


def _flower_client(procs: Procs, name: str, port: int, site: int, *app: str):
    return procs.start(
        name,
        "client",
        "--coordinator",
        f"127.0.0.1:{port}",
        "--flower-app",
        *app,
        "--site",
        str(site),
        "--num-sites",
        "2",
        "--run-dir",
        str(procs.workdir / name),
        env={"PYTHONPATH": str(SUPPORT)},
    )


@pytest.mark.parametrize(
    "app",
    [
        (
            "flower_apps.quickstart_torch:app",
            "--flower-initial",
            "flower_apps.quickstart_torch:Net",
        ),
        ("flower_apps.sklearn_logreg:app",),
    ],
    ids=["client_app_torch", "numpy_client_sklearn"],
)
def test_two_flower_app_sites_train_with_a_coordinator(procs: Procs, tmp_path: Path, app):
    run_dir = tmp_path / "run"
    coord, port = procs.coordinator(
        "coordinator", run_dir, rounds=3, min_clients=2, lr=0.1, monitoring="none"
    )
    sites = [_flower_client(procs, f"site{i}", port, i, *app) for i in range(2)]
    assert procs.wait(coord, 240, "coordinator") == 0, procs.log("coordinator")
    for i, site in enumerate(sites):
        assert procs.wait(site, 60, f"site{i}") == 0, procs.log(f"site{i}")
    assert "taking the initial model from the first client" in procs.log("coordinator")
    rows = metrics(run_dir)
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert all(r["num_clients"] == 2 for r in rows)
    assert rows[-1]["eval_accuracy"] > 0.7, rows
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"


def test_a_flower_app_site_declines_monitoring_by_name(procs: Procs, tmp_path: Path):
    """The coordinator's default monitoring asks for drift statistics a Flower app cannot
    give: the sites decline those evaluations, naming --monitoring none; training goes on."""
    run_dir = tmp_path / "run"
    coord, port = procs.coordinator("coordinator", run_dir, rounds=1, min_clients=2)
    sites = [
        _flower_client(procs, f"site{i}", port, i, "flower_apps.sklearn_logreg:app")
        for i in range(2)
    ]
    assert procs.wait(coord, 240, "coordinator") == 0, procs.log("coordinator")
    for i, site in enumerate(sites):
        assert procs.wait(site, 60, f"site{i}") == 0, procs.log(f"site{i}")
    assert "--monitoring none" in procs.log("site0")
