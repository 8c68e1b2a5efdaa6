"""``fedops simulate``'s command line checked before anything runs, by key.

Hydra composes the overrides; what it refuses (an unknown key, a wrong type, a missing
group option) is turned here into the :class:`ConfigError` fedops raises for its own
checks, naming the key. What it accepts without a schema (``+key=value`` appends a key)
is refused here too: no key outside the schema is ever ignored. Before the first job of
a sweep runs, every job's settings are composed and checked (:func:`planned_jobs`).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fedops.runtime.settings import ConfigError

#: Hydra's own flags that run no job: nothing to check beforehand
NO_JOB = ("help", "hydra_help", "info", "shell_completion", "experimental_rerun")
#: flags that compose another config than fedops' own: Hydra checks those by itself
OTHER_CONFIG = ("config_path", "config_name", "config_dir")
#: the run directories Hydra creates before a job starts
RUN_DIRS = ("hydra.run.dir", "hydra.sweep.dir")


def check_known_keys(node: DictConfig, schema: Any, prefix: str = "") -> None:
    """Every key of the composed ``node`` is a field of ``schema`` (a dataclass instance):
    ``+key=value`` appends one Hydra accepts, which nothing would read."""
    names = [spec.name for spec in dataclasses.fields(schema)]
    for key in node:
        full = f"{prefix}{key}"
        if key not in names:
            raise unknown_key(full, schema)
        value, default = node[key], getattr(schema, str(key))
        if isinstance(value, DictConfig) and dataclasses.is_dataclass(default):
            check_known_keys(value, default, f"{full}.")


def unknown_key(full_key: str, root: Any = None) -> ConfigError:
    """A key outside the schema (of ``root``, the section its prefix names when None),
    with the closest one it may have meant."""
    from fedops.runtime.simulate_settings import SimulateConfig

    prefix, _, name = full_key.rpartition(".")
    section = root
    if section is None:
        section = SimulateConfig()
        for part in prefix.split(".") if prefix else ():
            section = getattr(section, part, None)
    names = [spec.name for spec in dataclasses.fields(section)] if _is_section(section) else []
    close = difflib.get_close_matches(name, names, n=1)
    dotted = f"{prefix}." if prefix else ""
    hint = f"did you mean {dotted}{close[0]}?" if close else "see `fedops simulate --cfg job`"
    return ConfigError(full_key, f"not a setting of fedops simulate ({hint})")


def _is_section(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def config_error_of(exc: BaseException) -> ConfigError:
    """Hydra's refusal of an override as one line naming the key."""
    from hydra.errors import MissingConfigException, OverrideParseException

    cause = exc.__cause__
    key = getattr(cause, "full_key", None)
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        options = ", ".join(exc.options or ())
        return ConfigError(group or option, f"no option {option!r} (options: {options})")
    if isinstance(exc, OverrideParseException):
        return ConfigError("overrides", _first_line(exc) + " (write KEY=VALUE)")
    if key and type(cause).__name__ in ("ConfigAttributeError", "ConfigKeyError"):
        return unknown_key(key)
    if key:
        return ConfigError(key, _first_line(cause))
    text = str(exc)
    if text.startswith("Ambiguous value for argument"):
        override = text.split("'")[1]
        return ConfigError(
            override.partition("=")[0],
            f"{override!r} lists values: add -m to sweep over them, or write [a,b] for a list",
        )
    return ConfigError("overrides", _first_line(exc))


def _first_line(exc: BaseException | None) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def hydra_args(argv: Sequence[str]) -> Any:
    """``argv`` parsed as Hydra parses it; None where no job of fedops' config runs
    (``--help``, ``--config-dir`` ...) or Hydra will refuse the flags itself."""
    import argparse
    import contextlib
    import io

    from hydra._internal.utils import get_args_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            args = get_args_parser().parse_args(list(argv))
    except SystemExit:
        return None
    if any(getattr(args, name, None) for name in (*NO_JOB, *OTHER_CONFIG)):
        return None
    assert isinstance(args, argparse.Namespace)
    return args


def planned_jobs(overrides: Sequence[str], multirun: bool) -> tuple[list[list[str]], set[str]]:
    """Each job's overrides (one job unless ``multirun``) and the keys a sweep varies."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as exc:
        raise config_error_of(exc) from None
    if not multirun:
        return [list(overrides)], set()
    swept = {o.get_key_element() for o in parsed if o.is_sweep_override()}
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for batch in batches for job in batch], swept


def check_run_dirs(overrides: Sequence[str]) -> None:
    """``hydra.run.dir=PATH``: a directory, or one to be made (not an existing file)."""
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") not in RUN_DIRS or "${" in value:
            continue
        path = Path(value.strip("'\"")).expanduser()
        for each in (path, *path.parents):
            if each.exists() and not each.is_dir():
                why = "is a file" if each == path else f"is inside {each}, a file"
                raise ConfigError(key.lstrip("+"), f"{value} {why}, not a directory")
