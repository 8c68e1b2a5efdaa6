"""The consortium's X.509: a CA, party certificates, a CRL, and PEM files written safely.

TLS keys are ECDSA P-256 (what gRPC's BoringSSL TLS takes everywhere); each
party's Ed25519 signing certificate is :mod:`fedops.consortium.signing`'s. A party
certificate says who and what it is in its subject: CN = party name,
O = consortium, OU = role (``coordinator``, ``site``, ``admin``,
``observer``). The coordinator's certificate is for TLS servers and clients
and names its hosts as SANs; the others are TLS-client certificates only.
Serials are random (:func:`x509.random_serial_number`), so a CRL names one
certificate exactly.

PEM encodings and the files that hold them (a private key's created with mode 0600 and
``O_EXCL``) are :mod:`fedops.consortium.pem`'s, re-exported here for the callers of ``pki``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedops.consortium.pem import (
    cert_pem,
    crl_pem,
    key_pem,
    load_cert,
    load_crl,
    load_key,
    write_private,
    write_public,
)

__all__ = [
    "CA_DAYS",
    "CA_ROLE",
    "CLOCK_SKEW",
    "CRL_DAYS",
    "Certificate",
    "PARTY_DAYS",
    "PARTY_KEY_USAGE",
    "PrivateKey",
    "ROLES",
    "build_crl",
    "cert_pem",
    "certify_tls",
    "consortium_of",
    "crl_number",
    "crl_pem",
    "crl_signed_by",
    "fingerprint",
    "is_revoked",
    "issue",
    "issued_by",
    "key_pem",
    "load_cert",
    "load_crl",
    "load_key",
    "name_of",
    "new_ca",
    "new_key",
    "normal_fingerprint",
    "party_certificate",
    "role_of",
    "same_key",
    "subject",
    "write_private",
    "write_public",
]

ROLES = ("coordinator", "site", "admin", "observer")
CA_ROLE = "ca"
CA_DAYS = 3650
PARTY_DAYS = 825
#: a CRL's lifetime by default: a coordinator that withholds a newer one can feed a site
#: an older one only until it goes stale (`fedops consortium crl` reissues it)
CRL_DAYS = 30
#: how far back ``not_valid_before`` is set, for clocks a little behind the CA's
CLOCK_SKEW = dt.timedelta(minutes=5)

Certificate = x509.Certificate
PrivateKey = ec.EllipticCurvePrivateKey


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def new_ca(consortium: str, *, days: int = CA_DAYS) -> tuple[Certificate, PrivateKey]:
    """A self-signed CA for ``consortium`` (CN = "<consortium> CA", O = consortium, OU = ca)."""
    key = new_key()
    name = subject(f"{consortium} CA", consortium, CA_ROLE)
    now = _now()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


#: a party's key signs (TLS handshakes, or content): never certificates, CRLs or encryption
PARTY_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def party_certificate(
    ca_cert: Certificate,
    ca_key: PrivateKey,
    public: CertificatePublicKeyTypes,
    name: str,
    role: str,
    *,
    consortium: str,
    days: int = PARTY_DAYS,
) -> x509.CertificateBuilder:
    """What every certificate the CA issues to a party says; the caller adds its usages.

    Subject CN = name, O = consortium, OU = role; not a CA; key usage
    :data:`PARTY_KEY_USAGE`; valid from now (less the clock skew) for
    ``days``, never past the CA's own expiry.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (expected one of: {', '.join(ROLES)})")
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject(name, consortium, role))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(PARTY_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )


def issue(
    ca_cert: Certificate,
    ca_key: PrivateKey,
    name: str,
    role: str,
    *,
    consortium: str,
    hosts: Iterable[str] = (),
    days: int = PARTY_DAYS,
) -> tuple[Certificate, PrivateKey]:
    """A fresh key and its TLS certificate (demo kits only: the key is made at the CA)."""
    key = new_key()
    cert = certify_tls(
        ca_cert,
        ca_key,
        key.public_key(),
        name,
        role,
        consortium=consortium,
        hosts=hosts,
        days=days,
    )
    return cert, key


