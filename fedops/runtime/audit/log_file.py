"""A party's append-only, signed audit log in its run directory.

Files (``run_dir`` is the coordinator's or a site's own directory):

* ``audit.jsonl``: the log, one canonical JSON entry per line
  (:mod:`fedops.core.audit` defines entries and verification);
* ``audit_key.pem``: the party's Ed25519 signing key, mode 0600 from the
  moment it exists (written to a 0600 temporary file, then renamed);
* ``audit_key.pub``: its public key (0644), to hand to auditors for pinning;
* ``audit_key.crt`` (consortium mode only): the certificate the consortium CA
  issued for the signing key. A party started with a kit signs with the
  kit's key (``signing.key``) instead of generating ``audit_key.pem``, so an
  auditor who trusts the CA alone can tell whose log it is
  (``fedops audit verify --ca``);
* ``audit.head``: the last entry's ``{seq, hash, signature}``, replaced
  atomically after every append, so that entries deleted from the *end* of
  the log are noticed (the chain alone cannot tell a shorter log from a
  truncated one). A missing head file is a warning, not a failure;
* ``participants.key`` (coordinator, central DP only): the operator's key for
  the per-round pseudonyms that name who took part
  (:mod:`fedops.core.audit.pseudonyms`), mode 0600.

Every entry is written, flushed and fsynced before :meth:`AuditLog.record`
returns (``fsync=False`` for tests and benchmarks), under a lock: the
coordinator records from many gRPC threads. An ``flock`` keeps a second
process (or a second AuditLog) from extending the same chain.

Reopening verifies the whole log with the key file, or the kit's key
(Ed25519 checks, about 7k entries a second), and continues the chain: a log
begun with another key (a generated one, another kit's) is refused. A torn
last line, left by a crash in the middle of a write, is cut off and recorded
as ``audit_recovered``. Anything else that does not verify, or a log whose key
file is gone, is refused: continuing would launder the damage.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedops.core.audit import (
    GENESIS_PREV,
    OPEN_EVENT,
    Head,
    encode_entry,
    key_fingerprint,
    make_entry,
    opened_payload,
    sha256_hex,
)
from fedops.core.audit.pseudonyms import KEY_BYTES, MARK, Pseudonyms
from fedops.core.audit.verify import split_log, verify_log_bytes
from fedops.crypto import Identity, verify_ed25519
from fedops.runtime.audit.commitments import Commitments

LOG_NAME = "audit.jsonl"
HEAD_NAME = "audit.head"
KEY_NAME = "audit_key.pem"
PUBLIC_NAME = "audit_key.pub"
CERT_NAME = "audit_key.crt"
PSEUDONYM_KEY_NAME = "participants.key"

log = logging.getLogger(__name__)


class AuditError(RuntimeError):
    """The audit log cannot be opened or written; the message says why and what to do."""


def head_path(log_path: Path) -> Path:
    """``audit.jsonl`` -> ``audit.head``, in the same directory."""
    return Path(log_path).with_suffix(".head")


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file that is 0600 from creation, then rename it into place."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask can only narrow it; make it exact
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_atomic(path: Path, data: bytes, *, fsync: bool, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    tmp.chmod(mode)
    os.replace(tmp, path)


def _load_key(run_dir: Path, log_has_entries: bool) -> Identity:
    key_path = run_dir / KEY_NAME
    if key_path.exists():
        try:
            identity = Identity.load(key_path)
        except (ValueError, TypeError) as exc:
            raise AuditError(f"cannot load the audit key {key_path}: {exc}") from exc
    elif log_has_entries:
        raise AuditError(
            f"{run_dir / LOG_NAME} exists but its key {key_path} is missing: the chain "
            "cannot be continued without it (move the log aside to start a new one)"
        )
    else:
        identity = Identity.generate()
        _write_private(key_path, identity.private_pem())
    return identity


def _publish(run_dir: Path, identity: Identity) -> None:
    """The public key, and the key's certificate when it has one, beside the log for auditors."""
    for name, data in ((PUBLIC_NAME, identity.public_pem()), (CERT_NAME, identity.certificate)):
        path = run_dir / name
        if data and (not path.exists() or path.read_bytes() != data):
            _write_atomic(path, data, fsync=True)
    if not identity.certificate:
        (run_dir / CERT_NAME).unlink(missing_ok=True)  # no stale certificate for another key


