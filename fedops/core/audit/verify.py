"""Verifying an audit log: walk the chain, check every line, name the first bad one.

The entries themselves (canonical JSON, hashes, signatures, the signed head) are
defined in :mod:`fedops.core.audit`; this module only reads them back. Pure:
signature checks are passed in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from fedops.core.audit import (
    ENTRY_KEYS,
    GENESIS_PREV,
    OPEN_EVENT,
    Head,
    VerifySignature,
    canonical_json,
    entry_hash,
    is_hex,
    key_fingerprint,
    parse_head,
    payload_digest,
)


# -- verification --------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    """A log's verdict. ``first_bad`` is a 1-based line number; ``head_*`` the last good entry."""

    ok: bool
    entries: int
    reason: str = ""
    first_bad: int | None = None
    bad_seq: int | None = None
    head_seq: int | None = None
    head_hash: str | None = None
    actor: str | None = None
    public_key: str | None = None
    fingerprint: str | None = None
    pinned: bool = False
    warnings: tuple[str, ...] = ()


@dataclass(slots=True)
class _Chain:
    """The walk's state: what the next line must continue."""

    verify: VerifySignature
    pinned: str | bytes | None
    expect: Mapping[int, str]
    entries: int = 0
    prev_hash: str = GENESIS_PREV
    actor: str | None = None
    public_key: str | None = None
    bad_seq: int | None = None

    def step(self, raw: str | bytes) -> str | None:
        """None when the line continues the chain (and the state advances), else the problem."""
        entry, parse_problem = _parse_line(raw)
        if entry is None:
            self.bad_seq = None
            return parse_problem
        self.bad_seq = entry["seq"] if type(entry["seq"]) is int else None
        problem = (
            _check_types(entry)
            or self._check_links(entry)
            or _check_digests(entry)
            or self._check_actor_and_key(entry)
            or self._check_signature(entry)
        )
        if problem is None:
            self.entries += 1
            self.prev_hash = entry["hash"]
        return problem

    def _check_links(self, entry: dict[str, Any]) -> str | None:
        if entry["seq"] != self.entries:
            return f"seq {entry['seq']} where {self.entries} was expected {_MOVED}"
        if entry["prev_hash"] != self.prev_hash:
            return f"prev_hash is not the previous entry's hash {_MOVED}"
        return None

    def _check_actor_and_key(self, entry: dict[str, Any]) -> str | None:
        if entry["seq"] > 0:
            if entry["actor"] != self.actor:
                return f"actor {entry['actor']!r} is not the log's actor {self.actor!r}"
            return None
        payload = entry["payload"]
        if entry["event"] != OPEN_EVENT or not isinstance(payload.get("public_key"), str):
            return f"the first entry must be {OPEN_EVENT!r} with the log's public key"
        if payload.get("actor") != entry["actor"]:
            return "the first entry's payload names another actor"
        if self.pinned is not None and not _same_key(payload["public_key"], self.pinned):
            return (
                f"the log's key (fingerprint {key_fingerprint(payload['public_key'])}) "
                "is not the pinned key"
            )
        self.actor, self.public_key = entry["actor"], payload["public_key"]
        return None

    def _check_signature(self, entry: dict[str, Any]) -> str | None:
        assert self.public_key is not None  # set by seq 0, which comes first
        message, signature = bytes.fromhex(entry["hash"]), bytes.fromhex(entry["signature"])
        if not self.verify(self.public_key.encode(), message, signature):
            return "signature invalid: not signed by the log's key"
        expected = self.expect.get(entry["seq"])
        if expected is not None and expected != entry["hash"]:
            return "hash differs from the signed head file's"
        return None


def _parse_line(raw: str | bytes) -> tuple[dict[str, Any] | None, str]:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, "not valid UTF-8"
    raw = raw.removesuffix("\n")
    if not raw:
        return None, "empty line"
    try:
        entry = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg} at column {exc.colno})"
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, nesting 10^5 deep
        return None, f"not JSON ({type(exc).__name__})"
    if not isinstance(entry, dict):
        return None, "not a JSON object"
    if set(entry) != ENTRY_KEYS:
        missing, extra = sorted(ENTRY_KEYS - set(entry)), sorted(set(entry) - ENTRY_KEYS)
        return None, f"wrong keys (missing {missing}, unexpected {extra})"
    try:
        canonical = canonical_json(entry)
    except (ValueError, RecursionError):
        canonical = b""
    if canonical != raw.encode("utf-8"):
        return None, "not in canonical form: the line was reformatted or edited"
    return entry, ""


def _check_types(entry: dict[str, Any]) -> str | None:
    if type(entry["seq"]) is not int:
        return f"seq is not an integer: {entry['seq']!r}"
    if type(entry["time"]) not in (int, float):
        return f"time is not a number: {entry['time']!r}"
    for key in ("actor", "event", "payload_digest", "prev_hash", "hash", "signature"):
        if not isinstance(entry[key], str):
            return f"{key} is not a string"
    if not isinstance(entry["payload"], dict):
        return "payload is not an object"
    if not is_hex(entry["signature"], 128):
        return "signature is not 128 lowercase hex digits"
    return None


def _check_digests(entry: dict[str, Any]) -> str | None:
    digest = payload_digest(entry["payload"])
    if entry["payload_digest"] != digest:
        return "payload digest mismatch: the payload was edited"
    fields = ("seq", "time", "actor", "event", "payload_digest", "prev_hash")
    if entry["hash"] != entry_hash(*(entry[k] for k in fields)):
        return "hash mismatch: the entry was edited"
    return None


