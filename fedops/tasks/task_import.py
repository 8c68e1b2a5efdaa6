"""Import a task from the bytes its digest was taken of, for the life of the process.

Two meta-path finders, installed once:

* :class:`_TaskFinder` (first on ``sys.meta_path``) serves every module of a registered
  task package by name, compiled from the in-memory sources of :class:`TaskCode` (never
  from disk, never from or to bytecode), so a file swapped after the digest check, a
  lazily imported submodule or a planted ``__pycache__/*.pyc`` never runs. A submodule
  that was not among the hashed sources cannot be imported at all.
* :class:`_GuardFinder` (just before :class:`~importlib.machinery.PathFinder`, which it
  asks) refuses a module that the path finder would load from a task's directory: a
  lone module's sibling, or a file put there after the check, is outside the digest.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

from fedops.tasks.builtin import BUILTIN_TASKS, TaskError
from fedops.tasks.task_code import Source, TaskCode, is_the_imported

_LOCK = threading.Lock()
_SERVED: dict[str, TaskCode] = {}  # top-level name -> the code served for it
_GUARDED: set[str] = set()  # real paths of task directories


class _SourceLoader(importlib.abc.InspectLoader):
    """Runs one module from the bytes that were hashed; ``get_source`` lets tracebacks
    and ``inspect`` show them."""

    def __init__(self, source: Source, digest: str) -> None:
        self.source = source
        self.digest = digest

    def is_package(self, fullname: str) -> bool:
        return self.source.package

    def get_source(self, fullname: str) -> str:
        return importlib.util.decode_source(self.source.code)

    def get_code(self, fullname: str) -> CodeType:
        where = str(self.source.path) if self.source.path else f"<task {fullname}>"
        return compile(self.source.code, where, "exec", dont_inherit=True)

    def exec_module(self, module: ModuleType) -> None:
        exec(self.get_code(module.__name__), module.__dict__)

    def get_resource_reader(self, fullname: str) -> Any:
        """Data files (``importlib.resources``) are read from the package's folder, as a
        file loader would; they are not code, and not in the digest."""
        if not self.source.package or self.source.path is None:
            return None
        from importlib.readers import FileReader

        return FileReader(self)  # type: ignore[arg-type]

    @property
    def path(self) -> str:
        """The module's file, as :class:`importlib.readers.FileReader` asks of a loader."""
        return str(self.source.path)


class _TaskFinder(importlib.abc.MetaPathFinder):
    """Serves registered task packages by name, before any other finder can."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        code = _SERVED.get(fullname.partition(".")[0])
        if code is None:
            return None
        source = code.modules.get(fullname)
        if source is None:
            raise ModuleNotFoundError(
                f"{fullname!r} is not among the sources hashed for task {code.top!r} "
                f"(digest {code.digest}), so it is not imported",
                name=fullname,
            )
        loader = _SourceLoader(source, code.digest)
        spec = importlib.machinery.ModuleSpec(
            fullname, loader, origin=str(source.path) if source.path else None
        )
        spec.has_location = source.path is not None
        if source.package:
            spec.submodule_search_locations = list(source.search)
        return spec


class _GuardFinder(importlib.abc.MetaPathFinder):
    """Asks the path finder and refuses what it would load from a task's directory; its
    answer is returned as is, so the path finder is not asked twice (and what it found
    cannot change between the check and the load)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or not _GUARDED:
            return spec
        top = fullname.partition(".")[0]
        for location in (spec.origin, *(spec.submodule_search_locations or ())):
            home = _task_home(location, top)
            if home is not None and not is_the_imported(top, Path(location)):
                raise ImportError(
                    f"{fullname!r} would be imported from {location}, beside a task loaded "
                    f"from {home} and outside its digest: move the task to its own directory "
                    "or make it a package holding this module",
                    name=fullname,
                )
        return spec


def _task_home(location: str | None, top: str) -> str | None:
    """The guarded directory ``location`` (a module file or package folder of ``top``)
    lies directly in, if any."""
    if not location or not os.path.isabs(location):
        return None
    parent = os.path.dirname(location)
    while parent and os.path.basename(location).split(".")[0] != top:
        location, parent = parent, os.path.dirname(parent)  # up to top's own entry
        if location == parent:
            return None
    real = os.path.realpath(parent)  # not cached: a folder swapped for a link is seen
    return real if real in _GUARDED else None


_FINDER = _TaskFinder()
_GUARD = _GuardFinder()


def _install() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    if _GUARD not in sys.meta_path:
        try:
            at = sys.meta_path.index(importlib.machinery.PathFinder)  # type: ignore[arg-type]
        except ValueError:
            at = len(sys.meta_path)
        sys.meta_path.insert(at, _GUARD)


def serve(code: TaskCode, *, fresh: bool = False) -> None:
    """Register ``code`` to be imported from memory. ``fresh`` (a task file, run anew each
    time it is loaded): forget a previous run of it. A package already imported from other
    code is refused: the module objects would not be the code just checked."""
    with _LOCK:
        loaded = [n for n in sys.modules if n == code.top or n.startswith(code.top + ".")]
        for name in loaded:
            module = sys.modules[name]
            if fresh or module is None:
                del sys.modules[name]
                continue
            _refuse_stale(code, name, module)
        _SERVED[code.top] = code
        _GUARDED.update(code.guarded)
        _install()


def _refuse_stale(code: TaskCode, name: str, module: ModuleType) -> None:
    loader = getattr(getattr(module, "__spec__", None), "loader", None)
    if not isinstance(loader, _SourceLoader):
        where = getattr(module, "__file__", None) or "elsewhere"
        raise TaskError(
            f"task {code.top!r}: {name!r} was imported ({where}) before the task's digest was "
            "checked, so its code is not what was hashed: a task must be its own package"
        )
    if loader.digest != code.digest:
        raise TaskError(
            f"task {code.top!r} was already imported from other code (digest "
            f"{loader.digest}, now {code.digest}): restart the process to run the new code"
        )


def import_served(
    spec: str, code: TaskCode, *, shown: str | None = None, fresh: bool = False
) -> ModuleType:
    """Import ``spec`` (a module of ``code``) from memory; any failure of its code is a
    :class:`TaskError` naming the task (``shown``) and the exception, never a traceback
    (``fedops client`` prints it as an error). ``fresh``: a task file, run anew."""
    serve(code, fresh=fresh)
    label = f"task file {shown!r}" if fresh else f"task {spec!r}"
    try:
        return importlib.import_module(spec)
    except ImportError as exc:
        if fresh:
            raise TaskError(f"{label} failed to import: {exc}") from exc
        raise TaskError(
            f"{label} is not a built-in ({', '.join(BUILTIN_TASKS)}), a .py file, or an "
            f"importable module: {exc}"
        ) from exc
    except Exception as exc:
        raise TaskError(f"{label} failed to import: {type(exc).__name__}: {exc}") from exc
