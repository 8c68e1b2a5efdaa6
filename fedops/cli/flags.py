"""Flag builders the command parsers share: schema sections, config defaults, task, trust pin.

A flag's default is its config field's (:func:`config_defaults`) and a schema
section's flags are its fields (:func:`schema_flags`), so no default is
written twice and the flags cannot drift from what the configs check.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from fedops.config import FLAG_NAMES, SECTIONS, flag_of, flagged
from fedops.tasks.builtin import BUILTIN_TASKS


def task_flags(p: argparse.ArgumentParser, *, required: bool, repeatable: bool = False) -> None:
    p.add_argument(
        "--task",
        required=required,
        action="append" if repeatable else "store",
        help=f"built-in ({', '.join(BUILTIN_TASKS)}), path/to/task.py or pkg.module"
        + ("; repeat it for a --standing site: the tasks it runs" if repeatable else ""),
    )
    p.add_argument(
        "--partition",
        choices=("iid", "dirichlet"),
        help="how a built-in task splits data across sites",
    )
    p.add_argument(
        "--alpha",
        type=float,
        help="Dirichlet concentration; smaller is more skewed",
    )
    p.add_argument("--data-seed", type=int, help="seed of the data split")


def schema_flags(
    p: argparse.ArgumentParser,
    prefix: str,
    title: str,
    *,
    choices: dict[str, list[str]] | None = None,
) -> Any:
    """One flag per field of the schema section ``prefix`` (:mod:`fedops.runtime.schema`),
    but its simulation-only ones: name, type, default and help come from the field, so
    flags and Hydra keys agree. The value lands at ``args.<prefix>.<field>``; a bool is a
    switch. Returns the argument group, for the flags that belong beside them."""
    section = SECTIONS[prefix]
    group = p.add_argument_group(title)
    hints = typing.get_type_hints(section)
    for spec in flagged(section):
        names = (flag_of(f"{prefix}.{spec.name}"),)
        dest, text = f"{prefix}.{spec.name}", spec.metadata["help"]
        kind = next(t for t in typing.get_args(hints[spec.name]) or (hints[spec.name],))
        if kind is bool:
            group.add_argument(*names, dest=dest, action="store_true", help=text)
            continue
        allowed = (choices or {}).get(spec.name, spec.metadata.get("choices"))
        group.add_argument(
            *names,
            dest=dest,
            type=spec.metadata.get("parse", kind),
            default=spec.default,
            choices=allowed,
            metavar=None if allowed else spec.metadata.get("metavar", spec.name.upper()),
            help=text,
        )
    return group


def config_defaults(
    parser: argparse.ArgumentParser, config: type, *, skip: tuple[str, ...] = ()
) -> None:
    """Each flag takes its default from its config field (:mod:`fedops.runtime.settings`),
    where it is written once, a section's flag from the section the config nests (so a
    deployment's own default, ``--monitoring auto``, is the flag's); ``skip``: flags whose
    absence means something else (the kit's address)."""
    specs = {spec.name: spec for spec in dataclasses.fields(config)}
    renamed = {flag[2:].replace("-", "_"): key for key, flag in FLAG_NAMES.items()}
    for action in parser._actions:
        prefix, _, name = renamed.get(action.dest, action.dest).rpartition(".")
        spec = specs.get(prefix or name)
        if spec is None or action.dest in skip or action.required:
            continue
        if spec.default is not dataclasses.MISSING:
            action.default = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            default = spec.default_factory()  # a section's: its field's, as the config sets it
            action.default = getattr(default, name) if prefix else default


def ca_fingerprint_flag(parser: Any) -> None:
    """``--ca-fingerprint``: the trust root pinned from outside the kit folder.

    A check inside the folder cannot catch a folder replaced whole (new CA,
    manifest re-signed by it); a pin kept in the service's command line can.
    """
    parser.add_argument(
        "--ca-fingerprint",
        metavar="HEX",
        help="with --kit: the consortium CA certificate's sha256 (from the CA's operator, out "
        "of band); a kit from any other CA is refused",
    )
