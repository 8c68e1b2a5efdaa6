"""A startup kit as a party receives it, and every check before it is used.

:func:`load_kit` refuses a kit whose manifest does not verify with its CA,
whose files were changed, added or swapped, whose keys are readable by others
or do not match their certificates, whose signing certificate is not the CA's
for the same party, or whose kit.json disagrees with what the certificate
certifies; provisioning (writing kits) is :mod:`fedops.consortium.kits`
and :mod:`fedops.consortium.enrol`.

Pins (see the package's threat model): kit.json records the CA fingerprint
the party checked at enrolment, catching a swapped ca.pem; ``ca_fingerprint``
(the run-time ``--ca-fingerprint``, kept outside the folder) catches a kit
replaced whole, which nothing inside the folder can.

Private key files may be listed in the manifest (demo kits, made at the CA)
or not (kits assembled from a CSR: the CA never saw the keys, so it cannot
hash them); either way each must be the private half of its certificate.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from fedops.consortium import crl as crl_checks
from fedops.consortium import pki
from fedops.consortium.crl import CRL_DELIVERED, CRL_STATE
from fedops.consortium.kit_identity import check_certificate, check_pin, check_signing
from fedops.consortium.spec import ConsortiumError
from fedops.crypto import Identity

MANIFEST = "manifest.json"
log = logging.getLogger(__name__)
CRL = "crl.pem"
#: files the CA's signed manifest must list
KIT_FILES = ("ca.pem", "cert.pem", "kit.json", "signing.crt")
#: files holding private keys: mode 0600, or the kit is refused; listed only in demo kits
PRIVATE_FILES = ("key.pem", "signing.key")
#: files a kit may hold outside the manifest (the CRL has its own signature)
UNLISTED_FILES = (MANIFEST, CRL, CRL_STATE, CRL_DELIVERED)
SIGNATURE_ALGORITHM = "ecdsa-p256-sha256"


class KitError(ConsortiumError):
    """A kit that must not be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Kit:
    """A verified startup kit (from :func:`load_kit`)."""

    directory: Path
    name: str
    role: str
    consortium: str
    coordinator_name: str
    coordinator_address: str
    policy: Mapping[str, Any]
    paths: Mapping[str, Path]  # file name -> path, for every file in the kit
    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    ca_pem: bytes
    signing_cert_pem: bytes  # Ed25519 signing certificate: audit logs, SecAgg keys
    signing_key_pem: bytes = field(repr=False)
    crl_floor: int = 0  # the CA's CRL number when the kit was issued: older CRLs are refused

    @property
    def ca_fingerprint(self) -> str:
        """sha256 of the CA certificate's DER: what operators compare out of band."""
        return pki.fingerprint(self.ca_cert)

    @property
    def cert(self) -> x509.Certificate:
        return pki.load_cert(self.cert_pem)

    @property
    def ca_cert(self) -> x509.Certificate:
        return pki.load_cert(self.ca_pem)

    @property
    def signing_cert(self) -> x509.Certificate:
        return pki.load_cert(self.signing_cert_pem)

    def signing_identity(self) -> Identity:
        """The party's Ed25519 signing key, carrying its CA-issued certificate (PEM)."""
        return Identity.from_pem(self.signing_key_pem, self.signing_cert_pem)

    @property
    def crl_path(self) -> Path | None:
        """The kit's CRL (the coordinator's kit has one), or ``None``."""
        return self.paths.get(CRL)


