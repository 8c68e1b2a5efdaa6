"""Every simulated site's privacy ledger in one file, each round committed in one transaction.

A deployed site keeps its own ``privacy_ledger.sqlite`` (:class:`~fedops.tasks.ledger.SiteLedger`,
unchanged). A simulation of 1000 sites would create and fsync one such file per site and
commit one transaction per site and round; :class:`LedgerBook` keeps them all in
``RUN_DIR/site_ledgers/ledger_book.sqlite`` instead (one row per charge, keyed by site) and
asks the same of it that a site asks of its own ledger:

- a charge is durable before its update is used: :meth:`LedgerBook.append_all` commits a
  round's charges together (``PRAGMA synchronous=FULL``), and the batched backend calls it
  before any of the round's updates is an event (:mod:`fedops.simulation.local_dp_sites`);
- a book that does not read back raises :class:`~fedops.tasks.ledger.LedgerError` (every
  site then refuses DP training rather than count from zero);
- a resumed simulation reads every site's charges back, including those of per-site files
  an older fedops wrote there (imported into the book when it is created).

It is re-read (rows added since the last read; all of it if rows went missing) on every
question, except while :meth:`LedgerBook.exclusive` is held: then this process is its only
writer and one read per hold is enough. :meth:`LedgerBook.page` is one site's view with a
:class:`SiteLedger`'s methods, for :class:`~fedops.tasks.site.Site` and
:func:`~fedops.tasks.dp_policy.check_dp_round`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from fedops.core.privacy.accountant import PrivacyLedger, RoundEvent
from fedops.tasks.ledger import Charge, LedgerError, SiteLedger, _charge, bound, check_file

SCHEMA_VERSION = 1
APPLICATION_ID = 0x46444C42  # "FDLB": not a site's own ledger, nor any other SQLite file
SCHEMA = f"""
CREATE TABLE charges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    event TEXT NOT NULL,
    steps INTEGER NOT NULL
);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
"""
INSERT = "INSERT INTO charges (site, run_id, round, event, steps) VALUES (?, ?, ?, ?, ?)"
_LEGACY = re.compile(r"site-(\d+)")


class LedgerBook:
    """Every simulated site's charges: in ``directory/ledger_book.sqlite``, or in memory."""

    FILE = "ledger_book.sqlite"
    LOCK = "ledger_book.lock"

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.path = self.directory / self.FILE if self.directory is not None else None
        self._sites: dict[int, list[Charge]] = {}
        self._count = 0  # rows read so far
        self._last_id = 0  # the newest row read
        self._lock = threading.RLock()
        self._depth = 0  # nested holds of exclusive()
        self._fresh = False  # read since the hold began
        self._seen = False  # the file has been read: it may not vanish

    def page(self, site: int) -> BookPage:
        """Site ``site``'s ledger, with :class:`SiteLedger`'s methods."""
        return BookPage(self, site)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the book (this thread, and other processes on the file) from the checks to
        the charges; re-entrant. While held, the book is read once."""
        with self._lock:
            if self._depth or self.path is None:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path.with_name(self.LOCK), os.O_RDWR | os.O_CREAT, 0o600)
            self._depth, self._fresh = 1, False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes, or the process dies
                yield
            finally:
                self._depth, self._fresh = 0, False
                os.close(fd)

    def charges(self, site: int, run_id: str | None = None) -> list[Charge]:
        """Site ``site``'s charges (of run ``run_id`` only, when given), oldest first."""
        with self._lock:
            self._refresh()
            rows = self._sites.get(site, [])
            return [c for c in rows if run_id is None or c.run_id == run_id]

    def ledger(self, site: int, run_id: str | None = None) -> PrivacyLedger:
        out = PrivacyLedger()
        for charge in self.charges(site, run_id):
            out.record(charge.event, rounds=charge.steps)
        return out

    def epsilon(self, site: int, delta: float, run_id: str | None = None) -> float:
        return bound(self.ledger(site, run_id), delta)[0]

    def epsilon_after(
        self, site: int, event: RoundEvent, steps: int, delta: float, run_id: str | None = None
    ) -> float:
        """ε of site ``site`` if it trains one more round of ``steps`` steps like ``event``."""
        trial = self.ledger(site, run_id)
        trial.record(event, rounds=steps)
        return bound(trial, delta)[0]

    def append_all(self, charges: Sequence[tuple[int, Charge]]) -> None:
        """Record every ``(site, charge)`` durably, in one transaction: all of them are
        committed and synced on return, or none is and :class:`LedgerError` is raised."""
        with self._lock:
            self._refresh()  # never append to a book that does not read back
            if not charges:
                return
            if self.path is None:
                for site, charge in charges:
                    self._sites.setdefault(site, []).append(charge)
                return
            try:
                _insert(self.path, [_row(site, charge) for site, charge in charges])
            except (OSError, sqlite3.Error) as exc:
                raise LedgerError(
                    f"could not record this round in the simulated sites' privacy ledger "
                    f"{self.path} ({exc}); none of the round's DP updates is used"
                ) from exc
            finally:
                self._fresh = False  # read our own rows back, with their ids

    def _refresh(self) -> None:
        if self.path is None or self._fresh:
            return
        try:
            if not self.path.exists():
                if self._seen:
                    raise ValueError("the file is gone")
                _create(self.path, _legacy_rows(self.path.parent))
            self._read_new(self.path)
            self._seen = True
        except (sqlite3.Error, ValueError, TypeError, KeyError, OSError, LedgerError) as exc:
            raise LedgerError(
                f"the simulated sites' privacy ledger {self.path} cannot be read ({exc}); "
                "refusing DP training rather than count any site's privacy loss from zero"
            ) from exc
        self._fresh = self._depth > 0

    def _read_new(self, path: Path) -> None:
        conn = _connect(path)
        try:
            check_file(conn, SCHEMA_VERSION, application_id=APPLICATION_ID, what="a ledger book")
            (kept,) = conn.execute(
                "SELECT count(*) FROM charges WHERE id <= ?", (self._last_id,)
            ).fetchone()
            if kept != self._count:  # rows went missing: read it all again
                self._sites, self._count, self._last_id = {}, 0, 0
            rows = conn.execute(
                "SELECT id, site, run_id, round, event, steps FROM charges WHERE id > ? "
                "ORDER BY id",
                (self._last_id,),
            ).fetchall()
        finally:
            conn.close()
        for row_id, site, run_id, server_round, event, steps in rows:
            if type(site) is not int or site < 0:
                raise ValueError(f"a charge needs a site >= 0, got {site!r}")
            charge = _charge(run_id, server_round, event, steps)  # checks every field
            self._sites.setdefault(site, []).append(charge)
            self._count, self._last_id = self._count + 1, row_id


