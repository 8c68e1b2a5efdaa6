"""A standing federation's run settings (``fedops run submit RUN.yaml``) as a coordinator config.

The file's keys are ``fedops coordinator``'s flags without the dashes, so a run is
written once and means the same here as on the command line (same names, defaults,
checks and error messages)::

    task: digits
    rounds: 5
    min_clients: 3
    epochs: 2          # or nested by section: client: {epochs: 2, lr: 0.1}
    strategy: fedadam  # or strategy: {name: fedprox, mu: 0.1}

Where the run is served (address, kit, run directory, metrics endpoint, worker
threads) belongs to ``fedops serve``; a run that names one is refused by key.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fedops.cli.configs import run_config_of
from fedops.cli.parser import build_parser
from fedops.config import SECTIONS, ConfigError, CoordinatorConfig, flag_of
from fedops.runtime.run_queue import SpecError

#: keys of ``fedops serve``, not of a run
SERVE_OWNED = (
    "address",
    "kit",
    "ca_fingerprint",
    "insecure",
    "run_dir",
    "metrics_port",
    "metrics_address",
    "max_workers",
    "verbose",
)


def parse_run_spec(
    text: str, *, run_dir: Path, address: str, kit: Path | None, insecure: bool = False
) -> CoordinatorConfig:
    """The run's config, served at ``address`` into ``run_dir``; :class:`SpecError` naming
    the key for anything the coordinator's own parser or checks refuse."""
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"not YAML: {exc}") from None
    if not isinstance(values, Mapping):
        raise SpecError("a run's settings are a mapping of the coordinator's flags (task: ...)")
    argv = run_flags(values)
    argv += ["--run-dir", str(run_dir), "--address", address]
    argv += ["--kit", str(kit)] if kit is not None else []
    argv += ["--insecure"] if insecure else []
    parser = build_parser()
    refusal = io.StringIO()
    try:
        with contextlib.redirect_stderr(refusal):
            args = parser.parse_args(["coordinator", *argv])
    except SystemExit:
        said = refusal.getvalue().strip().splitlines()
        raise SpecError(_as_key(said[-1] if said else "refused")) from None
    try:
        cfg = run_config_of(args)
    except ConfigError as exc:
        raise SpecError(f"{exc.key}: {exc.message}") from None
    _check_task(cfg.task)
    return cfg


def _check_task(task: str | None) -> None:
    """The task's code is readable here (hashed, never imported: that is the run's start)."""
    from fedops.tasks.builtin import TaskError
    from fedops.tasks.loader import source_digest

    if task is None:
        raise SpecError("task: a standing federation's run names its task (task: digits ...)")
    try:
        source_digest(task)
    except (TaskError, OSError) as exc:
        raise SpecError(f"task: {exc}") from None


def run_flags(values: Mapping[Any, Any]) -> list[str]:
    """A run file's mapping as the coordinator's flags (:class:`SpecError` by key)."""
    argv: list[str] = []
    for key, value in values.items():
        if not isinstance(key, str):
            raise SpecError(f"key {key!r}: keys are the coordinator's flag names")
        if isinstance(value, Mapping) and key in SECTIONS:
            for name, inner in value.items():
                argv += _flag(f"{key}.{name}", flag_of(f"{key}.{name}"), inner)
            continue
        if key.replace("-", "_") in SERVE_OWNED:
            raise SpecError(f"{key}: set by `fedops serve` for every run, not by a run")
        argv += _flag(key, "--" + key.replace("_", "-"), value)
    return argv


def _flag(key: str, flag: str, value: Any) -> list[str]:
    if value is None or value is False:
        return []
    if value is True:
        return [flag]
    if isinstance(value, list):
        return [part for item in value for part in (flag, str(item))]
    if isinstance(value, Mapping):
        raise SpecError(f"{key}: a mapping, where a value is expected")
    return [flag, str(value)]


def _as_key(message: str) -> str:
    """argparse's ``fedops coordinator: error: argument --epochs: ...`` as ``epochs: ...``."""
    message = message.partition("error: ")[2] or message
    if message.startswith("argument --"):
        flag, _, why = message.removeprefix("argument --").partition(": ")
        return f"{flag.split('/')[0].replace('-', '_')}: {why}"
    if message.startswith("unrecognized arguments: --"):
        name = message.removeprefix("unrecognized arguments: --").split()[0]
        return f"{name.replace('-', '_')}: not a setting of a run (see fedops coordinator --help)"
    return message
