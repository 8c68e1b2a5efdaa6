"""A site's privacy ledger: every round it trained with local DP-SGD, kept on its own disk.

The site, not the coordinator, enforces its ``max_epsilon``, so what it spent
must outlive the agent: it is kept in ``privacy_ledger.sqlite`` in the site's
run directory, committed (``synchronous=FULL``) before the update leaves, and
a restarted agent continues from it, across every run the site takes part in.
A file that does not read back refuses DP training: counting from zero would
let a crash or a damaged disk reset the site's budget.

ε is the PLD accountant's, unless RDP's (also an upper bound, and cheap) is
already above :data:`~fedops.core.privacy.local.PLD_CEILING`: the cost of a
PLD grows with the ε it describes, and a coordinator that asks an uncapped
site for little noise round after round would otherwise make every later
question cost minutes and gigabytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fedops.core.privacy.accountant import PrivacyLedger, RoundEvent
from fedops.core.privacy.local import PLD_CEILING


class LedgerError(Exception):
    """The site's privacy ledger cannot be read or written: no DP round may run or leave."""


@dataclass(frozen=True, slots=True)
class Charge:
    """One round a site trained with DP-SGD: ``steps`` compositions of ``event``."""

    run_id: str
    server_round: int
    event: RoundEvent
    steps: int


@dataclass(frozen=True, slots=True)
class Spent:
    """A round as this site charged it: what its own signed audit log records.

    Never sent to the coordinator: ε depends on the site's record count through
    the sample rate, so it would tell n from n - 1.
    """

    charge: Charge
    epsilon: float  # over every round in the ledger, this one included
    delta: float
    accountant: str  # "pld", or "rdp" above PLD_CEILING


def bound(ledger: PrivacyLedger, delta: float) -> tuple[float, str]:
    """``(ε, accountant)``: the PLD's ε, or RDP's where that is above :data:`PLD_CEILING`."""
    rdp = ledger.epsilon(delta, "rdp")
    if rdp > PLD_CEILING:
        return rdp, "rdp"
    return ledger.epsilon(delta, "pld"), "pld"


SCHEMA_VERSION = 1
SCHEMA = f"""
CREATE TABLE charges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    event TEXT NOT NULL,
    steps INTEGER NOT NULL
);
PRAGMA user_version = {SCHEMA_VERSION};
"""


class SiteLedger:
    """A site's own record-level privacy loss: every DP-SGD round it ever trained.

    With a directory, kept in ``privacy_ledger.sqlite`` there (one row per round,
    ``PRAGMA synchronous=FULL``) and re-read on every question, so a restarted
    agent, or a second process on the same directory, sees every charge. A file
    that does not read back as a ledger raises :class:`LedgerError` rather than
    count from zero. Without a directory (simulation), in memory.

    ε is over all rows, whatever run they came from: a record at this site is in
    every run's training data, so its loss composes across runs.
    """

    FILE = "privacy_ledger.sqlite"
    LOCK = "privacy_ledger.lock"

    def __init__(self, directory: Path | None = None) -> None:
        self.path = Path(directory) / self.FILE if directory is not None else None
        self._memory: list[Charge] = []
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the ledger from the cap check to the charge: two agents on one run
        directory (two federations, a restart racing the old process) otherwise both
        pass a check that only one round fits, and both train and send."""
        with self._thread_lock:
            if self.path is None:
                yield
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path.with_name(self.LOCK), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes, or the process dies
                yield
            finally:
                os.close(fd)

    def charges(self) -> list[Charge]:
        """Every recorded round, oldest first (:class:`LedgerError` if unreadable)."""
        if self.path is None:
            return list(self._memory)
        if not self.path.exists():
            return []
        try:
            return _read(self.path)
        except (sqlite3.Error, ValueError, TypeError, KeyError) as exc:
            raise LedgerError(
                f"this site's privacy ledger {self.path} cannot be read ({exc}); refusing "
                "DP training rather than count this site's privacy loss from zero. Restore "
                "the file from a backup (the site's audit log has the ε of every round "
                "it sent)."
            ) from exc

    def ledger(self, run_id: str | None = None) -> PrivacyLedger:
        """The charges (of run ``run_id`` only, when given) as one composition."""
        out = PrivacyLedger()
        for charge in self.charges():
            if run_id is None or charge.run_id == run_id:
                out.record(charge.event, rounds=charge.steps)
        return out

    def epsilon(self, delta: float, run_id: str | None = None) -> float:
        return bound(self.ledger(run_id), delta)[0]

    def epsilon_after(
        self, event: RoundEvent, steps: int, delta: float, run_id: str | None = None
    ) -> float:
        """ε if the site trains one more round of ``steps`` steps like ``event``: over
        every run, or over run ``run_id``'s rounds alone (a per-run cap)."""
        trial = self.ledger(run_id)
        trial.record(event, rounds=steps)
        return bound(trial, delta)[0]

    def spend(self, charge: Charge, delta: float) -> float:
        """Record ``charge`` durably (committed and synced on return); ε after it."""
        return self.record(charge, delta).epsilon

    def record(self, charge: Charge, delta: float) -> Spent:
        """Record ``charge`` durably (committed and synced on return); what it cost.

        Raises :class:`LedgerError` when the ledger is unreadable or the write fails:
        the caller must then not release what it trained.
        """
        self.append(charge)
        eps, accountant = bound(self.ledger(), delta)
        return Spent(charge, eps, delta, accountant)

    def append(self, charge: Charge) -> None:
        """Record ``charge`` durably, without working out ε (:meth:`record` does): for a
        caller that reports no ε per round (a simulated site; ε is read off the ledger).

        Raises :class:`LedgerError` as :meth:`record` does.
        """
        self.charges()  # never append to a ledger that does not read back
        if self.path is None:
            self._memory.append(charge)
            return
        try:
            _append(self.path, charge)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(
                f"could not record this round in the privacy ledger {self.path} ({exc}); "
                "the update is not sent"
            ) from exc


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
    return conn


