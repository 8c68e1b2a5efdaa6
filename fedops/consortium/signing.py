"""Signing identities: each party's Ed25519 key, certified by the consortium CA.

A TLS certificate proves who is on the other end of a call, and only during
the call. What a party signs to be checked later, by someone who never spoke
to it (its audit log entries, its SecAgg public keys), needs a key of its own
that the CA binds to the same subject: CN = name, O = consortium, OU = role.
That is the *signing certificate* (``signing.crt`` in a kit, its key
``signing.key``). It says ``KeyUsage: digitalSignature`` only and carries the
``documentSigning`` extended key usage (RFC 9336) instead of TLS's
``serverAuth``/``clientAuth``: TLS stacks refuse it for a handshake, and
:func:`certified_signer` refuses a TLS certificate in its place (wrong key
type, wrong usage). So the node's identity is its certificate in both uses,
and neither key can stand in for the other.

:class:`CertificateVerifier` is the SecAgg+ verifier of consortium mode: a
neighbour's keys arrive with their signing certificate, and are accepted only
when the CA issued it to a site of that name, it is valid now and not revoked.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedops.consortium import pki
from fedops.crypto import verify_ed25519

#: id-kp-documentSigning (RFC 9336): signs content, not TLS handshakes
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
_TLS_USAGES = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
#: parsed certificates a verifier keeps (a round sees each neighbour's once per stage)
_CACHE_SIZE = 1024

log = logging.getLogger(__name__)


class CertificateError(ValueError):
    """A certificate that does not certify a consortium signing key; the message says why."""


@dataclass(frozen=True, slots=True)
class Signer:
    """Who a signing certificate certifies, once :func:`certified_signer` has checked it."""

    name: str
    role: str
    consortium: str
    serial: int
    public_pem: bytes  # the Ed25519 public key, SubjectPublicKeyInfo PEM
    certificate: x509.Certificate


def issue_signing(
    ca_cert: pki.Certificate,
    ca_key: pki.PrivateKey,
    name: str,
    role: str,
    *,
    consortium: str,
    days: int = pki.PARTY_DAYS,
) -> tuple[pki.Certificate, Ed25519PrivateKey]:
    """A fresh Ed25519 key and its signing certificate for party ``name`` in ``role``."""
    key = Ed25519PrivateKey.generate()
    cert = certify_signing(
        ca_cert, ca_key, key.public_key(), name, role, consortium=consortium, days=days
    )
    return cert, key


def certify_signing(
    ca_cert: pki.Certificate,
    ca_key: pki.PrivateKey,
    public: Ed25519PublicKey,
    name: str,
    role: str,
    *,
    consortium: str,
    days: int = pki.PARTY_DAYS,
) -> pki.Certificate:
    """The signing certificate for a party's own Ed25519 ``public`` key (from its CSR)."""
    builder = pki.party_certificate(
        ca_cert, ca_key, public, name, role, consortium=consortium, days=days
    )
    return builder.add_extension(x509.ExtendedKeyUsage([DOCUMENT_SIGNING]), critical=True).sign(
        ca_key, hashes.SHA256()
    )


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The public key as SubjectPublicKeyInfo PEM (how audit logs and ``*.pub`` files hold it)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_any_cert(data: bytes) -> pki.Certificate:
    """A certificate in PEM or DER; :class:`CertificateError` when it is neither."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError("not a certificate (PEM or DER)") from exc


def certified_signer(
    cert: pki.Certificate | bytes, ca_cert: pki.Certificate, *, at: dt.datetime | None = None
) -> Signer:
    """Who ``cert`` certifies as a signer, after checking that the CA issued it for signing.

    Checked: the CA's signature, an Ed25519 key, ``digitalSignature`` and
    ``documentSigning`` without TLS usages, a name and a known role in the
    subject, the CA's consortium as O, and (with ``at``) validity at that time.
    Raises :class:`CertificateError` naming the first problem.
    """
    cert = load_any_cert(cert) if isinstance(cert, bytes) else cert
    if not pki.issued_by(cert, ca_cert):
        raise CertificateError(
            f"not issued by the consortium CA {ca_cert.subject.rfc4514_string()!r} "
            f"(issuer {cert.issuer.rfc4514_string()!r})"
        )
    public = cert.public_key()
    if not isinstance(public, Ed25519PublicKey):
        raise CertificateError("not a signing certificate (its key is not Ed25519)")
    _check_usage(cert)
    name, role, consortium = pki.name_of(cert), pki.role_of(cert), pki.consortium_of(cert)
    if name is None or role not in pki.ROLES:
        raise CertificateError(f"no party name or known role in {cert.subject.rfc4514_string()!r}")
    if consortium is None or consortium != pki.consortium_of(ca_cert):
        raise CertificateError(f"certifies a party of {consortium!r}, not of the CA's consortium")
    if at is not None and not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise CertificateError(
            f"not valid at {at:%Y-%m-%d %H:%M} UTC (valid {cert.not_valid_before_utc:%Y-%m-%d} "
            f"to {cert.not_valid_after_utc:%Y-%m-%d})"
        )
    return Signer(name, role, consortium, cert.serial_number, public_pem(public), cert)


def _check_usage(cert: pki.Certificate) -> None:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise CertificateError("not a signing certificate (no key usage extensions)") from exc
    if not usage.digital_signature or usage.key_cert_sign:
        raise CertificateError("not a signing certificate (key usage)")
    if DOCUMENT_SIGNING not in extended or any(u in extended for u in _TLS_USAGES):
        raise CertificateError("not a signing certificate (extended key usage)")


def certified_log_signer(cert_pem: bytes, ca_pem: bytes) -> Signer:
    """The party whose certificate ``cert_pem`` (beside an audit log) the CA ``ca_pem`` issued.

    No validity-period check: a log outlives the certificate that signed it,
    and its entries were signed while the certificate was current.
    """
    try:
        ca_cert = pki.load_cert(ca_pem)
    except ValueError as exc:
        raise CertificateError("the CA file is not a PEM certificate") from exc
    if not isinstance(ca_cert.public_key(), ec.EllipticCurvePublicKey):
        raise CertificateError("the CA file is not a consortium CA (not an ECDSA key)")
    return certified_signer(cert_pem, ca_cert)


class CertificateVerifier:
    """SecAgg+ key signatures checked against certificates, not a directory of known keys.

    Called as ``verifier(identity, message, signature, certificate)`` (the
    :data:`~fedops.core.secagg.primitives.Verifier` of consortium mode): true
    only when ``certificate`` is a signing certificate the CA issued, valid now,
    to a party of role ``role`` named ``identity``, not revoked (when
    ``revoked`` is given), and its key signed ``message``. So a coordinator
    cannot substitute keys: it holds no site's signing key, and its own
    certificate, an admin's, or one from another CA, is refused.
    """

    def __init__(
        self,
        ca_cert: pki.Certificate,
        *,
        role: str = "site",
        revoked: Callable[[pki.Certificate], bool] | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.ca_cert = ca_cert
        self.role = role
        self.revoked = revoked
        self.clock = clock
        self._seen: dict[bytes, Signer | str] = {}  # certificate -> signer, or why it is not one

    def signer(self, certificate: bytes) -> Signer:
        """The checked signer of ``certificate`` (cached); :class:`CertificateError` otherwise."""
        seen = self._seen.get(certificate)
        if seen is None:
            try:
                seen = certified_signer(certificate, self.ca_cert)
            except CertificateError as exc:
                seen = str(exc)
            if len(self._seen) >= _CACHE_SIZE:
                self._seen.clear()
            self._seen[certificate] = seen
        if isinstance(seen, str):
            raise CertificateError(seen)
        return seen

    def problem(self, identity: str, certificate: bytes) -> str | None:
        """Why ``certificate`` does not certify ``identity`` now, or ``None`` when it does."""
        if not certificate:
            return "no signing certificate"
        try:
            signer = self.signer(certificate)
        except CertificateError as exc:
            return str(exc)
        if signer.role != self.role:
            return f"certifies role {signer.role!r}, not {self.role!r}"
        if signer.name != identity:
            return f"certifies {signer.name!r}, not {identity!r}"
        cert, now = signer.certificate, self.clock()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return f"expired or not yet valid (valid to {cert.not_valid_after_utc:%Y-%m-%d})"
        if self.revoked is not None and self.revoked(cert):
            return "revoked"
        return None

    def __call__(self, identity: str, message: bytes, signature: bytes, certificate: bytes) -> bool:
        problem = self.problem(identity, certificate)
        if problem is not None:
            log.warning(
                "SecAgg keys claimed by %r refused: their certificate %s", identity, problem
            )
            return False
        return verify_ed25519(self.signer(certificate).public_pem, message, signature)
