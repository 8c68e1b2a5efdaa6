"""A user's strategy class named in the run's settings: ``strategy.name=module:Class``.

Importing it is I/O (the user's file), so it lives here at the runtime layer, not
in the pure strategy registry; the class is then registered under that very name,
so the rest of fedops (the option checks, the driver, checkpoints) treats it like a
built-in. Only the coordinator (or the simulator's parent process) needs it.
"""

from __future__ import annotations

import importlib
import os
import sys

from fedops.core.strategies import register_strategy
from fedops.runtime.rules import ConfigError


def import_strategy(spec: str, *, key: str) -> None:
    """Register the user's strategy class ``module:Class`` under that name, or refuse it by
    ``key``: the module must import and the class have the Strategy methods."""
    module, _, attr = spec.rpartition(":")
    here = os.getcwd()
    if here not in sys.path:  # the current directory, as ``python -m`` would have it
        sys.path.append(here)
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise ConfigError(key, f"cannot import {module!r} for {spec!r}: {exc}") from exc
    except AttributeError as exc:
        raise ConfigError(key, f"module {module!r} has no {attr!r}") from exc
    except Exception as exc:  # the user's module failed while importing
        raise ConfigError(key, f"importing {module!r} failed: {type(exc).__name__}: {exc}") from exc
    try:
        register_strategy(spec, cls)
    except (TypeError, ValueError) as exc:
        raise ConfigError(key, str(exc)) from exc
