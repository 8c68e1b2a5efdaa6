"""The CA's folder: loading its key, one writer at a time, its records; signing manifests.

Shared by :mod:`fedops.consortium.kits` (demo kits, revocation) and
:mod:`fedops.consortium.enrol` (signing CSRs), so both read and write
``ca/serials.json`` and ``ca/consortium.json`` the same way, under the same lock.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from fedops.consortium import pki
from fedops.consortium.crl import CRL_STATE
from fedops.consortium.kit import CRL, MANIFEST, SIGNATURE_ALGORITHM, canonical_files
from fedops.consortium.spec import ConsortiumError, CoordinatorSpec, check_address, check_name

# -- kits ------------------------------------------------------------------------------------


def sign_manifest(kit_dir: str | Path, ca_key: ec.EllipticCurvePrivateKey) -> Path:
    """(Re)write ``kit_dir/manifest.json`` over the kit's files, signed with ``ca_key``."""
    d = Path(kit_dir)
    names = sorted(
        p.name for p in d.iterdir() if p.is_file() and p.name not in (MANIFEST, CRL, CRL_STATE)
    )
    files = {n: hashlib.sha256((d / n).read_bytes()).hexdigest() for n in names}
    signature = ca_key.sign(canonical_files(files), ec.ECDSA(hashes.SHA256()))
    manifest = {
        "algorithm": SIGNATURE_ALGORITHM,
        "files": files,
        "signature": base64.b64encode(signature).decode(),
    }
    return write_json(d / MANIFEST, manifest, replace=True)


def kit_info(
    consortium: str,
    name: str,
    role: str,
    coordinator: CoordinatorSpec,
    policy: Mapping[str, Any],
    crl_number: int = 1,
) -> dict[str, Any]:
    """kit.json: who the party is, and the CRL number current when its kit was issued (a
    site refuses any older CRL, so a kit issued after a revocation cannot be fed the list
    from before it)."""
    return {
        "consortium": consortium,
        "name": name,
        "role": role,
        "coordinator": {"name": coordinator.name, "address": coordinator.address},
        "policy": dict(policy),
        "crl_number": crl_number,
    }


def current_crl_number(out: Path) -> int:
    """The number of the CRL the CA last issued (``ca/crl.pem``)."""
    return pki.crl_number(pki.load_crl((out / "ca" / "crl.pem").read_bytes()))


def consortium_record(
    name: str, coordinator: CoordinatorSpec, parties: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "name": name,
        "coordinator": {"name": coordinator.name, "address": coordinator.address},
        "parties": dict(parties),
    }


def parties_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """consortium.json's ``parties`` (name -> {role, policy}); none in a pre-CSR record."""
    parties = record.get("parties")
    return parties if isinstance(parties, dict) else {}


def refuse_taken(out: Path, name: str, record: Mapping[str, Any]) -> None:
    """A name is the consortium's once issued or registered, even once revoked."""
    taken = {n.lower(): n for n in (*read_serials(out), *parties_of(record))}
    if name.lower() in taken:
        raise ConsortiumError(
            f"name: {name!r} is already in the consortium as {taken[name.lower()]!r} "
            f"({out / 'ca'}); names cannot be reused, even once revoked"
        )


def parse_consortium_record(record: Any, path: Path) -> tuple[str, CoordinatorSpec]:
    try:
        name = check_name(record["name"], "name")
        coordinator = CoordinatorSpec(
            check_name(record["coordinator"]["name"], "coordinator.name"),
            check_address(record["coordinator"]["address"], "coordinator.address"),
        )
    except (KeyError, TypeError, ConsortiumError) as exc:
        raise ConsortiumError(f"{path}: malformed ({exc})") from exc
    return name, coordinator


def load_ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
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
def ca_lock(out: Path) -> Iterator[None]:
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


def hex_serial(serial: int) -> str:
    return format(serial, "x")


def write_json(path: Path, data: Any, *, replace: bool = False) -> Path:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return pki.write_public(path, text.encode(), replace=replace)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ConsortiumError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConsortiumError(f"{path}: not valid JSON ({exc})") from exc


def read_serials(out: Path) -> dict[str, Any]:
    path = out / "ca" / "serials.json"
    serials = read_json(path)
    if not isinstance(serials, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("serial"), str) for e in serials.values()
    ):
        raise ConsortiumError(f"{path}: malformed (expected name -> {{serial, role, revoked}})")
    return serials
