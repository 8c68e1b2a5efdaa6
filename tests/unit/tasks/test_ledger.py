"""A site's privacy ledger on disk: it reads back after a restart, each charge is committed
before it is reported, and a file that does not read back is an error, never an empty ledger.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fedops.core.privacy.accountant import RoundEvent
from fedops.tasks import ledger as site_ledger
from fedops.tasks.ledger import Charge, LedgerError, SiteLedger

EVENT = RoundEvent(noise_multiplier=1.1, sampling="poisson", sample_rate=0.125)


def test_the_ledger_is_persisted_and_a_new_one_on_the_same_dir_continues(tmp_path: Path):
    first = SiteLedger(tmp_path)
    assert first.charges() == [] and first.epsilon(1e-5) == 0.0
    first.spend(Charge("run-a", 1, EVENT, 8), 1e-5)
    spent = first.spend(Charge("run-a", 2, EVENT, 8), 1e-5)
    reopened = SiteLedger(tmp_path)  # a restarted agent
    assert reopened.charges() == first.charges()
    assert reopened.epsilon(1e-5) == pytest.approx(spent, rel=1e-12)
    with sqlite3.connect(tmp_path / SiteLedger.FILE) as conn:
        rows = conn.execute("SELECT run_id, round, event, steps FROM charges").fetchall()
    assert [(r[0], r[1], json.loads(r[2]), r[3]) for r in rows] == [
        ("run-a", n, EVENT.to_json(), 8) for n in (1, 2)
    ]


def test_a_charge_is_synced_and_committed_before_spend_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    ledger = SiteLedger(tmp_path)
    ledger.spend(Charge("", 3, EVENT, 8), 1e-5)  # creates the file
    monkeypatch.setattr(sqlite3, "connect", traced)
    ledger.spend(Charge("", 4, EVENT, 8), 1e-5)
    insert = next(i for i, s in enumerate(statements) if s.startswith("INSERT"))
    # the writing connection syncs fully, and the row is committed before spend reads back
    assert statements[insert - 2 : insert] == ["PRAGMA synchronous=FULL", "BEGIN "]
    assert statements[insert + 1] == "COMMIT"


def _ledger_with(tmp_path: Path, event: str, steps: object = 8) -> Path:
    SiteLedger(tmp_path).spend(Charge("", 1, EVENT, 8), 1e-5)
    path = tmp_path / SiteLedger.FILE
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE charges SET event = ?, steps = ?", (event, steps))
    return path


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(b"not a database" * 100),
        lambda path: path.write_bytes(path.read_bytes()[:100]),  # truncated
        lambda path: _ledger_with(path.parent, "{not json"),
        lambda path: _ledger_with(path.parent, json.dumps({"noise_multiplier": 1.0})),
        lambda path: _ledger_with(path.parent, json.dumps({**EVENT.to_json(), "x": 1})),
        lambda path: _ledger_with(
            path.parent, json.dumps({"noise_multiplier": 1.0, "sampling": "known"})
        ),
        lambda path: _ledger_with(path.parent, json.dumps(EVENT.to_json()), steps=0),
        lambda path: _ledger_with(path.parent, json.dumps(EVENT.to_json()), steps="eight"),
        lambda path: sqlite3.connect(path).execute("PRAGMA user_version = 9").connection.close(),
    ],
    ids=[
        "garbage",
        "truncated",
        "event-json",
        "event-keys",
        "unknown-key",
        "not-poisson",
        "no-steps",
        "text-steps",
        "schema-version",
    ],
)
def test_a_ledger_that_does_not_read_back_is_an_error_never_zero(tmp_path: Path, damage):
    ledger = SiteLedger(tmp_path)
    ledger.spend(Charge("", 1, EVENT, 8), 1e-5)
    damage(tmp_path / SiteLedger.FILE)
    with pytest.raises(LedgerError, match="cannot be read"):
        SiteLedger(tmp_path).epsilon(1e-5)
    before = (tmp_path / SiteLedger.FILE).read_bytes()
    with pytest.raises(LedgerError, match="refusing DP training"):
        SiteLedger(tmp_path).spend(Charge("", 2, EVENT, 8), 1e-5)
    assert (tmp_path / SiteLedger.FILE).read_bytes() == before  # nothing appended to it


def test_a_failed_write_raises_and_records_nothing(tmp_path: Path, monkeypatch):
    ledger = SiteLedger(tmp_path)
    ledger.spend(Charge("", 1, EVENT, 8), 1e-5)

    def disk_error(path: Path, charge: Charge) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(site_ledger, "_append", disk_error)
    with pytest.raises(LedgerError, match="not sent"):
        ledger.spend(Charge("", 2, EVENT, 8), 1e-5)
    assert len(SiteLedger(tmp_path).charges()) == 1
