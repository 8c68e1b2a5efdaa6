"""Enrolment by CSR: a party's keys are made where it runs, and only public keys travel.

Threat model. The CA's operator may be the coordinator's operator: whoever
holds a site's private keys can pose as that site (join rounds, sign SecAgg
keys and audit logs in its name), so those keys must never leave the site.
An attacker may also sit between a party and the CA (swapping the CA
certificate a party receives, or a whole kit folder later), and may serve
an old CRL (:mod:`fedops.consortium.crl`). Hence three steps, each at one
party:

1. :func:`request` (the party, ``fedops consortium request``): makes its
   ECDSA P-256 TLS key and Ed25519 signing key (0600, never copied), and
   writes ``NAME.csr``: two CSRs, one per key, each signed by its own key
   (proof of possession), subject CN = name, OU = role.
2. :func:`sign_requests` (the CA, ``fedops consortium sign``): refuses a
   CSR whose signature does not verify, whose name the consortium did not
   list (``consortium.yaml`` or ``add-site``), whose role is not the one
   listed, or whose name was already issued; otherwise issues the same two
   certificates a demo kit has (EKUs, OU, coordinator SANs from the spec,
   never from the request) and writes a *signed bundle*: ``ca.pem``,
   ``cert.pem``, ``signing.crt``, ``kit.json`` (with the CA's fingerprint)
   and a manifest the CA signed over them (``crl.pem`` for the coordinator).
   It writes nothing private but its own key.
3. :func:`assemble` (the party, ``fedops consortium assemble``): checks the
   bundle's CA against the fingerprint the operator got out of band (phone,
   paper, a signed e-mail; not the channel the bundle came over), copies the
   bundle next to its keys, and runs every :func:`~fedops.consortium.kit.load_kit`
   check with that pin before calling the folder a kit.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from fedops.consortium import ca as authority
from fedops.consortium import pki, signing
from fedops.consortium.kit import CRL, MANIFEST, PRIVATE_FILES, Kit, KitError, load_kit
from fedops.consortium.spec import ConsortiumError, CoordinatorSpec, check_name
from fedops.crypto import Identity

#: the public files a signed bundle holds (the CA's manifest covers all but the CRL)
BUNDLE_FILES = ("ca.pem", "cert.pem", "kit.json", "signing.crt")
_PEM_CSR = re.compile(
    rb"-----BEGIN CERTIFICATE REQUEST-----\r?\n.+?\r?\n-----END CERTIFICATE REQUEST-----",
    re.DOTALL,
)


class EnrolError(ConsortiumError):
    """A request, bundle or kit that must not be used; the message names the file."""


@dataclass(frozen=True)
class Request:
    """A party's two checked CSRs (from :func:`read_request`)."""

    path: Path
    name: str
    role: str
    consortium: str | None
    tls_public: ec.EllipticCurvePublicKey
    signing_public: Ed25519PublicKey


# -- at the party -------------------------------------------------------------------------------


def request(name: str, role: str, out_dir: str | Path, *, consortium: str | None = None) -> Path:
    """Make the party's keys in ``out_dir`` (0600) and write its CSRs; the ``NAME.csr`` path."""
    check_name(name, "name")
    if role not in pki.ROLES:
        raise EnrolError(f"--role: {role!r} is not one of {', '.join(pki.ROLES)}")
    if consortium is not None:
        check_name(consortium, "consortium")
    out = Path(out_dir)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    for existing in (*PRIVATE_FILES, f"{name}.csr", MANIFEST):
        if (out / existing).exists() or (out / existing).is_symlink():
            raise EnrolError(f"{out / existing}: already exists; refusing to replace a key")
    tls_key = pki.new_key()
    signing_key = Ed25519PrivateKey.generate()
    pki.write_private(out / "key.pem", pki.key_pem(tls_key))
    pki.write_private(out / "signing.key", Identity(signing_key).private_pem())
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
    ]
    if consortium is not None:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, consortium))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    csrs = (builder.sign(tls_key, hashes.SHA256()), builder.sign(signing_key, None))
    data = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in csrs)
    return pki.write_public(out / f"{name}.csr", data)


