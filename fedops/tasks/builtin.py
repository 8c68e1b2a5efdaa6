"""The built-in tasks' names and errors, importable without torch (the CLI's help and
its error handling need them before any model exists)."""

from __future__ import annotations

from typing import Any

#: built-in task names -> the options of their factory that differ from defaults
BUILTIN_TASKS: dict[str, dict[str, Any]] = {
    "digits": {"model": "logreg"},
    "digits-mlp": {"model": "mlp"},
}


class TaskError(ValueError):
    """A task that cannot be loaded or broke its contract; the message says where and why."""