def certify_tls(
    ca_cert: Certificate,
    ca_key: PrivateKey,
    public: ec.EllipticCurvePublicKey,
    name: str,
    role: str,
    *,
    consortium: str,
    hosts: Iterable[str] = (),
    days: int = PARTY_DAYS,
) -> Certificate:
    """The TLS certificate for ``public`` (a party's own key, from its CSR) as ``name``/``role``.

    ``hosts`` (coordinator only) become SANs: an IP address entry for what
    parses as one, a DNS entry otherwise. The CA chooses them from the spec,
    never from a request, so a party cannot ask to be another host.
    """
    hosts = tuple(hosts)
    if hosts and role != "coordinator":
        raise ValueError(f"only the coordinator's certificate names hosts, not a {role}'s")
    builder = party_certificate(
        ca_cert, ca_key, public, name, role, consortium=consortium, days=days
    )
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role == "coordinator":
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def fingerprint(cert: Certificate) -> str:
    """sha256 of the certificate's DER, lowercase hex: the CA pin operators compare out of band."""
    return cert.fingerprint(hashes.SHA256()).hex()


def normal_fingerprint(text: str) -> str:
    """``text`` as :func:`fingerprint` writes it (no colons, lowercase); else ``ValueError``."""
    value = text.strip().lower().replace(":", "")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"{text!r} is not a sha256 fingerprint (64 hex digits)")
    return value


def role_of(cert: Certificate) -> str | None:
    """The certificate's OU (its role), or ``None`` when it has none."""
    return _attribute(cert, NameOID.ORGANIZATIONAL_UNIT_NAME)


def name_of(cert: Certificate) -> str | None:
    """The certificate's CN (the party's name), or ``None`` when it has none."""
    return _attribute(cert, NameOID.COMMON_NAME)


def consortium_of(cert: Certificate) -> str | None:
    """The certificate's O (the consortium's name), or ``None`` when it has none."""
    return _attribute(cert, NameOID.ORGANIZATION_NAME)


def issued_by(cert: Certificate, ca_cert: Certificate) -> bool:
    """Whether ``ca_cert`` signed ``cert`` (issuer name and signature both match)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def same_key(cert: Certificate, key: PrivateKey | Ed25519PrivateKey) -> bool:
    """Whether ``key`` is the private half of ``cert``'s public key."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ) == key.public_key().public_bytes(serialization.Encoding.DER, spki)


# -- revocation ---------------------------------------------------------------------------------


def build_crl(
    ca_cert: Certificate,
    ca_key: PrivateKey,
    revoked_serials: Iterable[int],
    *,
    number: int = 1,
    days: int = CRL_DAYS,
) -> x509.CertificateRevocationList:
    """A CA-signed CRL naming ``revoked_serials``; ``number`` should grow with each new one."""
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - CLOCK_SKEW)
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for serial in sorted(set(revoked_serials)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    return builder.sign(ca_key, hashes.SHA256())


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def crl_signed_by(crl: x509.CertificateRevocationList, ca_cert: Certificate) -> bool:
    """Whether the CRL is the CA's: its issuer is the CA's subject and the CA's key signed it."""
    public = ca_cert.public_key()
    if crl.issuer != ca_cert.subject or not isinstance(public, ec.EllipticCurvePublicKey):
        return False
    return crl.is_signature_valid(public)


def is_revoked(cert: Certificate, crl: x509.CertificateRevocationList) -> bool:
    """Whether ``crl`` (from ``cert``'s issuer) lists ``cert``'s serial."""
    if crl.issuer != cert.issuer:
        return False
    return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


def subject(cn: str, org: str, ou: str) -> x509.Name:
    """A party's subject: CN = name, O = consortium, OU = role (TLS and signing certificates)."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _attribute(cert: Certificate, oid: x509.ObjectIdentifier) -> str | None:
    values = cert.subject.get_attributes_for_oid(oid)
    if len(values) != 1:
        return None
    value = values[0].value
    return value if isinstance(value, str) else value.decode()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)
