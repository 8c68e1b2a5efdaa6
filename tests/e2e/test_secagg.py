"""SecAgg+ with real coordinator and client processes on loopback, clients killed mid-protocol."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from procs import Procs, journal, metrics, query, wait_until
from safetensors.numpy import load_file

pytestmark = pytest.mark.slow

NUM_SITES = 8
ROUNDS = 3

# Digits, but the call number FEDOPS_TEST_SLOW_CALL of train() sleeps first, so the
# test can kill the site while it trains under SecAgg (after it shared its keys).
SLOW_TASK = """
import os
import time

from fedops.core.training import train as default_train
from fedops.tasks.digits import make_task

_digits = make_task()
build_model = _digits.build_model
load_data = _digits.load_data
_calls = 0


def train(model, data, config):
    global _calls
    _calls += 1
    if _calls == int(os.environ.get("FEDOPS_TEST_SLOW_CALL", "0")):
        time.sleep(60)
    return default_train(model, data, config)
"""


def _coordinator(procs: Procs, name: str, run_dir: Path, **extra: str):
    return procs.coordinator(
        name,
        run_dir,
        task="digits",
        rounds=ROUNDS,
        min_clients=NUM_SITES,
        round_timeout=120,
        # 5x the default 2 s heartbeat: a loaded machine must not drop a healthy site
        liveness_timeout=10,
        **extra,
    )


def _pushed(site_dir: Path, server_round: int, stage: str) -> bool:
    return any(
        e.get("event") == "pushed" and e.get("round") == server_round and e.get("secagg") == stage
        for e in journal(site_dir)
    )


def test_secagg_round_survives_two_killed_clients(procs: Procs, tmp_path: Path):
    run_dir = tmp_path / "secure"
    coord, port = _coordinator(procs, "coordinator", run_dir, secagg="secaggplus")
    slow = tmp_path / "slow_task.py"
    slow.write_text(SLOW_TASK)
    for i in range(NUM_SITES - 1):
        procs.client(f"site{i}", port, i, NUM_SITES, require_secagg=True)
    procs.client(
        "site7",
        port,
        7,
        NUM_SITES,
        task=str(slow),
        env={"FEDOPS_TEST_SLOW_CALL": str(ROUNDS)},
    )
    # In the last round: site7 sleeps in training (it has shared its keys; it never sends
    # its masked input), site6 has sent its masked input but will not live to sign the
    # survivor set or unmask. The consistency check cannot start before site7 is declared
    # dropped, so site6 dies in between; its input still counts (its neighbours reveal its
    # self mask once the other six of the eight sites, a majority, signed the set).
    wait_until(
        lambda: (
            _pushed(tmp_path / "site7", ROUNDS, "shares")
            and _pushed(tmp_path / "site6", ROUNDS, "masked")
        ),
        180,
        "site7 training and site6 masked in the last round",
    )
    victims = {name: proc for name, proc in procs.procs if name in ("site6", "site7")}
    for proc in victims.values():
        proc.send_signal(signal.SIGKILL)
    assert procs.wait(coord, 120, "coordinator") == 0, procs.log("coordinator")

    rows = metrics(run_dir)
    assert len(rows) == ROUNDS
    assert [r["secagg_survivors"] for r in rows] == [8, 8, 7]  # site6's input still counts
    assert "secagg_error" not in rows[-1]
    fit = dict(
        query(
            run_dir,
            "SELECT site, outcome FROM participants WHERE round = ? AND phase = 'fit'",
            ROUNDS,
        )
    )
    assert fit["site-7"] == "dropped" and fit["site-6"] == "ok", fit
    assert not _pushed(tmp_path / "site6", ROUNDS, "signature")
    assert not _pushed(tmp_path / "site6", ROUNDS, "reveal")

    # What the coordinator stored: global models only, one per kept round, never an update.
    checkpoints = sorted((run_dir / "checkpoints").iterdir())
    assert [p.name for p in checkpoints] == [f"round-{r:05d}.safetensors" for r in range(4)]
    model = {k: v.shape for k, v in load_file(str(checkpoints[0])).items()}
    for path in checkpoints:
        assert {k: v.shape for k, v in load_file(str(path)).items()} == model, path
    tables = {t for (t,) in query(run_dir, "SELECT name FROM sqlite_master WHERE type='table'")}
    for table in tables:
        for column in query(run_dir, f"PRAGMA table_info({table})"):
            assert column[2].upper() != "BLOB", (table, column)

    # The same seeded run without SecAgg, losing site7 the same way, ends within 1 point.
    plain_dir = tmp_path / "plain"
    coord2, port2 = _coordinator(procs, "plain-coordinator", plain_dir)
    for i in range(NUM_SITES - 1):
        procs.client(f"plain{i}", port2, i, NUM_SITES)
    plain7 = procs.client(
        "plain7", port2, 7, NUM_SITES, task=str(slow), env={"FEDOPS_TEST_SLOW_CALL": str(ROUNDS)}
    )
    wait_until(
        lambda: any(
            e.get("event") == "model" and e.get("round") == ROUNDS
            for e in journal(tmp_path / "plain7")
        ),
        180,
        "plain7 training in the last round",
    )
    plain7.send_signal(signal.SIGKILL)
    assert procs.wait(coord2, 180, "plain coordinator") == 0, procs.log("plain-coordinator")
    plain = metrics(plain_dir)
    assert [r["num_clients"] for r in plain] == [8, 8, 7]
    secure, reference = rows[-1]["global_accuracy"], plain[-1]["global_accuracy"]
    assert abs(secure - reference) <= 0.01, (secure, reference)
    assert secure > 0.8


def test_site_that_requires_secagg_declines_plain_training(procs: Procs, tmp_path: Path):
    run_dir = tmp_path / "run"
    coord, port = procs.coordinator("coordinator", run_dir, task="digits", rounds=1, min_clients=2)
    procs.client("site0", port, 0, 2)
    procs.client("site1", port, 1, 2, require_secagg=True)
    assert procs.wait(coord, 120, "coordinator") == 0, procs.log("coordinator")
    rows = dict(query(run_dir, "SELECT site, reason FROM participants WHERE phase = 'fit'"))
    assert "declined" in rows["site-1"] and "--require-secagg" in rows["site-1"], rows
    assert metrics(run_dir)[0]["num_clients"] == 1