class BookPage(SiteLedger):
    """One simulated site's ledger in a :class:`LedgerBook`: a :class:`SiteLedger`'s
    questions (and ε, composed by the same code), answered from the book."""

    def __init__(self, book: LedgerBook, site: int) -> None:
        super().__init__(None)
        self.book = book
        self.site = site
        self.path = book.path

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self.book.exclusive():
            yield

    def charges(self) -> list[Charge]:
        return self.book.charges(self.site)

    def append(self, charge: Charge) -> None:
        self.book.append_all([(self.site, charge)])


def _row(site: int, charge: Charge) -> tuple[int, str, int, str, int]:
    event = charge.event.key()
    return site, charge.run_id, charge.server_round, event, charge.steps


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
    return conn


def _insert(path: Path, rows: Sequence[tuple[int, str, int, str, int]]) -> None:
    conn = _connect(path)
    try:
        with conn:  # one transaction: the whole round, or nothing
            conn.executemany(INSERT, rows)
    finally:
        conn.close()


def _legacy_rows(directory: Path) -> list[tuple[int, str, int, str, int]]:
    """The charges of per-site ledgers (``site-<i>/privacy_ledger.sqlite``) that an older
    fedops kept here; :class:`LedgerError` if one does not read back."""
    rows: list[tuple[int, str, int, str, int]] = []
    if not directory.is_dir():
        return rows
    for entry in sorted(directory.iterdir()):
        match = _LEGACY.fullmatch(entry.name)
        if match and (entry / SiteLedger.FILE).exists():
            site = int(match.group(1))
            rows += [_row(site, charge) for charge in SiteLedger(entry).charges()]
    return rows


def _create(path: Path, rows: Sequence[tuple[int, str, int, str, int]]) -> None:
    """A book holding ``rows``, built aside and renamed into place: a crash while creating
    it leaves no file rather than a half-made one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(path.name + ".new")
    aside.unlink(missing_ok=True)
    conn = _connect(aside)
    try:
        conn.executescript(SCHEMA)
        with conn:
            conn.executemany(INSERT, rows)
    finally:
        conn.close()
    os.replace(aside, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)  # make the rename durable
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
