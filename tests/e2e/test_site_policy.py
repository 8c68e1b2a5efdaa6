"""Site policies are enforced by the site itself, with real coordinator and agent processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from procs import ENV, Procs, metrics, query, wait_until

pytestmark = pytest.mark.slow


def _events(site_dir: Path) -> list[dict]:
    lines = (site_dir / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_round_limit_and_withdrawn_consent_are_enforced_at_the_site(procs: Procs, tmp_path: Path):
    run_dir = tmp_path / "run"
    consent = tmp_path / "consent.json"
    consent.write_text('{"consent": true}')
    coord, port = procs.coordinator("coordinator", run_dir, task="digits", rounds=4, min_clients=2)
    procs.client("site0", port, 0, 3)
    procs.client("site1", port, 1, 3, max_rounds=2)
    leaver = procs.client("site2", port, 2, 3, consent_file=consent)
    wait_until(lambda: len(metrics(run_dir)) >= 1, 120, "round 1")
    consent.write_text('{"consent": false}')  # site2 withdraws during the run
    assert procs.wait(leaver, 120, "site2") == 0, procs.log("site2")
    assert procs.wait(coord, 240, "coordinator") == 0, procs.log("coordinator")

    declined = query(run_dir, "SELECT round, node_id, reason FROM rejections WHERE code='DECLINED'")
    limit = [r for r in declined if "limit of 2 rounds" in r[2]]
    assert {r[0] for r in limit} == {3, 4}  # site1 trains rounds 1-2 only
    assert any("consent is withdrawn" in r[2] for r in declined)
    site2 = _events(tmp_path / "site2")
    assert "consent_withdrawn" in [e["event"] for e in site2]
    withdrawn = next(e for e in site2 if e["event"] == "consent_withdrawn")
    later = [e for e in site2 if e["seq"] > withdrawn["seq"]]
    assert not [e for e in later if e["event"] in ("model_received", "update_sent")]
    site1 = _events(tmp_path / "site1")
    trained = {e["payload"]["round"] for e in site1 if e["event"] == "update_sent"}
    assert trained and max(trained) <= 2  # (it may have joined after round 1 began)
    assert [r["round"] for r in metrics(run_dir)] == [1, 2, 3, 4]


def test_a_site_refuses_task_code_it_did_not_agree_to(tmp_path: Path):
    allowed = "0" * 64
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedops",
            "client",
            "--task",
            "digits",
            "--site",
            "0",
            "--num-sites",
            "1",
            "--run-dir",
            str(tmp_path / "site"),
            "--allowed-task",
            allowed,
            "--max-retries",
            "0",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert done.returncode == 1
    assert "which this site's policy does not allow" in done.stderr
    events = _events(tmp_path / "site")
    assert events[-1]["event"] == "policy_refused"
    bad = subprocess.run(
        [sys.executable, "-m", "fedops", "client", "--task", "digits", "--allowed-task", "xyz"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert bad.returncode == 2 and "--allowed-task" in bad.stderr
