"""A standing federation end to end: ``fedops serve``, standing sites, runs submitted.

Real processes on loopback: one serve process, three ``fedops client --standing``
agents started once, two runs with different tasks and training settings submitted
one after the other, one site that declines the second run by its policy (it does
not run that task), and the serve process SIGKILLed between the runs and restarted
on the same port. The agents are never restarted.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from procs import Procs, metrics, run_fedops, wait_until

from fedops.coordinator.listening import read_listening

pytestmark = pytest.mark.slow

RUN_1 = """\
task: digits
rounds: 2
min_clients: 3
epochs: 1
lr: 0.1
monitoring: none
round_timeout: 60
"""
RUN_2 = """\
task: digits-mlp
rounds: 2
min_clients: 2
client: {epochs: 2, batch_size: 32, lr: 0.05}
strategy: fedavgm
monitoring: none
round_timeout: 60
"""


def _audit(path: Path) -> list[dict[str, Any]]:
    lines = (path / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _events(path: Path, event: str) -> list[dict[str, Any]]:
    return [entry["payload"] for entry in _audit(path) if entry["event"] == event]


def _state(root: Path, run: str) -> str:
    listed = run_fedops("run", "list", "--root", str(root), timeout=60)
    assert listed.returncode == 0, listed.stderr
    line = next((row for row in listed.stdout.splitlines() if row.startswith(run)), "")
    return line.split()[1] if line else ""


def _wait_idle(procs: Procs, times: int, logs: Any) -> None:
    """Until every standing site has said it is waiting for a run ``times`` times."""

    def idle() -> bool:
        said = [procs.log(f"site{s}").count("waiting for a run at") for s in range(3)]
        return all(n >= times for n in said)

    wait_until(idle, 120, f"every site to wait for a run ({times})", logs)


def _serve(procs: Procs, root: Path, name: str, port: int = 0) -> int:
    proc = procs.start(name, "serve", "--root", str(root), "--address", f"127.0.0.1:{port}")

    def bound() -> int | None:
        assert proc.poll() is None, procs.log(name)[-3000:]
        record = read_listening(root, proc.pid)
        return record.port if record is not None else None

    return int(wait_until(bound, 60, f"{name} to listen", lambda: procs.log(name)[-3000:]))


def test_standing_sites_take_two_runs_across_a_coordinator_kill(tmp_path: Path) -> None:
    procs = Procs(tmp_path)
    root = tmp_path / "federation"
    try:
        serve = _serve(procs, root, "serve-1")
        sites = []
        for site in range(3):
            tasks = ["digits", "digits-mlp"] if site < 2 else ["digits"]  # site 2: no MLP
            task_flags = [part for task in tasks for part in ("--task", task)]
            sites.append(
                procs.start(
                    f"site{site}",
                    "client",
                    "--standing",
                    *task_flags,
                    "--coordinator",
                    f"127.0.0.1:{serve}",
                    "--site",
                    str(site),
                    "--num-sites",
                    "3",
                    "--run-dir",
                    str(tmp_path / f"site{site}"),
                )
            )
        (tmp_path / "run1.yaml").write_text(RUN_1)
        submitted = run_fedops("run", "submit", str(tmp_path / "run1.yaml"), "--root", str(root))
        assert submitted.returncode == 0, submitted.stderr
        assert "run-0001" in submitted.stdout
        logs = lambda: "\n".join(procs.log(n)[-2000:] for n in ("serve-1", "site0", "site2"))  # noqa: E731
        wait_until(lambda: _state(root, "run-0001") == "completed", 240, "run 1", logs)
        _wait_idle(procs, 1, logs)  # every site back to asking for a run

        # the coordinator dies hard between the runs; the sites keep asking
        procs.procs[0][1].send_signal(signal.SIGKILL)
        procs.procs[0][1].wait(timeout=10)
        time.sleep(3)  # down longer than a site's 2 s between questions: each one notices
        _serve(procs, root, "serve-2", port=serve)
        # each site back (it says so once, after its outage) before run 2 exists: site 2
        # must see run 2 to decline it, not find it already over
        _wait_idle(procs, 2, logs)
        (tmp_path / "run2.yaml").write_text(RUN_2)
        # sites 0 and 1 paused (a slow host, not a restart) until site 2 has seen run 2: the
        # two of them could otherwise finish it between two of site 2's questions
        for site in sites[:2]:
            site.send_signal(signal.SIGSTOP)
        submitted = run_fedops("run", "submit", str(tmp_path / "run2.yaml"), "--root", str(root))
        assert submitted.returncode == 0, submitted.stderr
        declined = lambda: _events(tmp_path / "site2", "run_declined")  # noqa: E731
        wait_until(declined, 120, "site 2 to decline run 2", logs)
        for site in sites[:2]:
            site.send_signal(signal.SIGCONT)
        logs2 = lambda: "\n".join(procs.log(n)[-2000:] for n in ("serve-2", "site0", "site2"))  # noqa: E731
        wait_until(lambda: _state(root, "run-0002") == "completed", 240, "run 2", logs2)

        assert all(site.poll() is None for site in sites), "a standing site exited"
        runs = root / "runs"
        first, second = (
            json.loads((runs / run / "summary.json").read_text())
            for run in ("run-0001", "run-0002")
        )
        # each run recorded its own task and training settings
        assert (first["task"], first["train"]["epochs"], first["train"]["lr"]) == ("digits", 1, 0.1)
        assert (second["task"], second["strategy"]) == ("digits-mlp", "fedavgm")
        assert (second["train"]["epochs"], second["train"]["batch_size"]) == (2, 32)
        assert [row["num_clients"] for row in metrics(runs / "run-0001")] == [3, 3]
        assert [row["num_clients"] for row in metrics(runs / "run-0002")] == [2, 2]
        # the refusal is on the declining site's signed record, with the rule it applied
        declined = _events(tmp_path / "site2", "run_declined")
        assert [d["run_id"] for d in declined] == [second["run_id"]]
        assert "'digits-mlp' is not one this site runs" in declined[0]["reason"]
        for site in (0, 1):
            left = _events(tmp_path / f"site{site}", "run_left")
            assert [(e["run_id"], e["outcome"]) for e in left] == [
                (first["run_id"], "finished (the run is complete)"),
                (second["run_id"], "finished (the run is complete)"),
            ]
            # each run trained with its own settings at the site, recorded in its journal
            per_run = tmp_path / f"site{site}" / "runs" / second["run_id"]
            trained = [e["train"] for e in _events(per_run, "model_received") if e.get("train")]
            assert trained, f"site {site} took no training task in run 2"
            assert (trained[0]["epochs"], trained[0]["batch_size"]) == (2, 32)
        verified = run_fedops("audit", "verify", str(runs / "run-0002"))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        verified = run_fedops("audit", "verify", str(tmp_path / "site2"))
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        procs.kill_all()
