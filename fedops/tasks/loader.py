"""Find a task by name: a built-in, a ``.py`` file, or an importable module."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from fedops.tasks import digits
from fedops.tasks.base import Task

#: built-in task names -> the options of their factory that differ from defaults
BUILTIN_TASKS: dict[str, dict[str, Any]] = {
    "digits": {"model": "logreg"},
    "digits-mlp": {"model": "mlp"},
}

REQUIRED = ("build_model", "load_data")


class TaskError(ValueError):
    """A task that cannot be loaded; the message says where and why."""


def load_task(spec: str, **options: Any) -> Task:
    """Load a task.

    Args:
        spec: ``digits`` / ``digits-mlp`` (built-in), ``path/to/task.py``, or
            ``package.module``.
        options: built-in tasks only: ``partition`` (``iid``/``dirichlet``),
            ``alpha`` and ``seed``.
    """
    if spec in BUILTIN_TASKS:
        task = digits.make_task(**{**BUILTIN_TASKS[spec], **options})
        return Task(**{**_fields(task), "name": spec})
    module = _import(spec)
    missing = [name for name in REQUIRED if not callable(getattr(module, name, None))]
    if missing:
        raise TaskError(
            f"task {spec!r} does not define {', '.join(f'{m}()' for m in missing)}; a task "
            "must define build_model() -> torch.nn.Module and "
            "load_data(site, num_sites) -> (train, test)"
        )
    source = inspect.getsource(module).encode()
    return Task(
        name=spec,
        build_model=module.build_model,
        load_data=module.load_data,
        train=getattr(module, "train", None),
        evaluate=getattr(module, "evaluate", None),
        load_server_data=getattr(module, "load_server_data", None),
        sensitive_groups=getattr(module, "sensitive_groups", None),
        digest=hashlib.sha256(source).hexdigest(),
    )


def _fields(task: Task) -> dict[str, Any]:
    return {name: getattr(task, name) for name in Task.__dataclass_fields__}


def _import(spec: str) -> ModuleType:
    path = Path(spec)
    if spec.endswith(".py") or path.exists():
        if not path.is_file():
            raise TaskError(f"task file {spec!r} does not exist")
        name = f"fedops_user_task_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise TaskError(f"cannot import task file {spec!r}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module  # dataclasses and pickling-free torch code need this
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:
            raise TaskError(f"task file {spec!r} failed to import: {exc!r}") from exc
        return module
    try:
        return importlib.import_module(spec)
    except ImportError as exc:
        raise TaskError(
            f"task {spec!r} is not a built-in ({', '.join(BUILTIN_TASKS)}), "
            f"a .py file, or an importable module: {exc}"
        ) from exc
