"""Crashes, stragglers, late joiners and restarts, with real processes on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from procs import Procs, free_port, journal, metrics, query, slow_task, wait_until

pytestmark = pytest.mark.slow


def test_killed_client_does_not_stall_the_round(procs: Procs, tmp_path: Path):
    port, run_dir = free_port(), tmp_path / "run"
    coord = procs.coordinator(
        "coordinator",
        port,
        run_dir,
        "--task",
        "digits",
        "--rounds",
        "2",
        "--min-clients",
        "3",
        "--round-timeout",
        "120",
        "--liveness-timeout",
        "3",
    )
    for i in range(2):
        procs.client(f"site{i}", port, i, 3)
    victim = procs.client(
        "site2", port, 2, 3, task=slow_task(tmp_path), env={"FEDOPS_TEST_SLEEP_S": "60"}
    )
    # Kill the victim while it trains in round 2 (it sleeps 60 s there).
    wait_until(
        lambda: any(
            e.get("event") == "model" and e.get("round") == 2 and e.get("kind") == "TASK_KIND_FIT"
            for e in journal(tmp_path / "site2")
        ),
        120,
        "site2 training round 2",
    )
    victim.send_signal(signal.SIGKILL)
    assert procs.wait(coord, 60, "coordinator") == 0, procs.log("coordinator")

    rows = metrics(run_dir)
    assert [r["num_clients"] for r in rows] == [3, 2]
    assert rows[1]["duration_s"] < 30  # not the 120 s deadline, nor the victim's 60 s sleep
    outcomes = query(
        run_dir,
        "SELECT outcome, reason FROM participants "
        "WHERE round = 2 AND phase = 'fit' AND site = 'site-2'",
    )
    assert outcomes and outcomes[0][0] == "dropped", outcomes
    assert "silent" in outcomes[0][1]


def test_straggler_is_cut_at_the_deadline_and_its_late_result_refused(procs: Procs, tmp_path: Path):
    port, run_dir = free_port(), tmp_path / "run"
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
        "--round-timeout",
        "4",
    )
    for i in range(2):
        procs.client(f"site{i}", port, i, 3)
    procs.client(
        "site2",
        port,
        2,
        3,
        "--max-retries",
        "1",
        task=slow_task(tmp_path),
        env={"FEDOPS_TEST_SLEEP_S": "6"},
    )
    assert procs.wait(coord, 120, "coordinator") == 0, procs.log("coordinator")

    rows = metrics(run_dir)
    assert rows[0]["num_clients"] == 3
    assert rows[1]["num_clients"] == 2
    assert rows[1]["duration_s"] < 20  # fit and evaluate each cut at 4 s
    timed_out = query(
        run_dir,
        "SELECT COUNT(*) FROM participants WHERE round = 2 AND "
        "site = 'site-2' AND outcome = 'timed_out'",
    )
    assert timed_out[0][0] >= 1
    refused = [e for e in journal(tmp_path / "site2") if e.get("event") == "refused"]
    assert refused and "stale result" in refused[0]["reason"], journal(tmp_path / "site2")
    assert refused[0]["code"] == "FAILED_PRECONDITION"


def test_late_joiner_gets_the_current_model(procs: Procs, tmp_path: Path):
    port, run_dir = free_port(), tmp_path / "run"
    coord = procs.coordinator(
        "coordinator", port, run_dir, "--task", "digits", "--rounds", "12", "--min-clients", "2"
    )
    for i in range(2):  # 1.5 s per local training: the run outlasts the late start-up
        procs.client(
            f"site{i}", port, i, 3, task=slow_task(tmp_path), env={"FEDOPS_TEST_SLEEP_S": "1.5"}
        )
    wait_until(lambda: len(metrics(run_dir)) >= 2, 120, "two rounds")
    late = procs.client("site2", port, 2, 3)
    assert procs.wait(coord, 120, "coordinator") == 0, procs.log("coordinator")
    assert procs.wait(late, 30, "site2") == 0

    first_fit = next(
        e
        for e in journal(tmp_path / "site2")
        if e.get("event") == "model" and e.get("kind") == "TASK_KIND_FIT"
    )
    r = first_fit["round"]
    assert r >= 3
    (expected,) = query(run_dir, "SELECT model_digest FROM rounds WHERE round = ?", r - 1)[0]
    assert first_fit["model_digest"] == expected
    joined = query(
        run_dir,
        "SELECT COUNT(*) FROM participants WHERE site = 'site-2' "
        "AND phase = 'fit' AND outcome = 'ok'",
    )
    assert joined[0][0] >= 1


def test_coordinator_killed_and_restarted_resumes_with_the_same_model(procs: Procs, tmp_path: Path):
    port, run_dir = free_port(), tmp_path / "run"
    args = ("--task", "digits", "--rounds", "6", "--min-clients", "2")
    first = procs.coordinator("coordinator1", port, run_dir, *args)
    clients = [procs.client(f"site{i}", port, i, 2, "--max-retries", "60") for i in range(2)]
    wait_until(lambda: len(metrics(run_dir)) >= 3, 120, "three rounds")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    (last,) = query(run_dir, "SELECT MAX(round) FROM rounds")[0]
    (digest,) = query(run_dir, "SELECT model_digest FROM rounds WHERE round = ?", last)[0]
    (run_id,) = query(run_dir, "SELECT run_id FROM runs")[0]
    assert 3 <= last < 6

    second = procs.coordinator("coordinator2", port, run_dir, *args)
    assert procs.wait(second, 180, "coordinator2") == 0, procs.log("coordinator2")
    for i, client in enumerate(clients):
        assert procs.wait(client, 30, f"site{i}") == 0, procs.log(f"site{i}")

    log = procs.log("coordinator2")
    assert f"resuming run {run_id} at round {last + 1}" in log
    assert digest in log
    assert [r["round"] for r in metrics(run_dir)] == [1, 2, 3, 4, 5, 6]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run_id"] == run_id and summary["status"] == "completed"
    # The clients trained round last+1 on exactly the checkpointed model.
    fetched = [
        e
        for e in journal(tmp_path / "site0")
        if e.get("event") == "model"
        and e.get("round") == last + 1
        and e.get("kind") == "TASK_KIND_FIT"
    ]
    assert fetched and fetched[-1]["model_digest"] == digest
    # The signed audit chain went on across the crash: it verifies, says it was reopened,
    # commits no round twice, and its digests agree with both sites' own logs.
    entries = [json.loads(x) for x in (run_dir / "audit.jsonl").read_text().splitlines()]
    assert [e["seq"] for e in entries] == list(range(len(entries)))
    assert "log_reopened" in [e["event"] for e in entries]
    committed = [e["payload"]["round"] for e in entries if e["event"] == "round_committed"]
    assert len(committed) == len(set(committed)) and set(range(last + 1, 7)) <= set(committed)
    logs = [str(tmp_path / f"site{i}" / "audit.jsonl") for i in range(2)]
    export = subprocess.run(
        [sys.executable, "-m", "fedops", "audit", "export", str(run_dir)]
        + [a for log in logs for a in ("--site-log", log)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert export.returncode == 0, export.stdout + export.stderr
