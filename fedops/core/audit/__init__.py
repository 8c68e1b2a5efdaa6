"""The audit log's pure side: entries and their hash chain, verification, anchors, pseudonyms.

Every party (coordinator, each site) writes its own append-only, hash-chained,
signed log; this package defines what an entry is and how a chain is checked,
with signing injected, so the rules are testable without keys or files. The
log file lives in :mod:`fedops.runtime.audit`, the reports in
:mod:`fedops.reporting.audit`.
"""

from fedops.core.audit.chain import (
    ENTRY_KEYS,
    FORMAT,
    GENESIS_PREV,
    OPEN_EVENT,
    Head,
    Sign,
    VerifySignature,
    canonical_json,
    encode_entry,
    entry_hash,
    is_hex,
    json_values,
    key_fingerprint,
    make_entry,
    opened_payload,
    parse_head,
    payload_digest,
    sha256_hex,
)

__all__ = [
    "ENTRY_KEYS",
    "FORMAT",
    "GENESIS_PREV",
    "OPEN_EVENT",
    "Head",
    "Sign",
    "VerifySignature",
    "canonical_json",
    "encode_entry",
    "entry_hash",
    "is_hex",
    "json_values",
    "key_fingerprint",
    "make_entry",
    "opened_payload",
    "parse_head",
    "payload_digest",
    "sha256_hex",
]
