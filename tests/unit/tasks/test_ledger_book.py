"""Every simulated site's privacy ledger in one book: what it answers is what a site's own
ledger answers on the same charges; a round is committed whole or not at all; it reads back
after a restart (and takes in the per-site files of older runs); damage is an error."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedops.core.privacy.accountant import RoundEvent
from fedops.tasks import ledger_book
from fedops.tasks.ledger import Charge, LedgerError, SiteLedger
from fedops.tasks.ledger_book import LedgerBook

DELTA = 1e-5
EVENTS = [
    RoundEvent(noise_multiplier=sigma, sampling="poisson", sample_rate=q)
    for sigma in (1.0, 2.5)
    for q in (0.05, 0.25)
]


def _charge(server_round: int, steps: int = 8, run_id: str = "", event: int = 0) -> Charge:
    return Charge(run_id, server_round, EVENTS[event], steps)


def test_a_round_is_durable_and_a_new_book_on_the_same_dir_continues(tmp_path: Path):
    book = LedgerBook(tmp_path)
    assert book.charges(0) == [] and book.epsilon(0, DELTA) == 0.0
    book.append_all([(0, _charge(1)), (7, _charge(1, event=1))])
    book.append_all([(0, _charge(2))])
    reopened = LedgerBook(tmp_path)  # a resumed simulation
    assert reopened.charges(0) == [_charge(1), _charge(2)]
    assert reopened.charges(7) == [_charge(1, event=1)] and reopened.charges(3) == []
    assert reopened.epsilon(0, DELTA) == book.epsilon(0, DELTA) > 0
    # another process's rows are seen on the next question (outside a hold)
    reopened.append_all([(7, _charge(2))])
    assert book.charges(7) == [_charge(1, event=1), _charge(2)]


def test_a_round_is_committed_in_one_synced_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    book = LedgerBook(tmp_path)
    book.append_all([(0, _charge(1))])  # creates the file
    monkeypatch.setattr(sqlite3, "connect", traced)
    book.append_all([(site, _charge(2)) for site in range(5)])
    inserts = [i for i, s in enumerate(statements) if s.startswith("INSERT")]
    assert len(inserts) == 5 and inserts == list(range(inserts[0], inserts[0] + 5))
    assert statements[inserts[0] - 2 : inserts[0]] == ["PRAGMA synchronous=FULL", "BEGIN "]
    assert statements[inserts[-1] + 1] == "COMMIT"
    assert statements.count("COMMIT") == 1


def test_a_round_that_fails_part_way_records_none_of_it(tmp_path: Path):
    book = LedgerBook(tmp_path)
    book.append_all([(0, _charge(1))])
    with pytest.raises(LedgerError, match="could not record"):
        book.append_all([(0, _charge(2)), (None, _charge(2))])  # type: ignore[list-item]
    assert LedgerBook(tmp_path).charges(0) == [_charge(1)] == book.charges(0)


def _book_with(directory: Path, sql: str, *args: object) -> Path:
    LedgerBook(directory).append_all([(0, _charge(1))])
    path = directory / LedgerBook.FILE
    with sqlite3.connect(path) as conn:
        conn.execute(sql, args)
    return path


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(b"not a database" * 100),
        lambda path: path.write_bytes(path.read_bytes()[:100]),  # truncated
        lambda path: _book_with(path.parent, "UPDATE charges SET event = ?", "{not json"),
        lambda path: _book_with(path.parent, "UPDATE charges SET steps = ?", 0),
        lambda path: _book_with(path.parent, "UPDATE charges SET site = ?", "zero"),
        lambda path: _book_with(path.parent, "PRAGMA user_version = 9"),
        lambda path: _book_with(path.parent, "PRAGMA application_id = 1"),
    ],
    ids=["garbage", "truncated", "event", "steps", "site", "version", "not-a-book"],
)
def test_a_book_that_does_not_read_back_refuses_rather_than_count_from_zero(tmp_path: Path, damage):
    book = LedgerBook(tmp_path)
    book.append_all([(0, _charge(1))])
    damage(tmp_path / LedgerBook.FILE)
    for reader in (book, LedgerBook(tmp_path)):
        with pytest.raises(LedgerError, match="cannot be read"):
            reader.charges(0)
        with pytest.raises(LedgerError):
            reader.append_all([(0, _charge(2))])


def test_a_book_whose_file_vanished_refuses(tmp_path: Path):
    book = LedgerBook(tmp_path)
    book.append_all([(0, _charge(1))])
    (tmp_path / LedgerBook.FILE).unlink()
    with pytest.raises(LedgerError, match="gone"):
        book.epsilon(0, DELTA)


def test_a_run_dir_of_per_site_ledgers_is_taken_in_and_a_damaged_one_refuses(tmp_path: Path):
    """A run an older fedops started (one privacy_ledger.sqlite per site) resumes counting
    what each site spent; a per-site file that does not read back refuses."""
    SiteLedger(tmp_path / "site-3").append(_charge(1, run_id="old"))
    SiteLedger(tmp_path / "site-3").append(_charge(2, event=2))
    SiteLedger(tmp_path / "site-12").append(_charge(1))
    book = LedgerBook(tmp_path)
    assert book.charges(3) == SiteLedger(tmp_path / "site-3").charges()
    assert book.charges(12) == [_charge(1)] and book.charges(0) == []
    assert book.epsilon(3, DELTA) == SiteLedger(tmp_path / "site-3").epsilon(DELTA)

    damaged = tmp_path / "damaged"
    SiteLedger(damaged / "site-1").append(_charge(1))
    (damaged / "site-1" / SiteLedger.FILE).write_bytes(b"not a database" * 100)
    with pytest.raises(LedgerError, match="cannot be read"):
        LedgerBook(damaged).charges(1)
    assert not (damaged / LedgerBook.FILE).exists()


def test_one_read_per_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    book = LedgerBook(tmp_path)
    book.append_all([(site, _charge(1)) for site in range(3)])
    reads: list[Path] = []
    real = ledger_book._connect
    monkeypatch.setattr(ledger_book, "_connect", lambda path: reads.append(path) or real(path))
    with book.exclusive():
        assert [len(book.page(site).charges()) for site in range(3)] == [1, 1, 1]
        assert len(reads) == 1
        book.append_all([(site, _charge(2)) for site in range(3)])
        assert [len(book.charges(site)) for site in range(3)] == [2, 2, 2]  # its own rows
    assert book.charges(0) == [_charge(1), _charge(2)]
    assert len(reads) == 4  # read, insert, read its own rows back; unheld: every question


charges = st.lists(
    st.tuples(
        st.integers(0, 2),  # site
        st.sampled_from(["", "run-b"]),
        st.integers(0, len(EVENTS) - 1),
        st.integers(1, 40),  # steps
    ),
    max_size=12,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=charges, rounds=st.integers(1, 4), next_event=st.integers(0, len(EVENTS) - 1))
def test_the_book_answers_what_each_site_own_ledger_answers(
    rows: list[tuple[int, str, int, int]], rounds: int, next_event: int
):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        book = LedgerBook(root / "book")
        own = {site: SiteLedger(root / f"own-{site}") for site in range(3)}
        written: list[tuple[int, Charge]] = []
        for i, (site, run_id, event, steps) in enumerate(rows):
            charge = Charge(run_id, i, EVENTS[event], steps)
            own[site].append(charge)
            written.append((site, charge))
        for k in range(rounds):  # in `rounds` transactions
            book.append_all(written[k * len(written) // rounds : (k + 1) * len(written) // rounds])
        reopened = LedgerBook(root / "book")
        for site, ledger in own.items():
            page = reopened.page(site)
            assert page.charges() == ledger.charges() == reopened.charges(site)
            for run_id in (None, "run-b"):
                assert reopened.charges(site, run_id) == [
                    c for c in ledger.charges() if run_id is None or c.run_id == run_id
                ]
                assert reopened.epsilon(site, DELTA, run_id) == ledger.epsilon(DELTA, run_id)
                after = reopened.epsilon_after(site, EVENTS[next_event], 5, DELTA, run_id)
                assert after == ledger.epsilon_after(EVENTS[next_event], 5, DELTA, run_id)
                assert page.epsilon_after(EVENTS[next_event], 5, DELTA, run_id) == after


def test_rows_gone_from_the_file_are_gone_from_the_answers(tmp_path: Path):
    """The book answers what the file holds (as a site's own ledger does), not what it read
    before: a row deleted behind its back is not counted from a stale copy."""
    book = LedgerBook(tmp_path)
    book.append_all([(0, _charge(1)), (0, _charge(2))])
    assert len(book.charges(0)) == 2
    with sqlite3.connect(tmp_path / LedgerBook.FILE) as conn:
        conn.execute("DELETE FROM charges WHERE round = 1")
    LedgerBook(tmp_path).append_all([(0, _charge(3))])
    assert book.charges(0) == [_charge(2), _charge(3)] == LedgerBook(tmp_path).charges(0)
