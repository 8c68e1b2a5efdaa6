"""Tamper-evident audit entries: canonical JSON, a SHA-256 hash chain, Ed25519 signatures.

Each party (the coordinator, every site) keeps its own append-only log, one entry per
line: ``{seq, time, actor, event, payload, payload_digest, prev_hash, hash, signature}``.
``hash`` commits to the fields and to the previous entry's hash, so an edited, deleted,
inserted or moved line breaks the chain where it is; ``signature`` (Ed25519 over the
hash's 32 bytes) means rebuilding the chain takes the party's private key. Seq 0
(``log_opened``) carries the public key: without a pinned key, a verifier trusts it
on first use and says so. A line must be byte for byte the canonical encoding of its
entry, so *any* changed byte fails, whitespace included: each entry has one spelling.
A chain cannot tell a truncated log from a short one; the signed head (the last
entry's seq, hash and signature, in a file next to the log) can, and its absence is
reported as a warning. Pure: signing and signature checks are passed in.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

FORMAT = "fedops.audit/1"
GENESIS_PREV = "0" * 64
OPEN_EVENT = "log_opened"
ENTRY_KEYS = frozenset(
    {"seq", "time", "actor", "event", "payload", "payload_digest", "prev_hash", "hash", "signature"}
)
_HEXDIGITS = "0123456789abcdef"

#: signs a message with the party's Ed25519 key
Sign = Callable[[bytes], bytes]
#: ``(public_pem, message, signature) -> valid?``, as :func:`fedops.crypto.verify_ed25519`
VerifySignature = Callable[[bytes, bytes, bytes], bool]


# -- encoding ---------------------------------------------------------------------
def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (not ``\\u`` escapes); NaN/Inf raise ValueError."""
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")  # lone surrogates raise UnicodeEncodeError, a ValueError


_PLAIN = (str, int, bool)


def json_values(value: Any) -> Any:
    """``value`` with what a signed entry cannot hold made explicit: NaN and ±Inf become the
    strings ``"nan"``/``"inf"``/``"-inf"`` (ε is infinite without noise), numpy scalars become
    Python numbers, tuples become lists, paths become strings."""
    if value is None or type(value) in _PLAIN:  # most values; skips the slower checks below
        return value
    if isinstance(value, Mapping):
        return {str(k): json_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_values(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload_digest(payload: Mapping[str, Any]) -> str:
    return sha256_hex(canonical_json(dict(payload)))


def entry_hash(
    seq: int, time: float, actor: str, event: str, payload_digest: str, prev_hash: str
) -> str:
    """SHA-256 of canonical ``[FORMAT, seq, time, actor, event, payload_digest, prev_hash]``."""
    return sha256_hex(canonical_json([FORMAT, seq, time, actor, event, payload_digest, prev_hash]))


def encode_entry(entry: Mapping[str, Any]) -> bytes:
    """The entry's line in the log, newline included."""
    return canonical_json(dict(entry)) + b"\n"


def key_fingerprint(public_pem: str | bytes) -> str:
    """First 16 hex digits of the SHA-256 of the PEM text, as written by fedops.crypto."""
    pem = public_pem.encode() if isinstance(public_pem, str) else public_pem
    return sha256_hex(pem)[:16]


def opened_payload(actor: str, public_pem: str | bytes) -> dict[str, Any]:
    """The payload of seq 0: who writes the log, and the key that signs it."""
    pem = public_pem.decode("ascii") if isinstance(public_pem, bytes) else public_pem
    return dict(actor=actor, format=FORMAT, key_fingerprint=key_fingerprint(pem), public_key=pem)


def make_entry(
    *,
    seq: int,
    prev_hash: str,
    actor: str,
    event: str,
    payload: Mapping[str, Any],
    time: float,
    sign: Sign,
) -> dict[str, Any]:
    """The next entry after ``prev_hash`` (:data:`GENESIS_PREV` for seq 0), signed.

    Raises ValueError for a payload that would not verify once written: NaN or
    infinite floats, non-string keys, anything that changes in a JSON round trip.
    """
    if not math.isfinite(time):
        raise ValueError(f"audit time must be finite, got {time}")
    encoded = canonical_json(dict(payload))
    decoded = json.loads(encoded)  # what a verifier will read back
    if canonical_json(decoded) != encoded:
        raise ValueError("the payload changes in a JSON round trip (non-string keys?)")
    digest = sha256_hex(encoded)
    hashed = entry_hash(seq, time, actor, event, digest, prev_hash)
    return {
        "seq": seq,
        "time": time,
        "actor": actor,
        "event": event,
        "payload": decoded,
        "payload_digest": digest,
        "prev_hash": prev_hash,
        "hash": hashed,
        "signature": sign(bytes.fromhex(hashed)).hex(),
    }


# -- the signed head ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Head:
    """The last entry's seq, hash and signature: what the log must end with."""

    seq: int
    hash: str
    signature: str

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> Head:
        return cls(entry["seq"], entry["hash"], entry["signature"])

    def encode(self) -> bytes:
        return canonical_json(asdict(self)) + b"\n"


def parse_head(data: bytes) -> Head:
    """A head file's contents; ValueError names what is wrong."""
    obj = json.loads(data.decode("utf-8"))  # UnicodeDecodeError, JSONDecodeError: ValueErrors
    if not isinstance(obj, dict) or set(obj) != {"seq", "hash", "signature"}:
        raise ValueError("not an object with exactly seq, hash and signature")
    head = Head(obj["seq"], obj["hash"], obj["signature"])
    if type(head.seq) is not int or head.seq < 0:
        raise ValueError(f"bad seq {head.seq!r}")
    if not (is_hex(head.hash, 64) and is_hex(head.signature, 128)):
        raise ValueError("hash or signature is not lowercase hex of the right length")
    return head


def is_hex(value: object, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and not value.strip(_HEXDIGITS)
