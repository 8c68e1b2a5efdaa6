"""Find a task by name: a built-in, a ``.py`` file, or an importable module.

A task's digest is the sha256 of its code's bytes, taken *before* anything is
imported (:func:`source_digest`): a ``.py`` file's bytes, a module's file, or
for a module inside a package every ``.py`` file of its top-level package
(relative path and bytes, in order). A site that allows only some digests
(``allowed_tasks``) is checked against it before the first line of the task
runs, and a ``.py`` file is executed from the very bytes that were hashed.

What the digest does not cover must not run either (red team, issue 17): a
package holding compiled code (``.so``/``.pyd`` extensions, which import prefers
to ``.py``; a ``.pyc`` without its source) is refused; bytecode caches are
ignored (the package is compiled from its hashed sources into a fresh
``sys.pycache_prefix``), so an unchecked ``__pycache__/*.pyc`` never runs; and a
module beside the package that shadows a standard-library module (a
``statistics.py`` next to it, found before the stdlib) is refused.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from fedops.tasks import digits
from fedops.tasks.builtin import BUILTIN_TASKS
from fedops.tasks.contract import Task, TaskError
from fedops.tasks.task_checks import checked_data, checked_model

REQUIRED = ("build_model", "load_data")


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
    source, digest = _source(spec)
    if allowed and digest not in allowed:
        shown = digest or "(a built-in task, no source digest)"
        raise TaskNotAllowed(
            f"task {spec!r} has digest {shown}, which this site's policy does not allow "
            f"(allowed_tasks: {', '.join(allowed)}); none of its code was run"
        )
    if spec in BUILTIN_TASKS:
        task = digits.make_task(**{**BUILTIN_TASKS[spec], **options})
        return Task(**{**_fields(task), "name": spec})
    module = _import(spec, source)
    missing = [name for name in REQUIRED if not callable(getattr(module, name, None))]
    if missing:
        raise TaskError(
            f"task {spec!r} does not define {', '.join(f'{m}()' for m in missing)}; a task "
            "must define build_model() -> torch.nn.Module and "
            "load_data(site, num_sites) -> (train, test)"
        )
    build_model = checked_model(module.build_model, spec)
    return Task(
        name=spec,
        build_model=build_model,
        load_data=checked_data(module.load_data, build_model, spec),
        train=getattr(module, "train", None),
        evaluate=getattr(module, "evaluate", None),
        load_server_data=getattr(module, "load_server_data", None),
        sensitive_groups=getattr(module, "sensitive_groups", None),
        digest=digest,
    )


def import_checked(spec: str, *, allowed: Sequence[str] = ()) -> tuple[ModuleType, str]:
    """``(module, digest)`` of an importable module (a Flower app's), by the rules a task
    module is imported by: its digest checked against ``allowed`` before any of its code
    runs, compiled from the hashed sources (no stale bytecode)."""
    digest = _module_digest(spec)
    if allowed and digest not in allowed:
        raise TaskNotAllowed(
            f"{spec!r} has digest {digest}, which this site's policy does not allow "
            f"(allowed_tasks: {', '.join(allowed)}); none of its code was run"
        )
    return _import(spec, None), digest


def _fields(task: Task) -> dict[str, Any]:
    return {name: getattr(task, name) for name in Task.__dataclass_fields__}


def source_digest(spec: str) -> str:
    """The sha256 of a task's code, read without importing it ("" for a built-in)."""
    return _source(spec)[1]


def _is_file(spec: str) -> bool:
    return spec.endswith(".py") or Path(spec).exists()


def _source(spec: str) -> tuple[bytes | None, str]:
    """``(the .py file's bytes, or None, digest)``; nothing is imported or executed."""
    if spec in BUILTIN_TASKS:
        return None, ""
    if _is_file(spec):
        path = Path(spec)
        if not path.is_file():
            raise TaskError(f"task file {spec!r} does not exist")
        data = path.read_bytes()
        return data, hashlib.sha256(data).hexdigest()
    return None, _module_digest(spec)


def _module_digest(spec: str) -> str:
    """Find ``spec`` on sys.path the way import would, without running any of it, and hash
    its top-level package's every ``.py`` file (or the lone module's file)."""
    top = spec.split(".")[0]
    found = importlib.machinery.PathFinder.find_spec(top)
    if found is None or (found.origin is None and not found.submodule_search_locations):
        raise TaskError(
            f"task {spec!r} is not a built-in ({', '.join(BUILTIN_TASKS)}), a .py file, or a "
            f"module on the Python path (no {top!r} found)"
        )
    digest = hashlib.sha256()
    if found.submodule_search_locations:
        roots = [Path(p) for p in found.submodule_search_locations]
        for root in roots:
            _refuse_unhashed_code(spec, root)
        files = sorted((f.relative_to(r.parent), f) for r in roots for f in r.rglob("*.py"))
        for relative, path in files:
            digest.update(str(relative).encode() + b"\x00" + path.read_bytes() + b"\x00")
        homes = {r.parent for r in roots}
    else:
        assert found.origin is not None
        digest.update(Path(found.origin).read_bytes())
        homes = {Path(found.origin).parent}
    for home in homes:
        _refuse_stdlib_shadows(spec, home)
    return digest.hexdigest()


_COMPILED = (".so", ".pyd", ".dylib", ".pyc", ".pyo")


def _refuse_unhashed_code(spec: str, root: Path) -> None:
    """Compiled code in a package is not in its digest, yet import would run it."""
    for path in root.rglob("*"):
        if "__pycache__" in path.parts or not path.is_file():
            continue  # caches are ignored at import (a fresh pycache_prefix)
        if path.name.endswith(_COMPILED):
            raise TaskError(
                f"task {spec!r}: {path} is compiled code, which the task digest (its .py "
                "sources) does not cover and import would run: remove it"
            )


def _refuse_stdlib_shadows(spec: str, home: Path) -> None:
    """A module beside the package named like a stdlib module would be imported instead
    of it (the package's directory comes first on sys.path), outside the digest."""
    for entry in home.iterdir():
        name = entry.name.split(".")[0]
        code = entry.suffix in (".py", *_COMPILED) or (entry / "__init__.py").is_file()
        if code and name in sys.stdlib_module_names:
            raise TaskError(
                f"task {spec!r}: {entry} shadows the standard library's {name!r} module and "
                "is outside the task's digest: move the task package to its own directory"
            )


def _import(spec: str, source: bytes | None) -> ModuleType:
    if source is not None:  # a .py file: run the very bytes that were hashed
        path = Path(spec)
        name = f"fedops_user_task_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
        mod_spec = importlib.util.spec_from_loader(name, loader=None, origin=str(path))
        if mod_spec is None:
            raise TaskError(f"cannot import task file {spec!r}")
        module = importlib.util.module_from_spec(mod_spec)
        module.__file__ = str(path)
        sys.modules[name] = module  # dataclasses and pickling-free torch code need this
        try:
            exec(compile(source, str(path), "exec"), module.__dict__)
        except Exception as exc:
            raise TaskError(f"task file {spec!r} failed to import: {exc!r}") from exc
        return module
    previous = sys.pycache_prefix
    try:
        # compile from the hashed sources: no __pycache__ beside them is read (or written)
        with tempfile.TemporaryDirectory(prefix="fedops-task-") as cache:
            sys.pycache_prefix = cache
            return importlib.import_module(spec)
    except ImportError as exc:
        raise TaskError(
            f"task {spec!r} is not a built-in ({', '.join(BUILTIN_TASKS)}), "
            f"a .py file, or an importable module: {exc}"
        ) from exc
    finally:
        sys.pycache_prefix = previous