def assemble(keys_dir: str | Path, bundle_dir: str | Path, ca_fingerprint: str) -> Kit:
    """Turn ``keys_dir`` (from :func:`request`) into a kit with the CA's signed bundle.

    ``ca_fingerprint`` is the CA certificate's sha256, got out of band: a
    bundle from another CA is refused before anything is copied. The kit is
    then verified in full (:func:`load_kit` with the pin); on any failure the
    copied files are removed again and the keys stay as they were.
    """
    keys, bundle = Path(keys_dir), Path(bundle_dir)
    try:
        pin = pki.normal_fingerprint(ca_fingerprint)
    except ValueError as exc:
        raise EnrolError(f"--ca-fingerprint: {exc}") from exc
    try:
        ca_cert = pki.load_cert((bundle / "ca.pem").read_bytes())
    except (OSError, ValueError) as exc:
        raise EnrolError(f"{bundle / 'ca.pem'}: not a readable CA certificate") from exc
    if pki.fingerprint(ca_cert) != pin:
        raise EnrolError(
            f"{bundle / 'ca.pem'}: sha256 {pki.fingerprint(ca_cert)}, not the {pin} you were "
            "given out of band: this bundle is not from your consortium's CA; do not use it"
        )
    for private in PRIVATE_FILES:
        if not (keys / private).is_file():
            raise EnrolError(f"{keys / private}: missing (run `fedops consortium request` here)")
    names = [*BUNDLE_FILES, MANIFEST] + ([CRL] if (bundle / CRL).is_file() else [])
    for name in names:
        if (keys / name).exists():
            raise EnrolError(f"{keys / name}: already exists; is this folder already a kit?")
    copied: list[Path] = []
    requests = {csr: csr.read_bytes() for csr in keys.glob("*.csr")}  # public: not in a kit
    try:
        for name in names:
            try:
                data = (bundle / name).read_bytes()
            except OSError as exc:
                raise EnrolError(f"{bundle / name}: cannot read: {exc.strerror or exc}") from exc
            copied.append(pki.write_public(keys / name, data))
        for csr in requests:
            csr.unlink()
        return load_kit(keys, ca_fingerprint=pin)
    except (KitError, EnrolError, OSError):
        for path in copied:
            path.unlink(missing_ok=True)
        for csr, data in requests.items():  # the folder as it was: a request to try again
            if not csr.exists():
                pki.write_public(csr, data)
        raise


# -- at the CA ----------------------------------------------------------------------------------


