"""What ``fedops consortium init | add-site | revoke`` do; each returns the exit status.

Errors (a bad spec, an existing CA, a tampered CA folder, an unknown name)
print one line naming the key or file to stderr and return 2.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedops.consortium.kit import load_kit
from fedops.consortium.kits import add_site, init_consortium, revoke
from fedops.consortium.spec import ConsortiumError

USAGE_ERROR = 2


def init_command(file: str | Path, out: str | Path) -> int:
    """``fedops consortium init FILE --out DIR``: the CA and every party's kit."""
    try:
        kits = [load_kit(kit_dir) for kit_dir in init_consortium(file, out)]  # each checks out
    except (ConsortiumError, OSError) as exc:  # OSError: names its file
        return _error(exc)
    out = Path(out)
    print(f"CA: {out / 'ca' / 'ca.pem'} (its key {out / 'ca' / 'ca_key.pem'} stays here, offline)")
    for kit in kits:
        print(f"  {kit.role:<11} {kit.name:<24} {kit.directory}")
    print(f"{len(kits)} kits; give each party its folder over a private channel.")
    return 0


def add_site_command(out: str | Path, name: str, policy: Mapping[str, Any] | None = None) -> int:
    """``fedops consortium add-site --out DIR NAME``: a kit for one more site."""
    try:
        kit_dir = add_site(out, name, policy)
    except (ConsortiumError, OSError) as exc:  # OSError: names its file
        return _error(exc)
    print(f"  site        {name:<24} {kit_dir}")
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


def _error(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return USAGE_ERROR