def load_kit(directory: str | Path, *, ca_fingerprint: str | None = None) -> Kit:
    """Read and verify the kit in ``directory``; :class:`KitError` names the file otherwise.

    Checked: the manifest's signature by the kit's CA (and, with
    ``ca_fingerprint``, that the CA is the one whose certificate has that
    sha256; a malformed pin is refused too), that kit.json's recorded pin
    (if any) is that CA, every listed file's hash, no unlisted files, the certificate
    signed by the CA and in its validity period, the key matching the
    certificate, the key files readable by their owner only, kit.json's
    name, role and consortium matching the certificate's CN, OU and O, and the
    signing certificate issued by the CA for signing only, to the same party,
    for the Ed25519 key in signing.key. A
    ``crl.pem`` (required in the coordinator's kit) must carry the CA's
    signature, be current and not older than the highest CRL number the kit
    has accepted (``crl-seen.json``).
    """
    d = Path(directory)
    if not d.is_dir():
        raise KitError(f"{d}: not a kit folder")

    def fail(file: str, problem: str) -> KitError:
        return KitError(f"{d / file}: {problem}")

    files, signature = _manifest(d, fail)
    ca_pem, ca_cert = _trusted_ca(d, fail, files, signature, ca_fingerprint)
    _check_listing(d, fail, files)
    _check_key_mode(d, fail)
    contents = _hashed_contents(d, fail, files, ca_pem)
    info = _kit_info_of(contents, fail)
    check_pin(fail, info, ca_cert, ca_fingerprint)
    check_certificate(contents, fail, ca_cert, info)
    check_signing(contents, fail, ca_cert)
    paths = {n: d / n for n in (*sorted({*files, *PRIVATE_FILES}), MANIFEST)}
    crl = _checked_crl(d, fail, ca_cert, info["role"])
    if crl is not None:
        paths[CRL] = crl
    return Kit(
        directory=d,
        name=info["name"],
        role=info["role"],
        consortium=info["consortium"],
        coordinator_name=info["coordinator"]["name"],
        coordinator_address=info["coordinator"]["address"],
        policy=info.get("policy") or {},
        paths=paths,
        cert_pem=contents["cert.pem"],
        key_pem=contents["key.pem"],
        ca_pem=ca_pem,
        signing_cert_pem=contents["signing.crt"],
        signing_key_pem=contents["signing.key"],
        crl_floor=info.get("crl_number", 0),
    )


Fail = Callable[[str, str], KitError]


