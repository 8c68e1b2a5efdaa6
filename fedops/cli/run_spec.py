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
import functools
import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fedops.cli.configs import run_config_of
from fedops.cli.parser import build_parser
from fedops.config import SECTIONS, ConfigError, CoordinatorConfig, flag_of
from fedops.runtime.run_queue import MAX_SPEC_BYTES, SpecError

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
    "help",
    # the serve host would call the endpoint a run file names, as the run opens
    "mlflow_uri",
    "mlflow_experiment",
)
#: a key is a flag's name, lowercase (``min_clients`` or ``min-clients``), nothing else
KEY = re.compile(r"[a-z][a-z0-9_-]{0,63}")
#: the most items a list value may hold (a repeatable flag's values)
MAX_LIST = 32
#: the deepest a run file nests (a section's mapping is 2)
MAX_DEPTH = 4


def parse_run_spec(
    text: str, *, run_dir: Path, address: str, kit: Path | None, insecure: bool = False
) -> CoordinatorConfig:
    """The run's config, served at ``address`` into ``run_dir``; :class:`SpecError` naming
    the key for anything the coordinator's own parser or checks refuse."""
    argv = run_flags(load_run_file(text))
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


def load_run_file(text: str) -> Mapping[str, Any]:
    """The run file's mapping, size-bounded and plain: no anchors or aliases (a few hundred
    bytes of them expand to gigabytes), no tags beyond YAML's safe ones."""
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise SpecError(f"a run file is at most {MAX_SPEC_BYTES} bytes")
    try:
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise SpecError("anchors and aliases (& and *) are not accepted in a run file")
            depth += isinstance(event, yaml.CollectionStartEvent)
            depth -= isinstance(event, yaml.CollectionEndEvent)
            if depth > MAX_DEPTH:
                raise SpecError(f"a run file nests at most {MAX_DEPTH} levels")
        values = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: int() limits
        raise SpecError(f"not YAML: {str(exc)[:300]}") from None
    if not isinstance(values, Mapping):
        raise SpecError("a run's settings are a mapping of the coordinator's flags (task: ...)")
    return values


def run_flags(values: Mapping[Any, Any]) -> list[str]:
    """A run file's mapping as the coordinator's flags (:class:`SpecError` by key); a
    setting given twice (``epochs`` and ``client: {epochs: ...}``) is refused, not decided
    by whichever comes last."""
    argv: list[str] = []
    given: dict[str, str] = {}  # flag -> the key that set it
    for key, value in values.items():
        _check_key(key)
        if isinstance(value, Mapping) and key in SECTIONS:
            for name, inner in value.items():
                _check_key(name)
                flag = flag_of(f"{key}.{name}")
                argv += _flag(f"{key}.{name}", _once(given, flag, f"{key}.{name}"), inner)
            continue
        if key.replace("-", "_") in SERVE_OWNED:
            raise SpecError(f"{key}: set by `fedops serve` for every run, not by a run")
        argv += _flag(key, _once(given, "--" + key.replace("_", "-"), key), value)
    return argv


def _once(given: dict[str, str], flag: str, key: str) -> str:
    """``flag``, first seen here (``given``: the flags so far and the keys that set them)."""
    if flag in given:
        raise SpecError(f"{key}: set twice, as {given[flag]} and as {key}: keep one")
    given[flag] = key
    return flag


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise SpecError(f"key {str(key)[:40]!r}: keys are the coordinator's flag names")


@functools.cache
def _run_options() -> frozenset[str]:
    """``fedops coordinator``'s own option strings: a run file names them exactly (no
    abbreviation argparse would accept, so no serve-owned flag gets in by a prefix)."""
    sub = build_parser()._subparsers
    assert sub is not None
    coordinator = sub._group_actions[0].choices["coordinator"]  # type: ignore[attr-defined]
    return frozenset(coordinator._option_string_actions)


def _flag(key: str, flag: str, value: Any) -> list[str]:
    if flag not in _run_options():
        raise SpecError(f"{key}: not a setting of a run (see fedops coordinator --help)")
    if value is None or value is False:
        return []
    if value is True:
        return [flag]
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_LIST:
        raise SpecError(f"{key}: at most {MAX_LIST} values")
    for item in items:
        if isinstance(item, (Mapping, list)):
            raise SpecError(f"{key}: a plain value is expected here")
        if not isinstance(item, (str, int, float)):
            raise SpecError(f"{key}: {type(item).__name__} is not a setting's value")
        if isinstance(item, int) and not -(2**63) <= item < 2**63:
            raise SpecError(f"{key}: {str(item)[:30]}... is out of range")
    return [part for item in items for part in (flag, str(item))]


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
