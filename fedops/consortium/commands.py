"""What ``fedops consortium init | add-site | request | sign | assemble | revoke | crl`` do.

Each returns the exit status. The walkthrough is the CSR path: ``init`` (the
CA and who may enrol), ``request`` at each party, ``sign`` at the CA,
``assemble`` at each party with the CA fingerprint got out of band.
``--demo-keys`` makes every key at the CA instead, and says so on stderr.

Errors (a bad spec, an existing CA, a tampered CA folder, an unknown name)
print one line naming the key or file to stderr and return 2.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedops.consortium import pki
from fedops.consortium.enrol import assemble, request, sign_requests
from fedops.consortium.kit import load_kit
from fedops.consortium.kits import (
    add_site,
    init_ca,
    init_consortium,
    refresh_crl,
    register_site,
    revoke,
)
from fedops.consortium.spec import ConsortiumError

USAGE_ERROR = 2


DEMO_WARNING = (
    "WARNING: --demo-keys: every party's private keys were generated HERE, at the CA. Whoever "
    "holds this folder can pose as any party. Use this for one-machine demos and tests only; "
    "real parties run `fedops consortium request` and keep their keys."
)


def init_command(file: str | Path, out: str | Path, *, demo_keys: bool = False) -> int:
    """``fedops consortium init FILE --out DIR [--demo-keys]``: the CA (and demo kits)."""
    try:
        if demo_keys:
            kits = [load_kit(kit_dir) for kit_dir in init_consortium(file, out)]
        else:
            init_ca(file, out)
            kits = []
        fingerprint = pki.fingerprint(pki.load_cert((Path(out) / "ca" / "ca.pem").read_bytes()))
    except (ConsortiumError, OSError) as exc:  # OSError: names its file
        return _error(exc)
    out = Path(out)
    print(f"CA: {out / 'ca' / 'ca.pem'} (its key {out / 'ca' / 'ca_key.pem'} stays here, offline)")
    print(f"CA fingerprint (sha256): {fingerprint}")
    print("  tell every party this value over a channel other than the one kits travel on;")
    print("  they pass it as --ca-fingerprint to `assemble`, `client` and `coordinator`.")
    if not demo_keys:
        print("No keys made here: each party runs `fedops consortium request NAME --role ROLE")
        print("--out DIR`, sends NAME.csr, and you run `fedops consortium sign`.")
        return 0
    print(DEMO_WARNING, file=sys.stderr)
    for kit in kits:
        print(f"  {kit.role:<11} {kit.name:<24} {kit.directory}")
    print(f"{len(kits)} demo kits; give each party its folder over a private channel.")
    return 0


def add_site_command(
    out: str | Path,
    name: str,
    policy: Mapping[str, Any] | None = None,
    *,
    demo_keys: bool = False,
) -> int:
    """``fedops consortium add-site --out DIR NAME``: let one more site enrol (or a demo kit)."""
    try:
        if not demo_keys:
            register_site(out, name, policy)
            print(f"  site        {name:<24} may now enrol: sign its NAME.csr when it sends it")
            return 0
        kit_dir = add_site(out, name, policy)
    except (ConsortiumError, OSError) as exc:  # OSError: names its file
        return _error(exc)
    print(DEMO_WARNING, file=sys.stderr)
    print(f"  site        {name:<24} {kit_dir}")
    return 0


def request_command(name: str, role: str, out: str | Path, consortium: str | None = None) -> int:
    """``fedops consortium request NAME --role ROLE --out DIR``: keys here, CSRs to send."""
    try:
        csr = request(name, role, out, consortium=consortium)
    except (ConsortiumError, OSError) as exc:
        return _error(exc)
    print(f"keys: {Path(out) / 'key.pem'}, {Path(out) / 'signing.key'} (0600; they stay here)")
    print(f"send {csr} to the CA; it returns a signed folder for `fedops consortium assemble`.")
    return 0


def sign_command(csrs: Sequence[str | Path], ca: str | Path, out: str | Path) -> int:
    """``fedops consortium sign CSR... --ca DIR --out DIR``: certificates for listed parties."""
    ca_root = Path(ca)
    if ca_root.name == "ca" and (ca_root / "ca_key.pem").exists():
        ca_root = ca_root.parent  # the ca/ folder itself was given
    try:
        bundles = sign_requests(list(csrs), ca_root, out)
    except (ConsortiumError, OSError) as exc:
        return _error(exc)
    for bundle in bundles:
        print(f"  signed {bundle.name:<24} {bundle} (public files only: send it back)")
    return 0


def assemble_command(keys: str | Path, signed: str | Path, ca_fingerprint: str) -> int:
    """``fedops consortium assemble DIR --signed BUNDLE --ca-fingerprint HEX``: make the kit."""
    try:
        kit = assemble(keys, signed, ca_fingerprint)
    except (ConsortiumError, OSError) as exc:
        return _error(exc)
    print(f"kit ready: {kit.directory} ({kit.role} {kit.name!r} of {kit.consortium!r})")
    print(f"pass --kit {kit.directory} --ca-fingerprint {kit.ca_fingerprint} when you run.")
    return 0


def revoke_command(out: str | Path, name: str) -> int:
    """``fedops consortium revoke --out DIR NAME``: list the party's certificate in the CRL."""
    try:
        result = revoke(out, name)
    except (ConsortiumError, OSError) as exc:  # OSError: names its file
        return _error(exc)
    state = "was already revoked; CRL rewritten" if result.already else "revoked"
    print(f"{name} (serial {result.serial:x}) {state}:")
    for path in result.crl_paths:
        print(f"  CRL written to {path}")
    if len(result.crl_paths) < 2:
        print("  (no coordinator kit here: copy ca/crl.pem into the coordinator's kit yourself)")
    print("A coordinator that already holds this kit folder refuses it from its next call;")
    print("one running from a copy elsewhere needs the new crl.pem copied there.")
    return 0


def crl_command(out: str | Path, days: int) -> int:
    """``fedops consortium crl --out DIR [--days N]``: a fresh CRL, same revocations."""
    try:
        written = refresh_crl(out, days=days)
    except (ConsortiumError, OSError) as exc:
        return _error(exc)
    for path in written:
        print(f"  CRL (valid {days} days) written to {path}")
    print("copy it to the coordinator's kit if it runs elsewhere, before the old one expires.")
    return 0


def _error(exc: Exception) -> int:
    print(f"fedops consortium: error: {exc}", file=sys.stderr)
    return USAGE_ERROR
