"""``consortium.yaml``: who is in the consortium, where the coordinator listens, site policies.

A spec names the consortium, its one coordinator (``name`` and ``address``,
``host:port``), its sites (each with an optional policy), its admins and its
optional observers::

    name: hospitals
    coordinator: {name: coordinator, address: 10.0.0.5:8443}
    sites:
      - name: bank-a
        policy: {max_epsilon: 8.0, max_rounds: 50, consent: true}
    admins: [{name: alice}]
    observers: [{name: auditor}]

Every party name is unique across the whole consortium (it is the
certificate's CN and the name of its kit folder) and matches
``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``. Errors are :class:`SpecError`, whose
message starts with the key path: ``sites[2].name: duplicate name 'bank-a'``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DIGEST_PATTERN = re.compile(r"[0-9a-f]{64}")

#: the policy keys a site may state, and what each holds (what
#: :meth:`fedops.tasks.site_policy.SitePolicy.from_mapping` reads from a kit)
POLICY_KEYS = {
    "max_epsilon": "a positive number: the largest total privacy budget the site accepts",
    "max_delta": "a number in (0, 1): the largest δ the site accounts its local DP at",
    "max_rounds": "a positive integer: the most rounds the site takes part in",
    "max_epochs": "a positive integer: the most local epochs a run may ask the site to train",
    "max_batch_size": "a positive integer: the largest batch a run may ask the site to train with",
    "max_lr": "a positive number: the largest learning rate a run may ask the site to train at",
    "dp_public_records": "a positive integer: the record count local DP is planned with",
    "require_secagg": "true or false: whether the site trains only under secure aggregation",
    "monitoring_min_count": "a positive integer: no monitoring bin reports fewer of its rows",
    "monitoring_max_cells": "a positive integer: the most bins a monitoring report may have",
    "allowed_tasks": "a list of sha256 digests (64 lowercase hex) of the task sources it runs",
    "consent": "true or false: whether the site has consented to take part",
    "consent_file": "a path to a JSON file {consent: true|false} the site re-reads before tasks",
}

#: the hosts every coordinator certificate names besides its own, for local runs
LOCAL_HOSTS = ("127.0.0.1", "localhost")


class ConsortiumError(Exception):
    """A consortium spec, kit or CA that cannot be used; the message says where and why."""


class SpecError(ConsortiumError):
    """``consortium.yaml`` is malformed; the message starts with the key path."""


@dataclass(frozen=True)
class CoordinatorSpec:
    name: str
    address: str  # host:port ([v6]:port for IPv6)

    @property
    def host(self) -> str:
        return split_address(self.address)[0]

    @property
    def port(self) -> int:
        return split_address(self.address)[1]

    def hosts(self) -> tuple[str, ...]:
        """The names its certificate carries: its host, then 127.0.0.1 and localhost."""
        return tuple(dict.fromkeys((self.host, *LOCAL_HOSTS)))


@dataclass(frozen=True)
class PartySpec:
    name: str
    role: str  # site | admin | observer
    policy: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConsortiumSpec:
    name: str
    coordinator: CoordinatorSpec
    sites: tuple[PartySpec, ...]
    admins: tuple[PartySpec, ...] = ()
    observers: tuple[PartySpec, ...] = ()

    def parties(self) -> list[tuple[str, str]]:
        """Every ``(name, role)``, the coordinator first."""
        return [
            (self.coordinator.name, "coordinator"),
            *((p.name, p.role) for p in (*self.sites, *self.admins, *self.observers)),
        ]


def load_spec(path: str | Path) -> ConsortiumSpec:
    """Read and check ``consortium.yaml``; :class:`SpecError` names the file or key on failure."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    return parse_spec(data)


def parse_spec(data: Any) -> ConsortiumSpec:
    """Check an already parsed spec (a mapping as ``yaml.safe_load`` returns it)."""
    top = _mapping(data, "(top level)")
    _no_unknown_keys(top, {"name", "coordinator", "sites", "admins", "observers"}, "")
    name = check_name(_required(top, "name", ""), "name")

    coord = _mapping(_required(top, "coordinator", ""), "coordinator")
    _no_unknown_keys(coord, {"name", "address"}, "coordinator")
    coordinator = CoordinatorSpec(
        name=check_name(_required(coord, "name", "coordinator"), "coordinator.name"),
        address=check_address(_required(coord, "address", "coordinator"), "coordinator.address"),
    )

    seen = {coordinator.name.lower(): "coordinator.name"}
    groups: dict[str, list[PartySpec]] = {}
    for key, role, required in (
        ("sites", "site", True),
        ("admins", "admin", True),
        ("observers", "observer", False),
    ):
        raw = top.get(key)
        if raw is None:
            if required:
                raise SpecError(f"{key}: missing (a list of {{name: ...}} entries)")
            raw = []
        if not isinstance(raw, list):
            raise SpecError(f"{key}: expected a list, got {_kind(raw)}")
        if required and not raw:
            raise SpecError(f"{key}: needs at least one entry")
        parties = []
        for i, item in enumerate(raw):
            where = f"{key}[{i}]"
            entry = _mapping(item, where)
            allowed = {"name", "policy"} if role == "site" else {"name"}
            _no_unknown_keys(entry, allowed, where)
            party_name = check_name(_required(entry, "name", where), f"{where}.name")
            if party_name.lower() in seen:
                raise SpecError(
                    f"{where}.name: duplicate name {party_name!r} "
                    f"(already used by {seen[party_name.lower()]})"
                )
            seen[party_name.lower()] = f"{where}.name"
            policy = check_policy(entry.get("policy"), f"{where}.policy")
            parties.append(PartySpec(party_name, role, policy))
        groups[key] = parties

    return ConsortiumSpec(
        name=name,
        coordinator=coordinator,
        sites=tuple(groups["sites"]),
        admins=tuple(groups["admins"]),
        observers=tuple(groups["observers"]),
    )