def _same_key(a: str | bytes, b: str | bytes) -> bool:
    """Equal PEM text, whatever the line endings and wrapping."""
    a, b = (k.decode("ascii", "replace") if isinstance(k, bytes) else k for k in (a, b))
    return "".join(a.split()) == "".join(b.split())


def verify_entries(
    lines: Iterable[str | bytes],
    verify_signature: VerifySignature,
    *,
    public_key_pem: str | bytes | None = None,
    expect: Mapping[int, str] | None = None,
) -> VerifyResult:
    """Check every line in order; stop at the first bad one and say what is wrong with it.

    ``lines`` are the log's lines (a trailing newline is allowed) — split on
    ``\\n`` only: ``str.splitlines`` also splits at U+2028 and friends, which
    canonical JSON leaves unescaped. ``expect`` maps seqs to hashes they must have.
    """
    chain = _Chain(verify_signature, public_key_pem, expect or {})
    for number, raw in enumerate(lines, start=1):
        problem = chain.step(raw)
        if problem is not None:
            where = f"line {number}" + ("" if chain.bad_seq is None else f" (seq {chain.bad_seq})")
            return _result(chain, False, f"{where}: {problem}", number)
    if chain.entries == 0:
        return _result(chain, False, f"line 1: the log is empty: no {OPEN_EVENT} entry", 1)
    return _result(chain, True, "", None)


def _result(chain: _Chain, ok: bool, reason: str, first_bad: int | None) -> VerifyResult:
    pinned = chain.pinned is not None
    warnings = () if pinned or chain.public_key is None else (_TOFU,)
    return VerifyResult(
        ok=ok,
        entries=chain.entries,
        reason=reason,
        first_bad=first_bad,
        bad_seq=None if ok else chain.bad_seq,
        head_seq=chain.entries - 1 if chain.entries else None,
        head_hash=chain.prev_hash if chain.entries else None,
        actor=chain.actor,
        public_key=chain.public_key,
        fingerprint=None if chain.public_key is None else key_fingerprint(chain.public_key),
        pinned=pinned,
        warnings=warnings,
    )


_MOVED = "(a line was deleted, inserted or moved)"
_TOFU = "no pinned key: trusted the key in the log's first entry (trust on first use)"
_NO_HEAD = "no head file: entries deleted from the end of the log would go unnoticed"
_NO_HEAD_FAILS = (
    "no head file (audit.head): entries may have been deleted from the end of the log; "
    "only an anchor in another party's log (fedops audit export) or an explicit "
    "--allow-missing-head accepts it"
)


def split_log(data: bytes) -> tuple[list[bytes], bytes]:
    """``(complete lines, torn tail)``: the tail is what follows the last newline."""
    *lines, tail = data.split(b"\n")
    return lines, tail


def verify_log_bytes(
    data: bytes,
    verify_signature: VerifySignature,
    *,
    public_key_pem: str | bytes | None = None,
    head: bytes | None = None,
    allow_missing_head: bool = False,
) -> VerifyResult:
    """A whole log file's bytes and, when it exists, its head file's bytes.

    A log of more than one entry without a head file fails unless
    ``allow_missing_head``: the head is written after every entry, so only a crash
    before the very first one leaves none.
    """
    lines, tail = split_log(data)
    try:
        parsed = None if head is None else parse_head(head)
    except ValueError as exc:
        return VerifyResult(ok=False, entries=0, reason=f"head file unreadable: {exc}")
    expect = {} if parsed is None else {parsed.seq: parsed.hash}
    result = verify_entries(lines, verify_signature, public_key_pem=public_key_pem, expect=expect)
    if tail and (result.ok or not lines):
        line = len(lines) + 1
        reason = (
            f"line {line}: incomplete last line ({len(tail)} bytes, no newline): "
            "a write was interrupted (reopening the log recovers it)"
        )
        return replace(result, ok=False, first_bad=line, bad_seq=None, reason=reason)
    if not result.ok:
        return result
    return check_head(result, parsed, verify_signature, allow_missing=allow_missing_head)


def check_head(
    result: VerifyResult,
    head: Head | None,
    verify_signature: VerifySignature,
    *,
    allow_missing: bool = False,
) -> VerifyResult:
    """Does the verified log end where its signed head says? (Truncation at the end.)"""
    if head is None:
        if allow_missing or result.entries <= 1:
            return replace(result, warnings=(*result.warnings, _NO_HEAD))
        return replace(result, ok=False, reason=_NO_HEAD_FAILS)
    assert result.public_key is not None and result.head_seq is not None
    signature = bytes.fromhex(head.signature)
    if not verify_signature(result.public_key.encode(), bytes.fromhex(head.hash), signature):
        return replace(result, ok=False, reason="head file: signature invalid (not the log's key)")
    if head.seq > result.head_seq:
        line = result.entries + 1
        return replace(
            result,
            ok=False,
            first_bad=line,
            reason=f"line {line}: missing: the log ends at seq {result.head_seq} but its "
            f"signed head is seq {head.seq} ({head.seq - result.head_seq} entries deleted "
            "from the end, or the head file was edited)",
        )
    if head.seq < result.head_seq:
        lag = result.head_seq - head.seq
        note = f"the head file is {lag} entries behind the log (1 after a crash mid-append)"
        return replace(result, warnings=(*result.warnings, note))
    return result
