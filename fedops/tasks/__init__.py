"""Tasks: a model plus each site's data. Built-in ones and user files share one shape.

``Task`` and ``load_task`` are loaded on first use (PEP 562), so the torch-free
parts (:mod:`fedops.tasks.builtin`) import without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from fedops.tasks.builtin import BUILTIN_TASKS

__all__ = ["BUILTIN_TASKS", "Task", "load_task"]

_LAZY = {"Task": "fedops.tasks.contract", "load_task": "fedops.tasks.loader"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fedops.tasks' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