def check_name(value: Any, where: str) -> str:
    """A party or consortium name, or :class:`SpecError` naming ``where``."""
    if not isinstance(value, str):
        raise SpecError(f"{where}: expected a string, got {_kind(value)}")
    if not NAME_PATTERN.fullmatch(value):
        raise SpecError(
            f"{where}: invalid name {value!r} (1-64 characters: letters, digits, '.', '_', '-', "
            "starting with a letter or digit)"
        )
    return value


def check_address(value: Any, where: str) -> str:
    """``host:port`` (``[v6]:port`` for IPv6), or :class:`SpecError` naming ``where``."""
    if not isinstance(value, str):
        raise SpecError(f"{where}: expected 'host:port', got {_kind(value)}")
    try:
        split_address(value)
    except ValueError as exc:
        raise SpecError(f"{where}: {exc}") from exc
    return value


def split_address(address: str) -> tuple[str, int]:
    """``("10.0.0.5", 8443)`` from ``"10.0.0.5:8443"``; ``("::1", 8443)`` from ``"[::1]:8443"``."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected 'host:port', got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, as '[{host}]:{port_text}'")
    elif not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
        raise ValueError(f"{host!r} is not a host name or IP address")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number in 1..65535")
    return host, int(port_text)


def check_policy(value: Any, where: str) -> dict[str, Any]:
    """A site policy (see :data:`POLICY_KEYS`), or :class:`SpecError` naming the key."""
    if value is None:
        return {}
    policy = _mapping(value, where)
    _no_unknown_keys(policy, set(POLICY_KEYS), where)
    out: dict[str, Any] = {}
    for key, item in policy.items():
        path = f"{where}.{key}"
        if key in ("max_epsilon", "max_lr"):
            if (
                isinstance(item, bool)
                or not isinstance(item, int | float)
                or not math.isfinite(item)
                or item <= 0
            ):
                raise SpecError(f"{path}: {POLICY_KEYS[key]}, got {item!r}")
            out[key] = float(item)
        elif key == "max_delta":
            if isinstance(item, bool) or not isinstance(item, int | float) or not 0 < item < 1:
                raise SpecError(f"{path}: {POLICY_KEYS[key]}, got {item!r}")
            out[key] = float(item)
        elif key in (
            "max_rounds",
            "max_epochs",
            "max_batch_size",
            "dp_public_records",
            "monitoring_min_count",
            "monitoring_max_cells",
        ):
            if isinstance(item, bool) or not isinstance(item, int) or item <= 0:
                raise SpecError(f"{path}: {POLICY_KEYS[key]}, got {item!r}")
            out[key] = item
        elif key == "allowed_tasks":
            if not isinstance(item, list):
                raise SpecError(f"{path}: {POLICY_KEYS[key]}, got {_kind(item)}")
            for i, digest in enumerate(item):
                if not isinstance(digest, str) or not DIGEST_PATTERN.fullmatch(digest):
                    raise SpecError(f"{path}[{i}]: not a sha256 digest (64 lowercase hex)")
            out[key] = list(item)
        elif key in ("consent", "require_secagg"):
            if not isinstance(item, bool):
                raise SpecError(f"{path}: {POLICY_KEYS[key]}, got {item!r}")
            out[key] = item
        elif key == "consent_file":
            if not isinstance(item, str) or not item:
                raise SpecError(f"{path}: {POLICY_KEYS[key]}, got {item!r}")
            out[key] = item
    return out


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            prefix = f"{where}." if where != "(top level)" else ""
            raise SpecError(f"{prefix}{key!r}: keys must be strings")
    return value


def _required(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    path = f"{where}.{key}" if where else key
    if key not in mapping or mapping[key] is None:
        raise SpecError(f"{path}: missing")
    return mapping[key]


def _no_unknown_keys(mapping: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            path = f"{where}.{key}" if where else key
            raise SpecError(f"{path}: unknown key (expected one of: {', '.join(sorted(allowed))})")


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
