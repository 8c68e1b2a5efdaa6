"""DP with real coordinator and client processes: ε per round, the budget stop, every mode.

Every expected ε is dp_accounting's (PLD, add/remove adjacency) composed here
over the events the run recorded, the replay an auditor would do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dp_accounting as dpa
import pytest
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from procs import Procs, metrics, query, run_fedops

from fedops.tasks.ledger import SiteLedger

pytestmark = pytest.mark.slow


def pld_epsilon(events: list[Any], delta: float = 1e-5) -> float:
    accountant = PLDAccountant()
    for event in events:
        accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def dp_event(raw: dict[str, Any]) -> Any:
    """A round's recorded ``privacy_event`` as dp_accounting's event."""
    gaussian = dpa.GaussianDpEvent(raw["noise_multiplier"])
    if raw["sampling"] == "poisson":
        return dpa.PoissonSampledDpEvent(raw["sample_rate"], gaussian)
    assert raw["sampling"] == "known", raw
    return gaussian


def assert_pld_bound(reported: float, oracle: float) -> None:
    """fedops' PLD ε (pessimistic, coarser grid) bounds dp_accounting's from above, closely."""
    assert oracle * (1 - 1e-6) <= reported <= oracle * (1 + 1e-3), (reported, oracle)


def test_central_dp_reports_epsilon_and_the_budget_stops_the_run(procs: Procs, tmp_path: Path):
    run_dir = tmp_path / "run"
    coord, port = procs.coordinator(
        "coordinator",
        run_dir,
        task="digits",
        rounds=10,
        min_clients=4,
        clients_per_round=2,
        privacy="central",
        noise_multiplier=1.0,
        clip_norm=2.0,
        target_epsilon=5.0,
    )
    for i in range(4):
        procs.client(f"site{i}", port, i, 4)
    assert procs.wait(coord, 180, "coordinator") == 0, procs.log("coordinator")

    rows = metrics(run_dir)
    eps = [r["epsilon"] for r in rows]
    # Poisson at q = 2/4, σ = 1: dp_accounting puts 2 rounds under 5 and 3 above it
    poisson = dpa.PoissonSampledDpEvent(0.5, dpa.GaussianDpEvent(1.0))
    assert pld_epsilon([poisson] * 2) <= 5.0 < pld_epsilon([poisson] * 3)
    assert len(rows) == 2, eps  # stopped before the round that could pass the target
    assert eps == sorted(eps) and eps[-1] <= 5.0
    for n, r in enumerate(rows, start=1):
        assert (r["delta"], r["noise_multiplier"], r["clip_norm"], r["accountant"]) == (
            1e-5,
            1.0,
            2.0,
            "pld",
        )
        assert r["privacy_event"] == {
            "noise_multiplier": 1.0,
            "sampling": "poisson",
            "sample_rate": 0.5,
        }
        assert_pld_bound(r["epsilon"], pld_epsilon([poisson] * n))
        assert "train_loss" not in r and "dp_clipped_fraction" not in r  # outside the noise
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "budget_exhausted"
    assert "--target-epsilon" in summary["stop_reason"], summary["stop_reason"]
    sentence = summary["privacy"]
    assert f"over {len(rows)} rounds" in sentence, sentence
    for words in ("Poisson", "add/remove", "PLD", "coordinator", "released models"):
        assert words in sentence, (words, sentence)
    assert "NOT private" not in sentence  # the coordinator draws from the OS, not --seed
    log = procs.log("coordinator")
    assert "privacy budget reached" in log and "budget_exhausted" in log
    _assert_participants_hidden(run_dir, [procs.workdir / f"site{i}" for i in range(4)])


def _assert_participants_hidden(run_dir: Path, site_dirs: list[Path]) -> None:
    """The signed log names no node of a DP round; the operator's key maps them back."""
    entries = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    joined = {e["payload"]["node_id"] for e in entries if e["event"] == "node_joined"}
    assert len(joined) == 4
    per_round = [e for e in entries if e["payload"].get("round", 0) >= 1]
    assert {"model_sent", "update_received", "round_committed"} <= {e["event"] for e in per_round}
    for e in per_round:
        text = json.dumps(e["payload"])
        assert not any(node in text for node in joined), e
    key = run_dir / "participants.key"
    assert key.stat().st_mode & 0o777 == 0o600
    logs = [str(d / "audit.jsonl") for d in site_dirs if (d / "audit.jsonl").exists()]
    assert logs, site_dirs
    args = [a for log in logs for a in ("--site-log", log)]
    for with_key in (True, False):
        if not with_key:
            key.rename(run_dir / "elsewhere.key")
        out = run_fedops("audit", "export", str(run_dir), *args)
        assert out.returncode == 0, out.stderr
        report = json.loads((run_dir / "compliance.json").read_text())
        assert report["ok"] and report["mismatches"] == [], report["mismatches"]
        checked = {
            site["node_id"]
            for row in report["rounds"]
            if row["round"] >= 1
            for site in row["sites"]
        }
        if with_key:  # re-identified: the sites' own records match the coordinator's
            assert report["pseudonymous_rounds"] == [] and checked <= joined and checked
        else:
            assert report["pseudonymous_rounds"] == [1, 2] and not checked


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
        # the sites' accuracies are released for the comparison (outside the DP guarantee)
        "central": [
            "privacy=central",
            "privacy.clip_norm=0.3",
            "privacy.release_site_metrics=true",
        ],
        "distributed": [
            "privacy=distributed",
            "secagg=secaggplus",
            "privacy.clip_norm=0.3",
            "privacy.release_site_metrics=true",
        ],
    }.items():
        run_dir = tmp_path / name
        proc = procs.start(name, "simulate", *FLEET, *extra, f"hydra.run.dir={run_dir}")
        assert procs.wait(proc, 300, name) == 0, procs.log(name)
        runs[name] = metrics(run_dir)[-1]
    plain, central, distributed = runs["plain"], runs["central"], runs["distributed"]
    assert abs(plain["eval_accuracy"] - central["eval_accuracy"]) <= 0.05, (plain, central)
    assert central["noise_multiplier"] == 1.0
    q = {"noise_multiplier": 1.0, "sampling": "poisson", "sample_rate": 0.1}
    assert central["privacy_event"] == q
    # PLD for q = 0.1, σ = 1, 20 rounds, δ = 1e-5: 3.59 (RDP said 4.22)
    assert_pld_bound(central["epsilon"], pld_epsilon([dp_event(q)] * 20))
    assert "privacy: (ε=" in procs.log("central")
    # the clients add the noise under SecAgg+, but the coordinator knows the cohort: no
    # amplification by sampling, so ε is the Gaussian's over the noise the survivors left
    assert distributed["secagg_survivors"] == 100
    assert distributed["privacy_event"]["sampling"] == "known"
    rows = metrics(tmp_path / "distributed")
    assert_pld_bound(
        distributed["epsilon"], pld_epsilon([dp_event(r["privacy_event"]) for r in rows])
    )
    assert distributed["epsilon"] > 2 * central["epsilon"]  # 10.7-ish against 3.59
    assert abs(distributed["eval_accuracy"] - central["eval_accuracy"]) <= 0.05