def read_request(path: str | Path) -> Request:
    """Parse and check ``NAME.csr``: two self-signed CSRs for one subject, P-256 and Ed25519."""
    path = Path(path)
    try:
        blocks = _PEM_CSR.findall(path.read_bytes())
    except OSError as exc:
        raise EnrolError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(blocks) != 2:
        raise EnrolError(f"{path}: expected two CSRs (TLS and signing), found {len(blocks)}")
    tls: x509.CertificateSigningRequest | None = None
    sig: x509.CertificateSigningRequest | None = None
    for block in blocks:
        try:
            csr = x509.load_pem_x509_csr(block)
        except ValueError as exc:
            raise EnrolError(f"{path}: not a PEM CSR ({exc})") from exc
        if not csr.is_signature_valid:
            raise EnrolError(f"{path}: a CSR whose signature does not verify")
        public = csr.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1":
            tls = csr
        elif isinstance(public, Ed25519PublicKey):
            sig = csr
    if tls is None or sig is None:
        raise EnrolError(f"{path}: needs one ECDSA P-256 (TLS) and one Ed25519 (signing) CSR")
    if tls.subject != sig.subject:
        raise EnrolError(f"{path}: the two CSRs name different subjects")
    name, role = (
        _one(tls.subject, NameOID.COMMON_NAME),
        _one(tls.subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
    )
    if name is None or role is None:
        raise EnrolError(f"{path}: the subject needs one CN (name) and one OU (role)")
    tls_public, signing_public = tls.public_key(), sig.public_key()
    assert isinstance(tls_public, ec.EllipticCurvePublicKey)
    assert isinstance(signing_public, Ed25519PublicKey)
    consortium = _one(tls.subject, NameOID.ORGANIZATION_NAME)
    return Request(path, name, role, consortium, tls_public, signing_public)


def sign_requests(
    csr_files: list[str | Path], ca_out: str | Path, out_dir: str | Path
) -> list[Path]:
    """Issue certificates for every request, or for none; one signed bundle folder each.

    Every request is checked before any is signed: a listed name, the role
    it was listed with, this consortium, not issued before, not twice in the
    batch. ``ca_out`` is the consortium folder (with ``ca/``).
    """
    ca_root, out = Path(ca_out), Path(out_dir)
    requests = [read_request(f) for f in csr_files]
    written: list[Path] = []
    with authority.ca_lock(ca_root):
        ca_cert, ca_key = authority.load_ca(ca_root)
        record_path = ca_root / "ca" / "consortium.json"
        record = authority.read_json(record_path)
        consortium, coordinator = authority.parse_consortium_record(record, record_path)
        parties = authority.parties_of(record)
        serials = authority.read_serials(ca_root)
        _check_batch(requests, consortium, parties, serials, out)
        out.mkdir(parents=True, exist_ok=True)
        for req in requests:
            entry = parties[req.name]
            serials[req.name] = _write_bundle(
                out / req.name,
                ca=(ca_cert, ca_key),
                req=req,
                info=authority.kit_info(
                    consortium,
                    req.name,
                    req.role,
                    coordinator,
                    entry.get("policy") or {},
                    crl_number=authority.current_crl_number(ca_root),
                ),
                coordinator=coordinator,
                crl=(ca_root / "ca" / CRL).read_bytes() if req.role == "coordinator" else None,
            )
            authority.write_json(ca_root / "ca" / "serials.json", serials, replace=True)
            written.append(out / req.name)
    return written


def _check_batch(
    requests: list[Request],
    consortium: str,
    parties: dict[str, object],
    serials: dict[str, object],
    out: Path,
) -> None:
    issued = {n.lower() for n in serials}
    seen: set[str] = set()
    for req in requests:
        where = f"{req.path}"
        check_name(req.name, f"{where}: CN")
        listed = parties.get(req.name)
        if not isinstance(listed, dict):
            raise EnrolError(
                f"{where}: {req.name!r} is not a party of {consortium!r} (list it in "
                "consortium.yaml, or `fedops consortium add-site` it, first)"
            )
        if req.role != listed.get("role"):
            raise EnrolError(
                f"{where}: asks for role {req.role!r}, but {req.name!r} is listed as "
                f"{listed.get('role')!r}"
            )
        if req.consortium is not None and req.consortium != consortium:
            raise EnrolError(f"{where}: for consortium {req.consortium!r}, not {consortium!r}")
        if req.name.lower() in issued or req.name.lower() in seen:
            raise EnrolError(
                f"{where}: {req.name!r} already has certificates; names are issued once "
                "(revoke it and enrol under a new name)"
            )
        if (out / req.name).exists():
            raise EnrolError(f"{out / req.name}: already exists")
        seen.add(req.name.lower())


def _write_bundle(
    bundle: Path,
    *,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    req: Request,
    info: dict[str, object],
    coordinator: CoordinatorSpec,
    crl: bytes | None,
) -> dict[str, object]:
    """Certify the request's two keys, write the bundle (public files only), sign its manifest."""
    ca_cert, ca_key = ca
    consortium = str(info["consortium"])
    hosts = coordinator.hosts() if req.role == "coordinator" else ()
    cert = pki.certify_tls(
        ca_cert, ca_key, req.tls_public, req.name, req.role, consortium=consortium, hosts=hosts
    )
    sign_cert = signing.certify_signing(
        ca_cert, ca_key, req.signing_public, req.name, req.role, consortium=consortium
    )
    staging = bundle.with_name(f".{bundle.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o755)
    try:
        pki.write_public(staging / "ca.pem", pki.cert_pem(ca_cert))
        pki.write_public(staging / "cert.pem", pki.cert_pem(cert))
        pki.write_public(staging / "signing.crt", pki.cert_pem(sign_cert))
        authority.write_json(
            staging / "kit.json", {**info, "ca_fingerprint": pki.fingerprint(ca_cert)}
        )
        if crl is not None:
            pki.write_public(staging / CRL, crl)
        authority.sign_manifest(staging, ca_key)
        staging.rename(bundle)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "serial": authority.hex_serial(cert.serial_number),
        "signing_serial": authority.hex_serial(sign_cert.serial_number),
        "role": req.role,
        "revoked": False,
        "enrolled": "csr",
    }


def _one(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1:
        return None
    value = values[0].value
    return value if isinstance(value, str) else value.decode()