def _lock(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AuditError(f"{path} is already open for writing (another process?)") from None


class AuditLog:
    """One party's log: ``record(event, payload)`` appends a signed, chained entry."""

    def __init__(
        self, fd: int, path: Path, identity: Identity, actor: str, *, fsync: bool = True
    ) -> None:
        """Use :meth:`open`; ``fd`` is the log, locked, at a verified end of the chain."""
        self._fd: int | None = fd
        self.path = path
        self.actor = actor
        self.fsync = fsync
        self._identity = identity
        self._lock = threading.Lock()
        self._broken = False
        self._size = os.fstat(fd).st_size
        self._next_seq = 0
        self._prev_hash = GENESIS_PREV
        #: rewrites a payload before it is signed (see :meth:`hide_participants`)
        self.redact: Callable[[str, Mapping[str, Any]], Mapping[str, Any]] | None = None
        self.public_pem = identity.public_pem()
        self.fingerprint = key_fingerprint(self.public_pem)
        #: the checkpoints the log vouches for, read from the verified lines and kept up to
        #: date as entries are signed: a resume trusts no other (see :mod:`.commitments`)
        self.commitments = Commitments()

    @classmethod
    def open(
        cls, run_dir: Path, actor: str, *, fsync: bool = True, identity: Identity | None = None
    ) -> AuditLog:
        """Open (or start) ``run_dir/audit.jsonl``; see the module docstring.

        ``identity``: sign with this key (a consortium kit's, with its
        certificate) instead of the run directory's own ``audit_key.pem``.
        """
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOG_NAME
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _lock(fd, path)
        try:
            return cls._resume(fd, path, actor, fsync=fsync, identity=identity)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise

    @classmethod
    def _resume(
        cls, fd: int, path: Path, actor: str, *, fsync: bool, identity: Identity | None
    ) -> AuditLog:
        data = path.read_bytes()
        lines, tail = split_log(data)
        key_source = (
            "the kit's signing key" if identity is not None else str(path.parent / KEY_NAME)
        )
        if identity is None:
            identity = _load_key(path.parent, bool(lines))
        if tail:
            os.ftruncate(fd, len(data) - len(tail))
        self = cls(fd, path, identity, actor, fsync=fsync)
        head = head_path(path)
        if lines or head.exists():
            self._continue(data[: len(data) - len(tail)], head, key_source)
            self.commitments = Commitments.from_lines(lines)  # the very lines just verified
        _publish(path.parent, identity)  # only once the log is known to be this key's
        if not (lines or head.exists()):
            self.record(OPEN_EVENT, opened_payload(actor, self.public_pem))
        if tail:
            self.record(
                "audit_recovered",
                {"dropped_bytes": len(tail), "dropped_sha256": sha256_hex(tail)},
            )
        if lines:
            self.record("log_reopened", {"actor": actor, "pid": os.getpid()})
        return self

    def _continue(self, data: bytes, head: Path, key_source: str) -> None:
        result = verify_log_bytes(
            data,
            verify_ed25519,
            public_key_pem=self.public_pem,
            head=head.read_bytes() if head.exists() else None,
        )
        if not result.ok:
            hint = (
                " (this directory holds a run signed with another key, e.g. one started "
                "without --kit or by another party: give this run a new --run-dir)"
                if "not the pinned key" in result.reason
                else ""
            )
            raise AuditError(
                f"{self.path} does not verify with {key_source}, refusing to "
                f"continue it: {result.reason}{hint}"
            )
        if result.actor != self.actor:
            raise AuditError(f"{self.path} is {result.actor!r}'s log, not {self.actor!r}'s")
        assert result.head_seq is not None and result.head_hash is not None
        self._next_seq, self._prev_hash = result.head_seq + 1, result.head_hash

    def hide_participants(self, run_id: str) -> None:
        """Name the nodes of every round by a keyed per-round pseudonym from now on.

        For central DP, whose ε assumes nobody outside the operator knows who
        took part. The key (``participants.key`` beside the log, made once, 0600)
        stays with the operator; with it the compliance cross-check re-identifies.
        """
        named = MARK.encode() in self.path.read_bytes()  # earlier rounds used a key
        self.redact = Pseudonyms(pseudonym_key(self.path.parent, create=not named), run_id)

    @property
    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last entry."""
        with self._lock:
            return self._next_seq - 1, self._prev_hash

    def record(self, event: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Append one signed entry and return it. ValueError for a NaN/Inf payload."""
        return self.record_many([(event, payload)])[0]

    def record_many(
        self, events: Sequence[tuple[str, Mapping[str, Any] | None]]
    ) -> list[dict[str, Any]]:
        """Append signed entries, chained in order, with one write and one fsync: a round's
        thousand site reports cost one disk flush, not a thousand. All or none of them
        land (a failed write is cut back off the file). ValueError for a NaN/Inf payload,
        before anything is written."""
        with self._lock:
            if self._fd is None or self._broken:
                raise AuditError(f"{self.path} is closed, or broken by a failed write")
            entries: list[dict[str, Any]] = []
            seq, prev = self._next_seq, self._prev_hash
            for event, payload in events:
                if self.redact is not None and payload:
                    payload = self.redact(event, payload)
                entry = make_entry(
                    seq=seq,
                    prev_hash=prev,
                    actor=self.actor,
                    event=event,
                    payload=payload or {},
                    time=time.time(),
                    sign=self._identity.sign,
                )
                entries.append(entry)
                seq, prev = entry["seq"] + 1, entry["hash"]
            if not entries:
                return entries
            self._append(self._fd, b"".join(encode_entry(e) for e in entries))
            self._next_seq, self._prev_hash = seq, prev
            for entry in entries:
                self.commitments.observe(entry["event"], entry["payload"])
            try:
                _write_atomic(head_path(self.path), Head.of(entries[-1]).encode(), fsync=self.fsync)
            except OSError as exc:  # the entries are durable; the head lags until the next one
                log.warning("audit head file not updated: %s", exc)
            return entries

    def _append(self, fd: int, line: bytes) -> None:
        """The whole line or nothing: a failed write is cut back off the file."""
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, self._size)
            except OSError:
                self._broken = True
                raise AuditError(f"{self.path}: a failed write could not be undone") from None
            raise
        self._size += len(line)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)  # also releases the flock
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pseudonym_key(run_dir: Path, *, create: bool = True) -> bytes:
    """The run's participant-pseudonym key: read, or made once (0600) when absent."""
    path = Path(run_dir) / PSEUDONYM_KEY_NAME
    if not path.exists():
        if not create:
            raise AuditError(
                f"{path} is missing, but the audit log names participants by pseudonyms made "
                "with it: restore it from the run's backup rather than start a new key"
            )
        _write_private(path, os.urandom(KEY_BYTES))
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise AuditError(
            f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte key: restore it from the "
            "run's backup (without it the audit log's pseudonyms cannot be re-identified)"
        )
    return key
