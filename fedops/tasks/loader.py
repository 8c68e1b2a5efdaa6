"""Find a task by name: a built-in, a ``.py`` file, or an importable module.

A task's digest is the sha256 of its code's bytes (:func:`source_digest`): a ``.py``
file's bytes, a lone module's file, or for a module inside a package every ``.py`` file of
its top-level package (relative path and bytes, in order). A site that allows only some
digests (``allowed_tasks``) checks it before the first line of the task runs.

The digest pins the code that runs (issue 17 and its TOCTOU follow-up): every source file
is read once into memory (:mod:`fedops.tasks.task_code`), hashed, and the task is imported
from those very bytes for the life of the process (:mod:`fedops.tasks.task_import`), the
package and every submodule, lazily imported ones too; nothing is read again from disk,
no bytecode is read or written, a submodule that was not hashed cannot be imported, and
nothing beside the task in its directory is imported (a lone module's sibling, a module
shadowing the stdlib or an installed package: refused before anything runs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from fedops.tasks import digits
from fedops.tasks.builtin import BUILTIN_TASKS
from fedops.tasks.contract import Task, TaskError
from fedops.tasks.task_checks import (
    checked_data,
    checked_metrics,
    checked_model,
    checked_server_data,
)
from fedops.tasks.task_code import TaskCode, read_file, read_module
from fedops.tasks.task_import import import_served

REQUIRED = ("build_model", "load_data")
#: optional functions whose results fedops checks (:mod:`fedops.tasks.task_checks`)
OPTIONAL = ("train", "evaluate", "load_server_data")


class TaskNotAllowed(TaskError):
    """The task's digest is not one the site allows; nothing of it was run."""


def load_task(spec: str, *, allowed: Sequence[str] = (), **options: Any) -> Task:
    """Load a task.

    Args:
        spec: ``digits`` / ``digits-mlp`` (built-in), ``path/to/task.py``, or
            ``package.module``.
        allowed: sha256 digests the site agreed to run (empty: any); checked
            before the task's code is imported.
        options: built-in tasks only: ``partition`` (``iid``/``dirichlet``),
            ``alpha`` and ``seed``.
    """
    code = _source(spec)
    digest = code.digest if code is not None else ""
    if allowed and digest not in allowed:
        shown = digest or "(a built-in task, no source digest)"
        raise TaskNotAllowed(
            f"task {spec!r} has digest {shown}, which this site's policy does not allow "
            f"(allowed_tasks: {', '.join(allowed)}); none of its code was run"
        )
    if code is None:
        task = digits.make_task(**{**BUILTIN_TASKS[spec], **options})
        return Task(**{**_fields(task), "name": spec})
    module = _import(spec, code)
    missing = [name for name in REQUIRED if not callable(getattr(module, name, None))]
    if missing:
        raise TaskError(
            f"task {spec!r} does not define {', '.join(f'{m}()' for m in missing)}; a task "
            "must define build_model() -> torch.nn.Module and "
            "load_data(site, num_sites) -> (train, test)"
        )
    build_model = checked_model(module.build_model, spec)
    train, evaluate, server = (_optional(module, n) for n in OPTIONAL)
    return Task(
        name=spec,
        build_model=build_model,
        load_data=checked_data(module.load_data, build_model, spec, own_train=train is not None),
        train=checked_metrics(train, spec) if callable(train) else train,
        evaluate=checked_metrics(evaluate, spec) if callable(evaluate) else evaluate,
        load_server_data=checked_server_data(server, spec) if callable(server) else server,
        sensitive_groups=getattr(module, "sensitive_groups", None),
        digest=digest,
    )


def _optional(module: ModuleType, name: str) -> Any:
    """The task's optional function ``name`` (None when it defines none)."""
    return getattr(module, name, None)


def import_checked(spec: str, *, allowed: Sequence[str] = ()) -> tuple[ModuleType, str]:
    """``(module, digest)`` of an importable module (a Flower app's), by the rules a task
    module is imported by: its digest checked against ``allowed`` before any of its code
    runs, and imported from the very bytes that were hashed."""
    code = read_module(spec)
    if allowed and code.digest not in allowed:
        raise TaskNotAllowed(
            f"{spec!r} has digest {code.digest}, which this site's policy does not allow "
            f"(allowed_tasks: {', '.join(allowed)}); none of its code was run"
        )
    return import_served(spec, code), code.digest


def _fields(task: Task) -> dict[str, Any]:
    return {name: getattr(task, name) for name in Task.__dataclass_fields__}


def source_digest(spec: str) -> str:
    """The sha256 of a task's code, read without importing it ("" for a built-in)."""
    code = _source(spec)
    return code.digest if code is not None else ""


def _module_digest(spec: str) -> str:
    """The digest of an importable module's code (its top-level package's), unimported."""
    return read_module(spec).digest


def _is_file(spec: str) -> bool:
    return spec.endswith(".py") or Path(spec).exists()


def _source(spec: str) -> TaskCode | None:
    """The task's code, read once and hashed; nothing is imported or executed."""
    if spec in BUILTIN_TASKS:
        return None
    if _is_file(spec):
        where = str(Path(spec).resolve()).encode()
        return read_file(spec, f"fedops_user_task_{hashlib.sha256(where).hexdigest()[:12]}")
    return read_module(spec)


def _import(spec: str, code: TaskCode) -> ModuleType:
    if _is_file(spec):  # a .py file runs under its own module name, anew each load
        return import_served(code.top, code, shown=spec, fresh=True)
    return import_served(spec, code)
