"""Startup kits: one folder per party with its key, its certificate, the CA, and a signed manifest.

Layout under ``OUT``::

    ca/ca.pem            the consortium CA's certificate
    ca/ca_key.pem        its private key (0600; keep it offline)
    ca/crl.pem           the current CA-signed CRL
    ca/serials.json      name -> {serial, signing_serial (hex), role, revoked}
    ca/consortium.json   the consortium's name and coordinator, for add-site
    kits/<name>/cert.pem      the party's certificate (CN name, O consortium, OU role)
    kits/<name>/key.pem       its private key (0600)
    kits/<name>/signing.crt   its Ed25519 signing certificate (same subject; signing only)
    kits/<name>/signing.key   the signing key (0600): audit logs, SecAgg public keys
    kits/<name>/ca.pem        the CA certificate it trusts
    kits/<name>/crl.pem       (coordinator kit only) the CRL it enforces
    kits/<name>/kit.json      {consortium, name, role, coordinator: {name, address}, policy}
    kits/<name>/manifest.json {algorithm, files: {file: sha256}, signature}

The manifest's signature is the CA's ECDSA-SHA256 over the canonical JSON
of ``files`` (sorted keys, no spaces). ``crl.pem`` is left out of it on
purpose, as :func:`revoke` replaces it; the CRL carries the CA's own
signature, which :func:`load_kit` checks instead.

Revoking a party lists *both* its serials in the CRL, the TLS certificate's
and the signing certificate's: a party the consortium no longer trusts can
neither call the coordinator nor vouch for SecAgg keys. The CRL is the
standard one, serials only, so any X.509 tool reads it the same way.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from fedops.consortium import pki, signing
from fedops.consortium.kit import (
    CRL,
    MANIFEST,
    SIGNATURE_ALGORITHM,
    canonical_files,
)
from fedops.consortium.spec import (
    ConsortiumError,
    CoordinatorSpec,
    check_address,
    check_name,
    check_policy,
    load_spec,
)
from fedops.crypto import Identity


@dataclass(frozen=True)
class Revoked:
    name: str
    serial: int
    crl_paths: tuple[Path, ...]  # where the new CRL was written
    already: bool  # it had been revoked before; the CRL was rewritten all the same
    signing_serial: int | None = None  # its signing certificate's, listed too (None: old kit)


# -- provisioning -------------------------------------------------------------------------------


def init_consortium(spec_file: str | Path, out_dir: str | Path) -> list[Path]:
    """Create the CA and every party's kit under ``out_dir``; the kit folders, coordinator first.

    Refuses (:class:`ConsortiumError`) when ``out_dir/ca`` or ``out_dir/kits``
    already exists: a second CA would silently split the consortium. Everything
    is built in a staging folder and moved into place at the end, so a failure
    leaves nothing behind.
    """
    spec = load_spec(spec_file)
    out = Path(out_dir)
    for existing in (out / "ca", out / "kits"):
        if existing.exists() or existing.is_symlink():
            raise ConsortiumError(
                f"{existing}: already exists; refusing to overwrite a consortium "
                "(choose another --out, or remove it on purpose)"
            )
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".init-{os.urandom(6).hex()}"
    staging.mkdir(mode=0o700)
    try:
        ca_dir = staging / "ca"
        ca_dir.mkdir(mode=0o700)
        ca_cert, ca_key = pki.new_ca(spec.name)
        pki.write_public(ca_dir / "ca.pem", pki.cert_pem(ca_cert))
        pki.write_private(ca_dir / "ca_key.pem", pki.key_pem(ca_key))
        crl = pki.build_crl(ca_cert, ca_key, (), number=1)
        pki.write_public(ca_dir / CRL, pki.crl_pem(crl))
        _write_json(ca_dir / "consortium.json", _consortium_record(spec.name, spec.coordinator))

        kits_dir = staging / "kits"
        kits_dir.mkdir()
        serials: dict[str, dict[str, Any]] = {}
        policies = {p.name: dict(p.policy) for p in spec.sites}
        for name, role in spec.parties():
            serials[name] = _write_kit(
                kits_dir / name,
                ca=(ca_cert, ca_key),
                info=_kit_info(spec.name, name, role, spec.coordinator, policies.get(name, {})),
                hosts=spec.coordinator.hosts() if role == "coordinator" else (),
                crl=crl if role == "coordinator" else None,
            )
        _write_json(ca_dir / "serials.json", serials)

        os.rename(kits_dir, out / "kits")
        os.rename(ca_dir, out / "ca")  # last: the CA's presence marks a finished init
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / "kits" / name for name, _ in spec.parties()]


def add_site(out_dir: str | Path, name: str, policy: Mapping[str, Any] | None = None) -> Path:
    """Issue a kit for a new site ``name`` with the consortium's CA; its kit folder."""
    out = Path(out_dir)
    check_name(name, "name")
    checked_policy = check_policy(dict(policy) if policy is not None else None, "policy")
    with _ca_lock(out):
        ca_cert, ca_key = _load_ca(out)
        record = _read_json(out / "ca" / "consortium.json")
        serials = _read_serials(out)
        taken = {n.lower(): n for n in serials}
        if name.lower() in taken:
            raise ConsortiumError(
                f"name: {name!r} is already in the consortium as {taken[name.lower()]!r} "
                f"({out / 'ca' / 'serials.json'}); names cannot be reused, even once revoked"
            )
        consortium, coordinator = _parse_consortium_record(record, out / "ca" / "consortium.json")
        kit_dir = out / "kits" / name
        if kit_dir.exists() or kit_dir.is_symlink():
            raise ConsortiumError(f"{kit_dir}: already exists")
        (out / "kits").mkdir(exist_ok=True)
        staging = out / "kits" / f".{name}.{os.urandom(6).hex()}.tmp"
        try:
            serials[name] = _write_kit(
                staging,
                ca=(ca_cert, ca_key),
                info=_kit_info(consortium, name, "site", coordinator, checked_policy),
            )
            os.rename(staging, kit_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _write_json(out / "ca" / "serials.json", serials, replace=True)
    return kit_dir


def revoke(out_dir: str | Path, name: str) -> Revoked:
    """Revoke party ``name``: a new CA-signed CRL listing every revoked serial (TLS and signing).

    The CRL replaces ``ca/crl.pem`` and the coordinator kit's ``crl.pem``
    (each atomically: written beside, then renamed over). A running
    coordinator whose :class:`~fedops.consortium.tls.Revocation` watches that
    file refuses the party from its next call on. Revoking a party again
    rewrites the CRL (a repair after an interrupted revoke).
    """
    out = Path(out_dir)
    with _ca_lock(out):
        ca_cert, ca_key = _load_ca(out)
        serials_path = out / "ca" / "serials.json"
        serials = _read_serials(out)
        entry = serials.get(name)
        if not isinstance(entry, dict):
            raise ConsortiumError(f"{serials_path}: no party named {name!r}")
        if entry.get("role") == "coordinator":
            raise ConsortiumError(
                f"{name!r} is the coordinator: sites do not check a CRL, so revoking it "
                "would protect nothing; provision a new consortium instead"
            )
        already = bool(entry.get("revoked"))
        entry["revoked"] = True
        entry.setdefault("revoked_at", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
        revoked = [
            int(e[key], 16)
            for e in serials.values()
            if e.get("revoked")
            for key in ("serial", "signing_serial")
            if isinstance(e.get(key), str)
        ]
        try:
            previous = pki.crl_number(pki.load_crl((out / "ca" / CRL).read_bytes()))
        except (OSError, ValueError):
            previous = 0
        crl = pki.build_crl(ca_cert, ca_key, revoked, number=previous + 1)
        data = pki.crl_pem(crl)
        # serials.json first: if the CRL write is cut short, revoking again repairs it
        _write_json(serials_path, serials, replace=True)
        written = [pki.write_public(out / "ca" / CRL, data, replace=True)]
        coordinator = next(
            (
                n
                for n, e in serials.items()
                if isinstance(e, dict) and e.get("role") == "coordinator"
            ),
            None,
        )
        if coordinator is not None and (out / "kits" / coordinator).is_dir():
            written.append(pki.write_public(out / "kits" / coordinator / CRL, data, replace=True))
    signing_serial = entry.get("signing_serial")
    return Revoked(
        name,
        int(entry["serial"], 16),
        tuple(written),
        already,
        int(signing_serial, 16) if isinstance(signing_serial, str) else None,
    )


# -- loading ------------------------------------------------------------------------------------


def sign_manifest(kit_dir: str | Path, ca_key: ec.EllipticCurvePrivateKey) -> Path:
    """(Re)write ``kit_dir/manifest.json`` over the kit's files, signed with ``ca_key``."""
    d = Path(kit_dir)
    names = sorted(p.name for p in d.iterdir() if p.is_file() and p.name not in (MANIFEST, CRL))
    files = {n: hashlib.sha256((d / n).read_bytes()).hexdigest() for n in names}
    signature = ca_key.sign(canonical_files(files), ec.ECDSA(hashes.SHA256()))
    manifest = {
        "algorithm": SIGNATURE_ALGORITHM,
        "files": files,
        "signature": base64.b64encode(signature).decode(),
    }
    return _write_json(d / MANIFEST, manifest, replace=True)


# -- internals ----------------------------------------------------------------------------------


def _write_kit(
    kit_dir: Path,
    *,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    info: dict[str, Any],
    hosts: tuple[str, ...] = (),
    crl: x509.CertificateRevocationList | None = None,
) -> dict[str, Any]:
    """Issue the party's two certificates, write its kit, sign it; its serials.json entry."""
    ca_cert, ca_key = ca
    name, role, consortium = info["name"], info["role"], info["consortium"]
    cert, key = pki.issue(ca_cert, ca_key, name, role, consortium=consortium, hosts=hosts)
    sign_cert, sign_key = signing.issue_signing(ca_cert, ca_key, name, role, consortium=consortium)
    kit_dir.mkdir(mode=0o700)
    pki.write_public(kit_dir / "ca.pem", pki.cert_pem(ca_cert))
    pki.write_public(kit_dir / "cert.pem", pki.cert_pem(cert))
    pki.write_private(kit_dir / "key.pem", pki.key_pem(key))
    pki.write_public(kit_dir / "signing.crt", pki.cert_pem(sign_cert))
    pki.write_private(kit_dir / "signing.key", Identity(sign_key).private_pem())
    _write_json(kit_dir / "kit.json", info)
    if crl is not None:
        pki.write_public(kit_dir / CRL, pki.crl_pem(crl))
    sign_manifest(kit_dir, ca_key)
    return {
        "serial": _hex(cert.serial_number),
        "signing_serial": _hex(sign_cert.serial_number),
        "role": role,
        "revoked": False,
    }


def _kit_info(
    consortium: str, name: str, role: str, coordinator: CoordinatorSpec, policy: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "consortium": consortium,
        "name": name,
        "role": role,
        "coordinator": {"name": coordinator.name, "address": coordinator.address},
        "policy": dict(policy),
    }


def _consortium_record(name: str, coordinator: CoordinatorSpec) -> dict[str, Any]:
    return {"name": name, "coordinator": {"name": coordinator.name, "address": coordinator.address}}


def _parse_consortium_record(record: Any, path: Path) -> tuple[str, CoordinatorSpec]:
    try:
        name = check_name(record["name"], "name")
        coordinator = CoordinatorSpec(
            check_name(record["coordinator"]["name"], "coordinator.name"),
            check_address(record["coordinator"]["address"], "coordinator.address"),
        )
    except (KeyError, TypeError, ConsortiumError) as exc:
        raise ConsortiumError(f"{path}: malformed ({exc})") from exc
    return name, coordinator


def _load_ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_dir = out / "ca"
    if not ca_dir.is_dir():
        raise ConsortiumError(f"{ca_dir}: no CA here (run `fedops consortium init` first)")
    try:
        cert = pki.load_cert((ca_dir / "ca.pem").read_bytes())
    except (OSError, ValueError) as exc:
        raise ConsortiumError(f"{ca_dir / 'ca.pem'}: cannot load the CA certificate") from exc
    try:
        key = pki.load_key((ca_dir / "ca_key.pem").read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ConsortiumError(f"{ca_dir / 'ca_key.pem'}: cannot load the CA key") from exc
    if not pki.same_key(cert, key):
        raise ConsortiumError(f"{ca_dir / 'ca_key.pem'}: does not match ca.pem")
    return cert, key


@contextlib.contextmanager
def _ca_lock(out: Path) -> Iterator[None]:
    """One writer at a time on ``out/ca`` (add-site and revoke both rewrite serials.json)."""
    ca_dir = out / "ca"
    if not ca_dir.is_dir():
        raise ConsortiumError(f"{ca_dir}: no CA here (run `fedops consortium init` first)")
    fd = os.open(ca_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _hex(serial: int) -> str:
    return format(serial, "x")


def _write_json(path: Path, data: Any, *, replace: bool = False) -> Path:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return pki.write_public(path, text.encode(), replace=replace)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ConsortiumError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConsortiumError(f"{path}: not valid JSON ({exc})") from exc


def _read_serials(out: Path) -> dict[str, Any]:
    path = out / "ca" / "serials.json"
    serials = _read_json(path)
    if not isinstance(serials, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("serial"), str) for e in serials.values()
    ):
        raise ConsortiumError(f"{path}: malformed (expected name -> {{serial, role, revoked}})")
    return serials
