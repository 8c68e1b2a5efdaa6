"""Verifying one party's audit log file: on its own, with a pinned key, or pinned to the CA.

The chain and signature checks are :mod:`fedops.core.audit.verify`'s; this reads the
files (the log, its signed head, and in consortium mode the certificate of the
log's key beside it) and, with the consortium CA's certificate, ties the log
to the party the CA certified, so an auditor needs no key handed over by the
party itself: only the CA's certificate, which the whole consortium shares.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from fedops.consortium import pki
from fedops.consortium.crl import CrlError, check_crl
from fedops.consortium.signing import CertificateError, Signer, certified_log_signer
from fedops.core.audit.verify import VerifyResult, verify_log_bytes
from fedops.crypto import verify_ed25519

LOG_NAME = "audit.jsonl"
#: the certificate of the log's key, beside the log (:mod:`fedops.runtime.audit.log_file` writes it)
CERT_NAME = "audit_key.crt"


def _log_path(path: Path) -> Path:
    path = Path(path)
    return path / LOG_NAME if path.is_dir() else path


def verify_log_file(
    path: Path, public_key_pem: bytes | None = None, *, allow_missing_head: bool = False
) -> VerifyResult:
    """Verify a log file (or a run directory's ``audit.jsonl``) and its signed head file."""
    path = _log_path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return VerifyResult(ok=False, entries=0, reason=f"cannot read {path}: {exc.strerror}")
    head = path.with_suffix(".head")
    return verify_log_bytes(
        data,
        verify_ed25519,
        public_key_pem=public_key_pem,
        head=head.read_bytes() if head.exists() else None,
        allow_missing_head=allow_missing_head,
    )


def verify_certified_log(
    path: Path,
    ca_pem: bytes,
    *,
    role: str | None = None,
    allow_missing_head: bool = False,
    crl_pem: bytes | None = None,
) -> tuple[VerifyResult, Signer | None]:
    """Verify a log pinned to the consortium CA: ``(verdict, the certified party)``.

    The certificate beside the log (:data:`CERT_NAME`) must be a signing
    certificate the CA ``ca_pem`` issued (for ``role``, when given), and the
    log must verify with that certificate's key. A log signed with a key of
    its own (no certificate), with another CA's certificate, or with a key other
    than the certified one fails, and the reason says which. With ``crl_pem``
    (the CA's current CRL) a log whose key the CA has revoked fails too:
    whoever holds a revoked key can sign entries with any date.
    """
    path = _log_path(path)
    cert_path = path.parent / CERT_NAME
    try:
        cert_pem = cert_path.read_bytes()
    except OSError as exc:
        why = "missing" if isinstance(exc, FileNotFoundError) else f"unreadable ({exc.strerror})"
        return _failed(
            f"{cert_path}: {why}: the log is not signed with a key the consortium CA certified "
            "(a party started without its kit signs with a self-generated key)"
        ), None
    try:
        signer = certified_log_signer(cert_pem, ca_pem)
    except CertificateError as exc:
        return _failed(f"{cert_path}: {exc}"), None
    if crl_pem is not None:
        revoked = _revocation(signer, crl_pem, ca_pem)
        if revoked:
            return _failed(f"{cert_path}: {revoked}"), signer
    if role is not None and signer.role != role:
        return _failed(
            f"{cert_path}: certifies {signer.name!r} in role {signer.role!r}, but this is a "
            f"{role} log"
        ), signer
    result = verify_log_file(path, signer.public_pem, allow_missing_head=allow_missing_head)
    if not result.ok and "pinned key" in result.reason:
        reason = f"{result.reason}: the log is not signed with the key {CERT_NAME} certifies"
        result = replace(result, reason=f"{reason} for {signer.name!r}")
    return result, signer


def _revocation(signer: Signer, crl_pem: bytes, ca_pem: bytes) -> str:
    """Why the CRL ``crl_pem`` condemns ``signer``'s key ("" when it does not)."""
    try:
        crl = pki.load_crl(crl_pem)
        check_crl(crl, pki.load_cert(ca_pem))
    except (ValueError, CrlError) as exc:
        return f"the CRL cannot be used: {exc}"
    entry = crl.get_revoked_certificate_by_serial_number(signer.serial)
    if entry is None:
        return ""
    return (
        f"the key that signed this log ({signer.name!r}, serial {signer.serial:x}) was revoked "
        f"on {entry.revocation_date_utc:%Y-%m-%d %H:%M} UTC (CRL number {pki.crl_number(crl)}): "
        "whoever holds it can sign entries with any date, so the log cannot be trusted"
    )


def _failed(reason: str) -> VerifyResult:
    return VerifyResult(ok=False, entries=0, reason=reason)


def certified_summary(signer: Signer | None) -> dict[str, Any] | None:
    """The certified party, as the compliance report shows it (``None`` when not pinned)."""
    if signer is None:
        return None
    return {
        "name": signer.name,
        "role": signer.role,
        "consortium": signer.consortium,
        "serial": format(signer.serial, "x"),
    }
