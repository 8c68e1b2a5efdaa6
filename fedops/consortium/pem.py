"""PEM encodings of the consortium's keys, certificates and CRLs, and their files.

Split from :mod:`fedops.consortium.pki` (which re-exports every name) so that the
X.509 policy reads apart from the bytes on disk. Files that hold a private key are
created with mode 0600 and ``O_EXCL``: there is never a moment when the key sits in
a file others can read.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

Certificate = x509.Certificate
PrivateKey = ec.EllipticCurvePrivateKey


def cert_pem(cert: Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    """PKCS#8, unencrypted: the file's mode protects it, as gRPC wants the key in the clear."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def load_cert(data: bytes) -> Certificate:
    """A PEM certificate; ``ValueError`` when it is not one."""
    return x509.load_pem_x509_certificate(data)


def load_key(data: bytes) -> PrivateKey:
    """A PEM P-256 private key; ``ValueError`` when it is not one."""
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("not an ECDSA P-256 private key")
    return key


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A PEM CRL; ``ValueError`` when it is not one."""
    return x509.load_pem_x509_crl(data)


def write_private(path: str | Path, data: bytes) -> Path:
    """Create ``path`` (it must not exist) with mode 0600 and write ``data`` to it."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def write_public(path: str | Path, data: bytes, *, replace: bool = False) -> Path:
    """Write ``data`` to ``path`` (mode 0644); with ``replace``, atomically over what is there.

    A replacement is written to a temporary file beside ``path`` and renamed
    over it, so readers see the old file or the new one, never half of one.
    """
    path = Path(path)
    if not replace:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return path
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    write_public(tmp, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