def _manifest(d: Path, fail: Fail) -> tuple[dict[str, str], str]:
    manifest = _read_kit_json(d, MANIFEST, fail)
    files = manifest.get("files")
    signature = manifest.get("signature")
    if (
        not isinstance(files, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
        or not isinstance(signature, str)
    ):
        raise fail(MANIFEST, "malformed (expected {files: {name: sha256}, signature})")
    if manifest.get("algorithm", SIGNATURE_ALGORITHM) != SIGNATURE_ALGORITHM:
        raise fail(MANIFEST, f"unknown algorithm {manifest.get('algorithm')!r}")
    return files, signature


def _trusted_ca(
    d: Path, fail: Fail, files: dict[str, str], signature: str, ca_fingerprint: str | None
) -> tuple[bytes, x509.Certificate]:
    """The kit's CA certificate, once it has verified the manifest's signature."""
    ca_pem = _read_bytes(d, "ca.pem", fail)
    try:
        ca_cert = pki.load_cert(ca_pem)
    except ValueError as exc:
        raise fail("ca.pem", "not a PEM certificate") from exc
    if ca_fingerprint is not None:
        try:
            expected = pki.normal_fingerprint(ca_fingerprint)
        except ValueError as exc:
            raise KitError(f"--ca-fingerprint: {exc}") from exc
        actual = pki.fingerprint(ca_cert)
        if actual != expected:
            raise fail(
                "ca.pem",
                f"not the expected CA (sha256 {actual}, pinned {expected}): the kit was "
                "replaced or issued by another CA; do not use it",
            )
    ca_public = ca_cert.public_key()
    if not isinstance(ca_public, ec.EllipticCurvePublicKey):
        raise fail("ca.pem", "not an ECDSA CA certificate")
    try:
        ca_public.verify(
            base64.b64decode(signature, validate=True),
            canonical_files(files),
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, ValueError) as exc:
        raise fail(
            MANIFEST,
            "signature does not verify with ca.pem (the kit was altered, or signed by another CA)",
        ) from exc
    return ca_pem, ca_cert


def _check_listing(d: Path, fail: Fail, files: dict[str, str]) -> None:
    for required in KIT_FILES:
        if required not in files:
            raise fail(MANIFEST, f"does not list {required}")
    for listed in files:
        if listed in UNLISTED_FILES or Path(listed).name != listed or listed in ("", ".", ".."):
            raise fail(MANIFEST, f"lists {listed!r}, which it must not")
    for entry in sorted(d.iterdir()):
        leftover = entry.name.startswith(".") and entry.name.endswith(".tmp")  # a cut-off write
        allowed = (*UNLISTED_FILES, *PRIVATE_FILES)
        if entry.name not in files and entry.name not in allowed and not leftover:
            raise fail(entry.name, "not in the manifest (files cannot be added to a kit)")


def _check_key_mode(d: Path, fail: Fail) -> None:
    for name in PRIVATE_FILES:
        try:
            key_stat = (d / name).lstat()
        except OSError as exc:
            raise fail(name, f"cannot read: {exc.strerror or exc}") from exc
        if not stat.S_ISREG(key_stat.st_mode):
            raise fail(name, "not a regular file")
        if key_stat.st_mode & 0o077:
            raise fail(
                name,
                f"mode {stat.S_IMODE(key_stat.st_mode):04o} lets group or others read the key "
                "(chmod 600 it, and consider it exposed)",
            )


def _hashed_contents(d: Path, fail: Fail, files: dict[str, str], ca_pem: bytes) -> dict[str, bytes]:
    contents: dict[str, bytes] = {}
    for listed, digest in sorted(files.items()):
        data = ca_pem if listed == "ca.pem" else _read_bytes(d, listed, fail)
        if hashlib.sha256(data).hexdigest() != digest:
            raise fail(listed, "sha256 does not match manifest.json (the file was changed)")
        contents[listed] = data
    for private in PRIVATE_FILES:  # unlisted: checked against their certificates instead
        if private not in contents:
            contents[private] = _read_bytes(d, private, fail)
    return contents


def _kit_info_of(contents: dict[str, bytes], fail: Fail) -> dict[str, Any]:
    info = _parse_json(contents["kit.json"], lambda problem: fail("kit.json", problem))
    try:
        consortium = info["consortium"]
        name = info["name"]
        role = info["role"]
        coordinator = info["coordinator"]
        coordinator_name = coordinator["name"]
        coordinator_address = coordinator["address"]
        policy = info.get("policy") or {}
        if not all(
            isinstance(v, str)
            for v in (consortium, name, role, coordinator_name, coordinator_address)
        ) or not isinstance(policy, dict):
            raise TypeError
    except (KeyError, TypeError) as exc:
        raise fail(
            "kit.json",
            "malformed (expected consortium, name, role, coordinator {name, address}, policy)",
        ) from exc
    pin = info.get("ca_fingerprint")
    if pin is not None and not isinstance(pin, str):
        raise fail("kit.json", "malformed ca_fingerprint (expected 64 hex digits)")
    floor = info.get("crl_number", 0)
    if not isinstance(floor, int) or isinstance(floor, bool) or floor < 0:
        raise fail("kit.json", "malformed crl_number (expected a whole number >= 0)")
    return info


def _checked_crl(d: Path, fail: Fail, ca_cert: x509.Certificate, role: str) -> Path | None:
    crl_file = d / CRL
    if crl_file.exists() and role != "coordinator":
        log.warning(
            "%s: ignored: a %s takes the CRL the coordinator delivers with its tasks "
            "(fedops.consortium.crl.DeliveredCrl)",
            crl_file,
            role,
        )
        return None
    if crl_file.exists():
        try:
            crl_checks.load_checked(crl_file, ca_cert, d / CRL_STATE)
        except crl_checks.CrlError as exc:
            raise fail(CRL, str(exc)) from exc
        return crl_file
    elif role == "coordinator":
        raise fail(CRL, "missing (the coordinator's kit carries the CRL it enforces)")
    return None


def canonical_files(files: Mapping[str, str]) -> bytes:
    return json.dumps(dict(files), sort_keys=True, separators=(",", ":")).encode()


def _read_bytes(d: Path, name: str, fail: Any) -> bytes:
    try:
        return (d / name).read_bytes()
    except FileNotFoundError as exc:
        raise fail(name, "missing") from exc
    except OSError as exc:
        raise fail(name, f"cannot read: {exc.strerror or exc}") from exc


def _read_kit_json(d: Path, name: str, fail: Any) -> dict[str, Any]:
    return _parse_json(_read_bytes(d, name, fail), lambda problem: fail(name, problem))


def _parse_json(data: bytes, fail: Any) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise fail(f"not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise fail("not a JSON object")
    return value
