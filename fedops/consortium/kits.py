"""The CA's side: create it, issue demo kits, revoke. Kits are one folder per party.

Parties normally make their own keys and send a CSR
(:mod:`fedops.consortium.enrol`): the CA operator may be the coordinator's
operator, and must not hold the keys that let it pose as a site. The kits
written here with :func:`init_consortium` and :func:`add_site` are *demo
kits*: every private key is generated at the CA, which suits one machine or
one team, and nothing else. :func:`init_ca` and :func:`register_site` are
the CSR path's counterparts: the CA and the list of who may enrol, no keys.

Layout under ``OUT``::

    ca/ca.pem            the consortium CA's certificate
    ca/ca_key.pem        its private key (0600; keep it offline)
    ca/crl.pem           the current CA-signed CRL
    ca/serials.json      name -> {serial, signing_serial (hex), role, revoked}
    ca/consortium.json   the consortium's name, coordinator and parties {name: {role, policy}}
    kits/<name>/cert.pem      the party's certificate (CN name, O consortium, OU role)
    kits/<name>/key.pem       its private key (0600)
    kits/<name>/signing.crt   its Ed25519 signing certificate (same subject; signing only)
    kits/<name>/signing.key   the signing key (0600): audit logs, SecAgg public keys
    kits/<name>/ca.pem        the CA certificate it trusts
    kits/<name>/crl.pem       (coordinator kit only) the CRL it enforces
    kits/<name>/kit.json      {consortium, name, role, coordinator: {name, address}, policy,
                               ca_fingerprint}
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

import datetime as dt
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from fedops.consortium import ca as authority
from fedops.consortium import pki, signing
from fedops.consortium.ca import sign_manifest
from fedops.consortium.crl import MAX_DELIVERED_CRL_DAYS
from fedops.consortium.kit import (
    CRL,
)
from fedops.consortium.spec import (
    ConsortiumError,
    ConsortiumSpec,
    check_name,
    check_policy,
    load_spec,
)
from fedops.crypto import Identity

__all__ = [
    "Revoked",
    "add_site",
    "init_ca",
    "init_consortium",
    "refresh_crl",
    "register_site",
    "revoke",
    "sign_manifest",
]


@dataclass(frozen=True)
class Revoked:
    name: str
    serial: int
    crl_paths: tuple[Path, ...]  # where the new CRL was written
    already: bool  # it had been revoked before; the CRL was rewritten all the same
    signing_serial: int | None = None  # its signing certificate's, listed too (None: old kit)


# -- provisioning -------------------------------------------------------------------------------


def init_ca(spec_file: str | Path, out_dir: str | Path) -> Path:
    """Create the CA alone under ``out_dir``, recording who may enrol; the CA folder.

    The CSR path: each party then runs ``fedops consortium request``, and the
    CA signs what they send (:func:`fedops.consortium.enrol.sign_requests`).
    """
    _init(spec_file, out_dir, demo_keys=False)
    return Path(out_dir) / "ca"


def init_consortium(spec_file: str | Path, out_dir: str | Path) -> list[Path]:
    """Create the CA and every party's *demo* kit (keys made here); the kit folders.

    Demo only: every private key passes through the CA's machine. Refuses
    (:class:`ConsortiumError`) when ``out_dir/ca`` or ``out_dir/kits``
    already exists: a second CA would silently split the consortium. Everything
    is built in a staging folder and moved into place at the end, so a failure
    leaves nothing behind.
    """
    spec = _init(spec_file, out_dir, demo_keys=True)
    return [Path(out_dir) / "kits" / name for name, _ in spec.parties()]


def _init(spec_file: str | Path, out_dir: str | Path, *, demo_keys: bool) -> ConsortiumSpec:
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
        policies = {p.name: dict(p.policy) for p in spec.sites}
        parties = {n: {"role": r, "policy": policies.get(n, {})} for n, r in spec.parties()}
        record = authority.consortium_record(spec.name, spec.coordinator, parties)
        authority.write_json(ca_dir / "consortium.json", record)

        serials: dict[str, dict[str, Any]] = {}
        if demo_keys:
            kits_dir = staging / "kits"
            kits_dir.mkdir()
            for name, role in spec.parties():
                serials[name] = _write_kit(
                    kits_dir / name,
                    ca=(ca_cert, ca_key),
                    info=authority.kit_info(
                        spec.name, name, role, spec.coordinator, policies.get(name, {})
                    ),
                    hosts=spec.coordinator.hosts() if role == "coordinator" else (),
                    crl=crl if role == "coordinator" else None,
                )
            os.rename(kits_dir, out / "kits")
        authority.write_json(ca_dir / "serials.json", serials)
        os.rename(ca_dir, out / "ca")  # last: the CA's presence marks a finished init
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return spec


def register_site(out_dir: str | Path, name: str, policy: Mapping[str, Any] | None = None) -> None:
    """Let a new site ``name`` enrol by CSR (no keys made here): record it in consortium.json."""
    out = Path(out_dir)
    check_name(name, "name")
    checked_policy = check_policy(dict(policy) if policy is not None else None, "policy")
    with authority.ca_lock(out):
        path = out / "ca" / "consortium.json"
        record = authority.read_json(path)
        authority.parse_consortium_record(record, path)
        authority.refuse_taken(out, name, record)
        record.setdefault("parties", {})[name] = {"role": "site", "policy": checked_policy}
        authority.write_json(path, record, replace=True)


def add_site(out_dir: str | Path, name: str, policy: Mapping[str, Any] | None = None) -> Path:
    """Issue a *demo* kit (key made here) for a new site ``name``; its kit folder."""
    out = Path(out_dir)
    check_name(name, "name")
    checked_policy = check_policy(dict(policy) if policy is not None else None, "policy")
    with authority.ca_lock(out):
        ca_cert, ca_key = authority.load_ca(out)
        record = authority.read_json(out / "ca" / "consortium.json")
        serials = authority.read_serials(out)
        authority.refuse_taken(out, name, record)
        consortium, coordinator = authority.parse_consortium_record(
            record, out / "ca" / "consortium.json"
        )
        kit_dir = out / "kits" / name
        if kit_dir.exists() or kit_dir.is_symlink():
            raise ConsortiumError(f"{kit_dir}: already exists")
        (out / "kits").mkdir(exist_ok=True)
        staging = out / "kits" / f".{name}.{os.urandom(6).hex()}.tmp"
        try:
            serials[name] = _write_kit(
                staging,
                ca=(ca_cert, ca_key),
                info=authority.kit_info(
                    consortium,
                    name,
                    "site",
                    coordinator,
                    checked_policy,
                    crl_number=authority.current_crl_number(out),
                ),
            )
            record.setdefault("parties", {})[name] = {"role": "site", "policy": checked_policy}
            os.rename(staging, kit_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        authority.write_json(out / "ca" / "serials.json", serials, replace=True)
        authority.write_json(out / "ca" / "consortium.json", record, replace=True)
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
    with authority.ca_lock(out):
        ca_cert, ca_key = authority.load_ca(out)
        serials_path = out / "ca" / "serials.json"
        serials = authority.read_serials(out)
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
        # serials.json first: if the CRL write is cut short, revoking again repairs it
        authority.write_json(serials_path, serials, replace=True)
        written = _publish_crl(out, (ca_cert, ca_key), serials)
    signing_serial = entry.get("signing_serial")
    return Revoked(
        name,
        int(entry["serial"], 16),
        written,
        already,
        int(signing_serial, 16) if isinstance(signing_serial, str) else None,
    )


def refresh_crl(out_dir: str | Path, *, days: int = pki.CRL_DAYS) -> tuple[Path, ...]:
    """Re-issue the CRL (same revocations, next number) valid ``days``; where it was written.

    Parties refuse a CRL past its ``next_update``, so a consortium that keeps
    CRLs short-lived (the shorter, the sooner a withheld CRL is noticed)
    runs this before each one expires.
    """
    if not 1 <= days <= MAX_DELIVERED_CRL_DAYS:
        raise ConsortiumError(
            f"--days: must be 1..{MAX_DELIVERED_CRL_DAYS} (sites refuse longer-lived CRLs), "
            f"got {days}"
        )
    out = Path(out_dir)
    with authority.ca_lock(out):
        ca = authority.load_ca(out)
        return _publish_crl(out, ca, authority.read_serials(out), days=days)


def _publish_crl(
    out: Path,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    serials: Mapping[str, Any],
    *,
    days: int = pki.CRL_DAYS,
) -> tuple[Path, ...]:
    """A CRL of every revoked serial, numbered one past the last, into ca/ and the hub's kit."""
    ca_cert, ca_key = ca
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
    crl = pki.build_crl(ca_cert, ca_key, revoked, number=previous + 1, days=days)
    data = pki.crl_pem(crl)
    written = [pki.write_public(out / "ca" / CRL, data, replace=True)]
    coordinator = next(
        (n for n, e in serials.items() if isinstance(e, dict) and e.get("role") == "coordinator"),
        None,
    )
    if coordinator is not None and (out / "kits" / coordinator).is_dir():
        written.append(pki.write_public(out / "kits" / coordinator / CRL, data, replace=True))
    return tuple(written)


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
    info = {**info, "ca_fingerprint": pki.fingerprint(ca_cert)}
    name, role, consortium = info["name"], info["role"], info["consortium"]
    cert, key = pki.issue(ca_cert, ca_key, name, role, consortium=consortium, hosts=hosts)
    sign_cert, sign_key = signing.issue_signing(ca_cert, ca_key, name, role, consortium=consortium)
    kit_dir.mkdir(mode=0o700)
    pki.write_public(kit_dir / "ca.pem", pki.cert_pem(ca_cert))
    pki.write_public(kit_dir / "cert.pem", pki.cert_pem(cert))
    pki.write_private(kit_dir / "key.pem", pki.key_pem(key))
    pki.write_public(kit_dir / "signing.crt", pki.cert_pem(sign_cert))
    pki.write_private(kit_dir / "signing.key", Identity(sign_key).private_pem())
    authority.write_json(kit_dir / "kit.json", info)
    if crl is not None:
        pki.write_public(kit_dir / CRL, pki.crl_pem(crl))
    sign_manifest(kit_dir, ca_key)
    return {
        "serial": authority.hex_serial(cert.serial_number),
        "signing_serial": authority.hex_serial(sign_cert.serial_number),
        "role": role,
        "revoked": False,
    }