def test_local_dp_sites_keep_their_epsilon_and_enforce_their_limit(procs: Procs, tmp_path: Path):
    run_dir = tmp_path / "local"
    coord, port = procs.coordinator(
        "coordinator",
        run_dir,
        task="digits",
        rounds=3,
        min_clients=3,
        privacy="local",
        noise_multiplier=1.0,
        clip_norm=1.0,
    )
    procs.client("site0", port, 0, 3)
    procs.client("site1", port, 1, 3, max_epsilon=1000)
    procs.client("site2", port, 2, 3, max_epsilon=0.5)  # refuses: one round costs more
    assert procs.wait(coord, 180, "coordinator") == 0, procs.log("coordinator")
    rows = metrics(run_dir)
    assert [r["num_clients"] for r in rows] == [2, 2, 2]
    # a site's ε depends on its record count: the coordinator is never told it
    assert not any("epsilon" in r for r in rows), rows
    assert "local_epsilon" not in (run_dir / "audit.jsonl").read_text()
    assert all(r["noise_multiplier"] == 1.0 and r["delta"] == 1e-5 for r in rows)
    # a DP site answers with its noised model, one example and no metrics
    counts = query(
        run_dir,
        "SELECT DISTINCT num_examples FROM participants WHERE phase = 'fit' AND outcome = 'ok'",
    )
    assert counts == [(1,)], counts
    reasons = dict(
        query(run_dir, "SELECT site, reason FROM participants WHERE round = 1 AND phase = 'fit'")
    )
    assert "--max-epsilon" in reasons["site-2"], reasons
    # each site's ε is in its own ledger and its own signed audit log, dp_accounting's replay
    for site in ("site0", "site1"):
        lines = (procs.workdir / site / "audit.jsonl").read_text().splitlines()
        spent = [e["payload"] for e in map(json.loads, lines) if e["event"] == "privacy_spent"]
        assert [e["round"] for e in spent] == [1, 2, 3], spent
        eps = [e["local_epsilon"] for e in spent]
        assert 0 < eps[0] < eps[1] < eps[2], eps
        accountant = PLDAccountant()
        for e in spent:  # every round's DP-SGD steps, as the site charged them
            accountant.compose(dp_event(e["privacy_event"]), e["steps"])
        oracle = float(accountant.get_epsilon(1e-5))
        assert oracle * (1 - 1e-6) <= eps[-1] <= oracle * (1 + 1e-2), (eps, oracle)
        assert eps[-1] == pytest.approx(SiteLedger(procs.workdir / site).epsilon(1e-5), rel=1e-12)
    assert not (procs.workdir / "site2" / SiteLedger.FILE).exists()  # it never trained
    summary = json.loads((run_dir / "summary.json").read_text())
    sentence = summary["privacy"]
    for words in (
        "record-level local DP at every site",
        "3 rounds",
        "against the coordinator",
        "own privacy ledger",
        "--max-epsilon",
    ):
        assert words in sentence, (words, sentence)