def check_file(
    conn: sqlite3.Connection, version: int, *, application_id: int | None = None, what: str = ""
) -> None:
    """Raise ValueError unless ``conn``'s file is intact (``PRAGMA quick_check``) and of
    schema ``version`` (and ``application_id``, where given, then named ``what``): a damaged
    or foreign file must refuse DP training, not read back as fewer charges."""
    (check,) = conn.execute("PRAGMA quick_check").fetchone()
    if check != "ok":
        raise ValueError(f"integrity check: {check}")
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    if application_id is None:
        if found != version:
            raise ValueError(f"schema version {found}, expected {version}")
        return
    (app,) = conn.execute("PRAGMA application_id").fetchone()
    if (app, found) != (application_id, version):
        raise ValueError(f"not {what} of schema {version}")


def _read(path: Path) -> list[Charge]:
    conn = _connect(path)
    try:
        check_file(conn, SCHEMA_VERSION)
        rows = conn.execute("SELECT run_id, round, event, steps FROM charges ORDER BY id")
        return [_charge(*row) for row in rows.fetchall()]
    finally:
        conn.close()


def _charge(run_id: object, server_round: object, event: object, steps: object) -> Charge:
    """A row, checked: SQLite stores whatever it is given, so the types are not a given."""
    if not isinstance(run_id, str) or type(server_round) is not int or server_round < 0:
        raise ValueError(
            f"a charge needs a run id and a round >= 0, got {run_id!r}, {server_round!r}"
        )
    if type(steps) is not int or steps < 1 or not isinstance(event, str):
        raise ValueError(f"round {server_round}: a charge needs steps >= 1 and an event")
    parsed = RoundEvent.from_json(json.loads(event))
    if parsed.sampling != "poisson":
        raise ValueError(f"round {server_round}: local DP-SGD samples by Poisson, not {parsed}")
    return Charge(run_id, server_round, parsed, steps)


def _append(path: Path, charge: Charge) -> None:
    if not path.exists():
        _create(path)
    conn = _connect(path)
    try:
        with conn:
            conn.execute(
                "INSERT INTO charges (run_id, round, event, steps) VALUES (?, ?, ?, ?)",
                (
                    charge.run_id,
                    charge.server_round,
                    charge.event.key(),
                    charge.steps,
                ),
            )
    finally:
        conn.close()


def _create(path: Path) -> None:
    """An empty ledger, built aside and renamed into place: a crash while creating it
    leaves no file (an empty ledger) rather than a half-made one (a refusal)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(path.name + ".new")
    aside.unlink(missing_ok=True)
    conn = _connect(aside)
    try:
        conn.executescript(SCHEMA)
    finally:
        conn.close()
    os.replace(aside, path)
    if hasattr(os, "O_DIRECTORY"):  # make the rename durable (POSIX)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
