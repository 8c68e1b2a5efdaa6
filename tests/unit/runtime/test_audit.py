"""fedops.runtime.audit.log_file and fedops.core.audit: signed, hash-chained audit logs.

Lines must be byte for byte canonical JSON, so the tampering property test
edits *any* byte of a line to any other value (whitespace included): there is
no edit that leaves the content unchanged, because every entry has exactly
one valid spelling. Every kind of tampering must fail verification and name
the first bad line.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedops.core.audit import (
    GENESIS_PREV,
    Head,
    encode_entry,
    entry_hash,
    make_entry,
    opened_payload,
    payload_digest,
)
from fedops.core.audit.verify import verify_entries
from fedops.crypto import Identity, verify_ed25519
from fedops.reporting.audit.compliance import verify_log_file as verify_log
from fedops.runtime.audit.log_file import (
    HEAD_NAME,
    KEY_NAME,
    LOG_NAME,
    PUBLIC_NAME,
    AuditError,
    AuditLog,
)

# -- strategies -----------------------------------------------------------------------
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # no lone surrogates
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_payloads = st.dictionaries(_text, _json, max_size=4)
_events = st.sampled_from(["model_sent", "update_received", "site_joined", "alert", "é\u2028x"])
_records = st.lists(st.tuples(_events, _payloads), min_size=4, max_size=29)  # + log_opened: 5-30


def _write(run_dir: Path, records: list[tuple[str, dict]]) -> Path:
    with AuditLog.open(run_dir, "coordinator", fsync=False) as log:
        for event, payload in records:
            log.record(event, payload)
    return run_dir / LOG_NAME


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def _save(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def _resign(line: bytes, identity: Identity) -> bytes:
    entry = json.loads(line)
    entry["signature"] = identity.sign(bytes.fromhex(entry["hash"])).hex()
    return encode_entry(entry)[:-1]


# -- tampering, property-based -------------------------------------------------------
def _tamper(kind: str, lines: list[bytes], data: st.DataObject) -> tuple[list[bytes], int]:
    """The tampered lines and the 1-based number of the first line that must fail."""
    n = len(lines)
    if kind == "edit_byte":
        i = data.draw(st.integers(0, n - 1), label="line")
        # keys, hashes and times are random: draw independently of the line's length
        j = data.draw(st.integers(0, 2**16), label="byte") % len(lines[i])
        delta = data.draw(st.integers(1, 255), label="delta")
        edited = bytearray(lines[i])
        edited[j] = (edited[j] + delta) % 256
        return [*lines[:i], bytes(edited), *lines[i + 1 :]], i + 1
    if kind == "delete":
        i = data.draw(st.integers(0, n - 1), label="line")
        return lines[:i] + lines[i + 1 :], i + 1  # the last one: caught by the head file
    if kind == "insert_copy":
        i = data.draw(st.integers(0, n - 1), label="copied")
        p = data.draw(st.integers(0, n), label="at")
        # a copy put just before its original continues the chain; the original then fails
        return [*lines[:p], lines[i], *lines[p:]], p + 2 if p == i else p + 1
    if kind == "swap":
        i = data.draw(st.integers(0, n - 2), label="first")
        j = data.draw(st.integers(i + 1, n - 1), label="second")
        swapped = list(lines)
        swapped[i], swapped[j] = lines[j], lines[i]
        return swapped, i + 1
    assert kind == "resign"
    i = data.draw(st.integers(0, n - 1), label="line")
    return [*lines[:i], _resign(lines[i], Identity.generate()), *lines[i + 1 :]], i + 1


@pytest.mark.parametrize("kind", ["edit_byte", "delete", "insert_copy", "swap", "resign"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=_records, data=st.data())
def test_any_tampering_fails_at_the_first_bad_line(kind, records, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp) / "run", records)
        lines = _lines(path)
        assert len(lines) == len(records) + 1
        assert verify_log(path).ok
        tampered, first_bad = _tamper(kind, lines, data)
        _save(path, tampered)
        result = verify_log(path)
        assert not result.ok
        assert result.first_bad == first_bad, result.reason
        assert result.reason.startswith(f"line {first_bad}"), result.reason
        assert result.entries == first_bad - 1


@settings(max_examples=30, deadline=None)
@given(records=_records)
def test_an_untouched_log_verifies(records):
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp) / "run", records)
        result = verify_log(path)
        assert result.ok, result.reason
        assert result.entries == len(records) + 1 and result.head_seq == len(records)
        assert result.actor == "coordinator" and not result.pinned
        assert [json.loads(line)["payload"] for line in _lines(path)[1:]] == [
            json.loads(json.dumps(p)) for _, p in records
        ]


# -- tampering, by hand ----------------------------------------------------------------
def test_truncating_several_entries_is_caught_by_the_head(tmp_path):
    path = _write(tmp_path, [("e", {"i": i}) for i in range(6)])
    lines = _lines(path)
    _save(path, lines[:4])
    result = verify_log(path)
    assert not result.ok and result.first_bad == 5
    assert "deleted from the end" in result.reason


def test_without_the_head_file_verification_fails_unless_the_operator_accepts_it(tmp_path):
    """Issue 17, finding 3: a missing head was a warning only, so deleting it hid any
    truncation at the end of the log."""
    path = _write(tmp_path, [("e", {"i": i}) for i in range(3)])
    _save(path, _lines(path)[:-1])
    (tmp_path / HEAD_NAME).unlink()
    result = verify_log(path)
    assert not result.ok and "no head file" in result.reason
    assert "--allow-missing-head" in result.reason
    accepted = verify_log(path, allow_missing_head=True)
    assert accepted.ok and accepted.entries == 3
    assert any("no head file" in w for w in accepted.warnings)


def test_a_log_with_a_missing_head_is_not_continued(tmp_path):
    """Reopening would sign new entries after a truncation nobody noticed: refused."""
    path = _write(tmp_path, [("e", {"i": i}) for i in range(3)])
    (tmp_path / HEAD_NAME).unlink()
    with pytest.raises(AuditError, match="no head file"):
        AuditLog.open(tmp_path, "coordinator", fsync=False)
    assert len(_lines(path)) == 4  # nothing appended (log_opened + 3)


def test_a_forged_head_file_fails(tmp_path):
    path = _write(tmp_path, [("e", {})])
    head = json.loads((tmp_path / HEAD_NAME).read_text())
    (tmp_path / HEAD_NAME).write_text(json.dumps({**head, "seq": 7}))
    assert not verify_log(path).ok
    (tmp_path / HEAD_NAME).write_text("{garbage")
    assert "head file unreadable" in verify_log(path).reason


def test_a_head_one_entry_behind_is_a_crash_not_tampering(tmp_path):
    path = _write(tmp_path, [("e", {})])
    old_head = (tmp_path / HEAD_NAME).read_bytes()
    with AuditLog.open(tmp_path, "coordinator", fsync=False) as log:
        log.record("e", {})
    (tmp_path / HEAD_NAME).write_bytes(old_head)  # as if killed before the head was replaced
    result = verify_log(path)
    assert result.ok and any("behind" in w for w in result.warnings)


def test_a_chain_rebuilt_with_another_key_fails_only_against_the_pinned_key(tmp_path):
    path = _write(tmp_path, [("e", {"i": 1}), ("e", {"i": 2})])
    original = (tmp_path / PUBLIC_NAME).read_bytes()
    forger, entries, prev = Identity.generate(), [], GENESIS_PREV
    for seq, line in enumerate(_lines(path)):
        old = json.loads(line)
        payload = opened_payload("coordinator", forger.public_pem()) if seq == 0 else old["payload"]
        entry = make_entry(seq=seq, prev_hash=prev, actor="coordinator", event=old["event"],
                           payload=payload, time=old["time"], sign=forger.sign)  # fmt: skip
        entries.append(encode_entry(entry)[:-1])
        prev = entry["hash"]
    _save(path, entries)
    (tmp_path / HEAD_NAME).write_bytes(Head.of(entry).encode())
    assert verify_log(path).ok  # trust on first use cannot tell: that is what pinning is for
    result = verify_log(path, original)
    assert not result.ok and result.first_bad == 1 and "pinned" in result.reason
    assert verify_log(path.parent, forger.public_pem()).ok


def test_pinned_key_passes_and_says_so(tmp_path):
    path = _write(tmp_path, [("e", {})])
    result = verify_log(path, (tmp_path / PUBLIC_NAME).read_text())
    assert result.ok and result.pinned and result.warnings == ()


def test_whitespace_only_edits_fail_too(tmp_path):
    path = _write(tmp_path, [("e", {"a": 1})])
    lines = _lines(path)
    lines[1] = lines[1].replace(b'"a":1', b'"a": 1')
    _save(path, lines)
    result = verify_log(path)
    assert result.first_bad == 2 and "canonical" in result.reason


def test_reasons_name_what_is_wrong(tmp_path):
    path = _write(tmp_path, [("e", {"amount": 100})])
    lines = _lines(path)
    _save(path, [lines[0], lines[1].replace(b'"amount":100', b'"amount":900')])
    assert (
        verify_log(path).reason == "line 2 (seq 1): payload digest mismatch: the payload was edited"
    )
    _save(path, [lines[0], lines[1].replace(b'"event":"e"', b'"event":"f"')])
    assert verify_log(path).reason == "line 2 (seq 1): hash mismatch: the entry was edited"


def test_verify_entries_splits_on_newlines_only():
    identity = Identity.generate()
    first = make_entry(seq=0, prev_hash=GENESIS_PREV, actor="a", event="log_opened",
                       payload=opened_payload("a", identity.public_pem()), time=1.0,
                       sign=identity.sign)  # fmt: skip
    second = make_entry(seq=1, prev_hash=first["hash"], actor="a", event="x",
                        payload={"s": "\u2028\u0085\r"}, time=2.5, sign=identity.sign)  # fmt: skip
    lines = [encode_entry(first).decode(), encode_entry(second).decode()]
    result = verify_entries(lines, verify_ed25519)
    assert result.ok and result.entries == 2 and result.head_hash == second["hash"]
    assert second["payload_digest"] == payload_digest({"s": "\u2028\u0085\r"})
    fields = ("seq", "time", "actor", "event", "payload_digest", "prev_hash")
    assert second["hash"] == entry_hash(*(second[k] for k in fields))
    assert not verify_entries([], verify_ed25519).ok


# -- the writer -----------------------------------------------------------------------------
def test_reopening_continues_the_chain(tmp_path):
    with AuditLog.open(tmp_path / "run", "site-a", fsync=False) as log:
        for i in range(3):
            log.record("update_sent", {"round": i})
        assert log.head[0] == 3
    before = (tmp_path / "run" / LOG_NAME).read_bytes()
    with AuditLog.open(tmp_path / "run", "site-a", fsync=False) as log:
        log.record("update_sent", {"round": 3})
    data = (tmp_path / "run" / LOG_NAME).read_bytes()
    assert data.startswith(before)
    entries = [json.loads(line) for line in data.splitlines()]
    assert [e["seq"] for e in entries] == list(range(6))
    assert [e["event"] for e in entries][3:] == ["update_sent", "log_reopened", "update_sent"]
    assert verify_log(tmp_path / "run").ok


def test_torn_last_line_is_cut_off_and_recorded(tmp_path):
    path = _write(tmp_path, [("e", {"i": 1})])
    torn = b'{"actor":"coordinator","event":"e","ha'
    with path.open("ab") as f:
        f.write(torn)
    result = verify_log(path)
    assert not result.ok and result.first_bad == 3 and "incomplete" in result.reason
    with AuditLog.open(tmp_path, "coordinator", fsync=False) as log:
        log.record("e", {"i": 2})
    entries = [json.loads(line) for line in path.read_bytes().splitlines()]
    recovered = [e for e in entries if e["event"] == "audit_recovered"]
    assert len(recovered) == 1 and recovered[0]["payload"]["dropped_bytes"] == len(torn)
    assert verify_log(path).ok


def test_the_key_is_private_from_the_start(tmp_path, monkeypatch):
    modes = []
    real_write = os.write

    def spy(fd, data):
        if bytes(data[:27]) == b"-----BEGIN PRIVATE KEY-----":
            modes.append(os.fstat(fd).st_mode & 0o777)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    old_umask = os.umask(0)
    try:
        AuditLog.open(tmp_path / "new" / "dir", "c", fsync=False).close()
    finally:
        os.umask(old_umask)
    assert modes == [0o600]
    assert (tmp_path / "new" / "dir" / KEY_NAME).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "new" / "dir" / PUBLIC_NAME).stat().st_mode & 0o777 == 0o644


def test_refuses_a_log_without_its_key_or_with_another_key(tmp_path):
    _write(tmp_path, [("e", {})])
    key = tmp_path / KEY_NAME
    key.unlink()
    with pytest.raises(AuditError, match="missing"):
        AuditLog.open(tmp_path, "coordinator")
    Identity.generate().save(key)
    with pytest.raises(AuditError, match="does not verify"):
        AuditLog.open(tmp_path, "coordinator")


def test_refuses_a_tampered_or_truncated_log_and_another_actor(tmp_path):
    path = _write(tmp_path, [("e", {}), ("e", {})])
    lines = _lines(path)
    with pytest.raises(AuditError, match="is 'coordinator'"):
        AuditLog.open(tmp_path, "site-b")
    _save(path, lines[:-1])
    with pytest.raises(AuditError, match="deleted from the end"):
        AuditLog.open(tmp_path, "coordinator")
    _save(path, [lines[0], lines[2], lines[1]])
    with pytest.raises(AuditError, match="line 2"):
        AuditLog.open(tmp_path, "coordinator")


def test_a_second_writer_is_refused(tmp_path):
    with AuditLog.open(tmp_path, "c", fsync=False), pytest.raises(AuditError, match="already"):
        AuditLog.open(tmp_path, "c", fsync=False)
    AuditLog.open(tmp_path, "c", fsync=False).close()  # free again once closed


def test_concurrent_records_keep_a_contiguous_chain(tmp_path):
    log = AuditLog.open(tmp_path, "coordinator")  # fsync on: the default path

    def work(thread):
        for i in range(50):
            log.record("update_received", {"thread": thread, "i": i})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    result = verify_log(tmp_path)
    assert result.ok and result.entries == 401
    entries = [json.loads(line) for line in (tmp_path / LOG_NAME).read_bytes().splitlines()]
    assert [e["seq"] for e in entries] == list(range(401))
    for thread in range(8):
        mine = [e["payload"]["i"] for e in entries[1:] if e["payload"]["thread"] == thread]
        assert mine == list(range(50))


@pytest.mark.parametrize(
    "bad", [math.nan, math.inf, -math.inf, {10: "int keys sort", 9: "unlike strings"}]
)
def test_unverifiable_payloads_are_refused_and_nothing_is_written(tmp_path, bad):
    with AuditLog.open(tmp_path, "c", fsync=False) as log:
        size = (tmp_path / LOG_NAME).stat().st_size
        with pytest.raises(ValueError):
            log.record("e", {"value": bad})
        assert (tmp_path / LOG_NAME).stat().st_size == size
        log.record("e", {"value": 1.5})
    assert verify_log(tmp_path).ok


def test_records_after_close_are_refused(tmp_path):
    log = AuditLog.open(tmp_path, "c", fsync=False)
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.record("e", {})


@pytest.mark.parametrize(
    "line",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"seq":' + b"9" * 5000 + b"}",
        b"\xff\xfe",
        b'{"seq":0}',
        b"[]",
    ],
)
def test_hostile_lines_get_a_verdict_not_an_exception(tmp_path, line):
    path = _write(tmp_path, [("e", {})])
    lines = _lines(path)
    _save(path, [lines[0], line, *lines[1:]])
    result = verify_log(path)
    assert not result.ok and result.first_bad == 2, result.reason


def test_a_first_entry_with_a_hostile_key_gets_a_verdict(tmp_path):
    identity = Identity.generate()
    payload = {**opened_payload("a", identity.public_pem()), "public_key": "ключ"}
    entry = make_entry(seq=0, prev_hash=GENESIS_PREV, actor="a", event="log_opened",
                       payload=payload, time=0.0, sign=identity.sign)  # fmt: skip
    result = verify_entries([encode_entry(entry)], verify_ed25519)
    assert not result.ok and "signature invalid" in result.reason


def test_a_corrupt_key_file_is_an_audit_error(tmp_path):
    _write(tmp_path, [])
    (tmp_path / KEY_NAME).write_text("not a key")
    with pytest.raises(AuditError, match="cannot load"):
        AuditLog.open(tmp_path, "coordinator")


def test_a_failed_write_is_cut_back_off(tmp_path, monkeypatch):
    real_write = os.write
    with AuditLog.open(tmp_path, "c", fsync=False) as log:
        size = (tmp_path / LOG_NAME).stat().st_size

        def half_then_full_disk(fd, data):
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", half_then_full_disk)
        with pytest.raises(OSError, match="No space"):
            log.record("e", {"i": 1})
        monkeypatch.setattr(os, "write", real_write)
        assert (tmp_path / LOG_NAME).stat().st_size == size
        log.record("e", {"i": 2})
    result = verify_log(tmp_path)
    assert result.ok and result.entries == 2


# -- a round's entries in one write -----------------------------------------------------
@given(st.lists(_records, min_size=1, max_size=4))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_record_many_writes_what_one_by_one_writes(batches):
    """Batched entries chain, sign and verify exactly as entries recorded one at a time."""
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as many:
        _write(Path(one), [r for batch in batches for r in batch])
        with AuditLog.open(Path(many), "coordinator", fsync=False) as log:
            for batch in batches:
                log.record_many(batch)
        strip = ("time", "hash", "prev_hash", "signature")
        read = [
            [{k: v for k, v in json.loads(line).items() if k not in strip} for line in _lines(p)]
            for p in (Path(one) / LOG_NAME, Path(many) / LOG_NAME)
        ]
        assert read[0][1:] == read[1][1:]  # the same events, payloads and sequence numbers
        assert verify_log(Path(many) / LOG_NAME).ok


def test_record_many_is_all_or_nothing_and_flushes_once(tmp_path, monkeypatch):
    with AuditLog.open(tmp_path, "coordinator", fsync=True) as log:
        before = (tmp_path / LOG_NAME).read_bytes()
        with pytest.raises(ValueError):
            log.record_many([("drift_report", {"psi": 0.1}), ("drift_report", {"psi": math.nan})])
        assert (tmp_path / LOG_NAME).read_bytes() == before  # the good first entry is not in
        flushed: list[int] = []
        real = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: (flushed.append(fd), real(fd))[1])
        log.record_many([("drift_report", {"site": f"s{i}", "psi": 0.1}) for i in range(50)])
        assert len(flushed) == 2  # the log once, its head file once: not 50 times each
    lines = _lines(tmp_path / LOG_NAME)
    assert len(lines) == 51 and verify_log(tmp_path / LOG_NAME).ok
