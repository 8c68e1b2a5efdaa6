"""The kit's party checks: that its certificates and keys are the CA's word for one party.

Split from :mod:`fedops.consortium.kit` (whose :func:`~fedops.consortium.kit.load_kit`
runs them, after the manifest and every file's hash have verified) so that what binds a
kit to one party reads apart from how its files are read.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from cryptography import x509

from fedops.consortium import pki, signing
from fedops.crypto import Identity

if TYPE_CHECKING:  # (kit imports this module: its failure type is named, not imported)
    from fedops.consortium.kit import Fail


def check_pin(
    fail: Fail, info: dict[str, Any], ca_cert: x509.Certificate, pinned: str | None
) -> None:
    """kit.json's recorded pin must name ca.pem's CA, and agree with a run-time pin."""
    recorded = info.get("ca_fingerprint")
    if recorded is None:
        return
    try:
        recorded = pki.normal_fingerprint(recorded)
    except ValueError as exc:
        raise fail("kit.json", f"ca_fingerprint: {exc}") from exc
    actual = pki.fingerprint(ca_cert)
    if recorded != actual:
        raise fail(
            "kit.json",
            f"pins the CA sha256 {recorded}, but ca.pem is sha256 {actual} (the CA was swapped)",
        )


def check_certificate(
    contents: dict[str, bytes], fail: Fail, ca_cert: x509.Certificate, info: dict[str, Any]
) -> None:
    name, role, consortium = info["name"], info["role"], info["consortium"]
    try:
        cert = pki.load_cert(contents["cert.pem"])
    except ValueError as exc:
        raise fail("cert.pem", "not a PEM certificate") from exc
    if not pki.issued_by(cert, ca_cert):
        raise fail("cert.pem", "not signed by ca.pem")
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise fail(
            "cert.pem",
            f"not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d})",
        )
    try:
        key = pki.load_key(contents["key.pem"])
    except (ValueError, TypeError) as exc:
        raise fail("key.pem", f"not a usable private key ({exc})") from exc
    if not pki.same_key(cert, key):
        raise fail("key.pem", "does not match cert.pem (another party's key?)")

    for label, stated, certified in (
        ("role", role, pki.role_of(cert)),
        ("name", name, pki.name_of(cert)),
        ("consortium", consortium, pki.consortium_of(cert)),
    ):
        if stated != certified:
            raise fail(
                "kit.json", f"{label} {stated!r} but cert.pem certifies {label} {certified!r}"
            )
    if pki.consortium_of(ca_cert) != consortium:
        raise fail("ca.pem", f"the CA of {pki.consortium_of(ca_cert)!r}, not of {consortium!r}")


def check_signing(contents: dict[str, bytes], fail: Fail, ca_cert: x509.Certificate) -> None:
    """The signing certificate: the CA's, for signing, for the TLS certificate's party and key."""
    tls = pki.load_cert(contents["cert.pem"])  # already checked
    try:
        signer = signing.certified_signer(
            contents["signing.crt"], ca_cert, at=dt.datetime.now(dt.UTC)
        )
    except signing.CertificateError as exc:
        raise fail("signing.crt", str(exc)) from exc
    if (signer.name, signer.role) != (pki.name_of(tls), pki.role_of(tls)):
        raise fail(
            "signing.crt",
            f"certifies {signer.name!r} ({signer.role}), but cert.pem certifies "
            f"{pki.name_of(tls)!r} ({pki.role_of(tls)})",
        )
    try:
        key = Identity.from_pem(contents["signing.key"]).key
    except (ValueError, TypeError) as exc:
        raise fail("signing.key", f"not a usable Ed25519 private key ({exc})") from exc
    if signing.public_pem(key) != signer.public_pem:
        raise fail("signing.key", "does not match signing.crt (another party's key?)")
