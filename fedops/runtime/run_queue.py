"""A standing federation's queue of runs: ``ROOT/federation.sqlite``.

``fedops serve`` runs one run at a time, oldest first; each run keeps its own run
directory (``ROOT/runs/<id>``: state, checkpoints, audit chain, metrics) exactly as
``fedops coordinator --run-dir`` would. The queue is the only state the serve
process adds, so it is small and durable (WAL, ``synchronous=FULL``): a serve
process killed at any point comes back to the same queue, finds the run that was
``running`` and resumes it from its run directory before starting anything else.

Who may write here: the operator of the serve root (``fedops run submit --root``,
a file they can write) and, in consortium mode, a certified admin over the
``Federation`` service. A run's settings are stored as submitted (YAML text) and
parsed again, by the same rules, when the run starts.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: every state a run passes through; the last four are final
STATES = ("queued", "running", "completed", "stopped", "failed", "cancelled")
FINAL = frozenset(STATES[2:])
#: the most runs a queue holds that have not started: submissions past it are refused
MAX_QUEUED = 100
#: the longest run settings accepted (bytes of YAML)
MAX_SPEC_BYTES = 64 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    spec TEXT NOT NULL,
    task TEXT NOT NULL,
    submitted_by TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    state TEXT NOT NULL,
    run_id TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    stop_requested TEXT NOT NULL DEFAULT '',
    task_digest TEXT NOT NULL DEFAULT ''
);
"""


RUN_NAME = re.compile(r"run-[0-9]{1,9}")  # ASCII digits only: int() reads others too


class QueueError(Exception):
    """A queue operation refused (full, unknown run, a final run stopped); says why."""


@dataclass(frozen=True, slots=True)
class QueuedRun:
    seq: int
    spec: str  # the run's settings, as submitted (YAML)
    task: str
    submitted_by: str
    submitted_at: float
    state: str
    run_id: str = ""  # the run store's id, once it started
    message: str = ""  # why it failed, was stopped or cancelled
    stop_requested: str = ""  # an admin's stop, waiting for the run to reach a round's end
    task_digest: str = ""  # sha256 of the task's code when submitted: the run starts on it only

    @property
    def id(self) -> str:
        """The run's name in the queue and its directory under ``ROOT/runs``."""
        return run_name(self.seq)


def run_name(seq: int) -> str:
    return f"run-{seq:04d}"


def parse_run_name(name: str) -> int:
    """The queue position of ``run-0007`` (:class:`QueueError` for anything else)."""
    if not RUN_NAME.fullmatch(name):
        raise QueueError(f"{name[:40]!r} is not a run of this queue (they are named run-0001 ...)")
    return int(name[4:])


class RunQueue:
    """The queue file; every method is one short transaction, safe across processes."""

    FILE = "federation.sqlite"

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / self.FILE
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
        if "task_digest" not in columns:  # a queue from before the digest was kept
            self._db.execute("ALTER TABLE runs ADD COLUMN task_digest TEXT NOT NULL DEFAULT ''")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def submit(self, spec: str, *, task: str, by: str, task_digest: str = "") -> QueuedRun:
        """Queue a run (its settings already checked by the caller); the new entry."""
        if len(spec.encode()) > MAX_SPEC_BYTES:
            raise QueueError(f"the run's settings exceed {MAX_SPEC_BYTES} bytes")
        with self._lock, self._db:
            waiting = self._db.execute("SELECT COUNT(*) FROM runs WHERE state='queued'")
            if waiting.fetchone()[0] >= MAX_QUEUED:
                raise QueueError(f"{MAX_QUEUED} runs are already queued; stop some first")
            cursor = self._db.execute(
                "INSERT INTO runs (spec, task, submitted_by, submitted_at, state, task_digest) "
                "VALUES (?, ?, ?, ?, 'queued', ?)",
                (spec, task, by[:200], time.time(), task_digest),
            )
            seq = cursor.lastrowid
        assert seq is not None
        return self.get(seq)

    def get(self, seq: int) -> QueuedRun:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM runs WHERE seq=?", (seq,)).fetchone()
        if row is None:
            raise QueueError(f"no run {run_name(seq)} in this queue")
        return QueuedRun(*row)

    def runs(self, limit: int = 200) -> list[QueuedRun]:
        """The newest ``limit`` runs, oldest first."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM runs ORDER BY seq DESC LIMIT ?", (limit,)
        ).fetchall()
        return [QueuedRun(*row) for row in reversed(rows)]

    def queued(self) -> int:
        """How many runs wait (counted, never read: a site asks this on every offer)."""
        return int(self._db.execute("SELECT COUNT(*) FROM runs WHERE state='queued'").fetchone()[0])

    def next_run(self) -> QueuedRun | None:
        """The run to serve now: one left ``running`` by a killed process first (it
        resumes), else the oldest queued one."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM runs WHERE state IN ('running', 'queued') "
            "ORDER BY state='queued', seq LIMIT 1"
        ).fetchone()
        return QueuedRun(*row) if row else None

    def started(self, seq: int, run_id: str) -> bool:
        """Mark the run running; False if it was cancelled meanwhile (then it must stop)."""
        with self._lock, self._db:
            changed = self._db.execute(
                "UPDATE runs SET state='running', run_id=? "
                "WHERE seq=? AND state IN ('queued', 'running')",
                (run_id, seq),
            ).rowcount
        return changed == 1

    def finished(self, seq: int, state: str, message: str = "") -> None:
        if state not in FINAL:
            raise ValueError(f"{state!r} is not a final state")
        self._set(
            seq, "UPDATE runs SET state=?, message=? WHERE seq=?", (state, message[:1000], seq)
        )

    def stop(self, seq: int, reason: str) -> QueuedRun:
        """Cancel a queued run at once; ask a running one to stop after its current
        round (the serve loop acts on :attr:`QueuedRun.stop_requested`)."""
        with self._lock, self._db:
            run = self.get(seq)
            if run.state in FINAL:
                raise QueueError(f"{run.id} is already {run.state}")
            if run.state == "queued":
                self._db.execute(
                    "UPDATE runs SET state='cancelled', message=? WHERE seq=?",
                    (reason[:1000], seq),
                )
            else:
                self._db.execute(
                    "UPDATE runs SET stop_requested=? WHERE seq=?", (reason[:1000] or "-", seq)
                )
        return self.get(seq)

    def _set(self, seq: int, sql: str, values: tuple[object, ...]) -> None:
        with self._lock, self._db:
            self._db.execute(sql, values)


_COLUMNS = (
    "seq, spec, task, submitted_by, submitted_at, state, run_id, message, stop_requested, "
    "task_digest"
)


class SpecError(ValueError):
    """A run's settings that cannot become a run; the message names the key and why."""
