"""Parsed flags as the config schemas (:mod:`fedops.config`): one mapping for the CLI.

``fedops coordinator``'s flags and a standing federation's run files
(:mod:`fedops.cli.run_spec`) become a :class:`CoordinatorConfig` here by the same
code, so a run means the same submitted as typed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedops.config import SECTIONS, ClientConfig, ConfigError, CoordinatorConfig


def kit_address(kit: Path | None, given: str | None, pin: str | None = None) -> str:
    """The address flag if given, else the kit's coordinator address, else the default."""
    if given:
        return given
    if kit is not None:
        from fedops.consortium.kit import KitError, load_kit

        try:
            return load_kit(kit, ca_fingerprint=pin).coordinator_address
        except KitError as exc:
            raise ConfigError("kit", str(exc)) from exc
    return "127.0.0.1:8765"


def config_of(args: argparse.Namespace) -> Any:
    """The config of ``fedops coordinator`` or ``fedops client`` from its flags."""
    if args.ca_fingerprint is not None and args.kit is None:
        raise ConfigError("ca_fingerprint", "pins a kit's CA; pass --kit too")
    if args.command == "coordinator":
        return run_config_of(args)
    if args.command == "client":
        return _client_config(args)
    raise AssertionError(f"no config for {args.command}")


def _values(args: argparse.Namespace) -> dict[str, Any]:
    skip = ("command", "verbose", "insecure", "ca_fingerprint")  # the pin is the CLI's, not config
    return {k: v for k, v in vars(args).items() if k not in skip and "." not in k}


def _section(args: argparse.Namespace, prefix: str) -> Any:
    """Schema section ``prefix`` from its flags (their dest is ``prefix.field``)."""
    given = {k.partition(".")[2]: v for k, v in vars(args).items() if k.startswith(f"{prefix}.")}
    return SECTIONS[prefix](**given)


def run_config_of(args: argparse.Namespace) -> CoordinatorConfig:
    """``fedops coordinator``'s flags (typed, or from a run file) as the run's config."""
    values = _values(args)
    values["insecure"] = args.insecure
    values["address"] = kit_address(args.kit, args.address, args.ca_fingerprint)
    values["round_timeout_s"] = values.pop("round_timeout")
    values["join_timeout_s"] = values.pop("join_timeout")
    values["liveness_timeout_s"] = values.pop("liveness_timeout")
    values["heartbeat_interval_s"] = values.pop("heartbeat_interval")
    return CoordinatorConfig(
        **values,
        strategy=_section(args, "strategy"),
        train=_section(args, "client"),
        **{key: _section(args, key) for key in ("privacy", "secagg", "monitoring")},
    )


def _client_config(args: argparse.Namespace) -> ClientConfig:
    values = _values(args)
    values["coordinator"] = kit_address(args.kit, args.coordinator, args.ca_fingerprint)
    values["insecure"] = args.insecure
    tasks = values.pop("task") or []
    if values["standing"]:
        values["tasks"] = tuple(tasks)
    elif len(tasks) > 1:
        raise ConfigError("task", f"given {len(tasks)} times; only a --standing site runs several")
    values["task"] = tasks[0] if tasks and not values["standing"] else None
    return ClientConfig(**values)
