"""HOST:PORT addresses as the settings check them: parsed with the key named, and loopback
told apart (without certificates fedops serves and dials loopback only)."""

from __future__ import annotations

import ipaddress

from fedops.runtime.rules import require as _require


def parse_address(key: str, address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    _require(
        bool(sep) and bool(host) and port.isdigit(), key, f"expected HOST:PORT, got {address!r}"
    )
    _require(0 <= int(port) <= 65535, key, f"port {port} is out of range")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
