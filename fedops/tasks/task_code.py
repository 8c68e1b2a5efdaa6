"""A task's code, read once into memory and hashed: the bytes that will run are the bytes
the site's ``allowed_tasks`` digest was checked against (issue 17, TOCTOU follow-up).

Import reading a package from disk a second time (after hashing, or lazily, or from a
``__pycache__``) let other code run under a reviewed digest; so this module reads every
``.py`` file once, and :mod:`fedops.tasks.task_import` serves exactly those bytes.

The digest format is unchanged, so digests a site already pinned stay valid: a lone module
or ``.py`` file is the sha256 of its bytes; a package is the sha256 over its ``.py`` files
sorted by path relative to the package's parent, each ``path NUL bytes NUL``.

What the digest cannot cover is refused before anything runs: compiled code in the package,
and, in the task's directory (a ``PYTHONPATH`` entry, the current directory), any module
named like a standard-library module or an installed distribution (it would shadow it) and
any module beside the task that the task's sources import (a lone module's ``my_task.py``:
make the task a package so its digest covers every file). Siblings are refused rather than
hashed in: a lone module's digest would otherwise depend on whatever else lies in the
current directory, and existing single-file digests would change.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import importlib.metadata
import os
import site
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from fedops.tasks.builtin import BUILTIN_TASKS, TaskError

_COMPILED = (".so", ".pyd", ".dylib", ".pyc", ".pyo")


@dataclass(frozen=True)
class Source:
    """One module's code as read for the digest; ``path`` is where it was read from (its
    ``__file__``), never read again."""

    name: str
    path: Path | None
    code: bytes
    package: bool
    search: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskCode:
    """Everything the import of a task may run: ``modules`` by dotted name, all in memory.
    ``guarded``: directories nothing else may be imported from while the task is loaded."""

    top: str
    digest: str
    modules: dict[str, Source]
    guarded: tuple[str, ...]


def read_file(spec: str, name: str) -> TaskCode:
    """A ``.py`` task file, run under ``name`` (its path is not a module name)."""
    path = Path(spec)
    if not path.is_file():
        raise TaskError(f"task file {spec!r} does not exist")
    data = path.read_bytes()
    home = path.resolve().parent
    guarded = _guarded([home])
    if guarded and _on_sys_path(home):  # else nothing beside it can be imported
        _refuse_shadows(spec, home, own=None)
    _refuse_siblings(spec, [data], guarded, own=None)
    source = Source(name, path, data, package=False)
    return TaskCode(name, hashlib.sha256(data).hexdigest(), {name: source}, guarded)


def read_module(spec: str) -> TaskCode:
    """Find ``spec``'s top-level package (or lone module) on sys.path as import would,
    without running any of it, and read and hash all of its ``.py`` files."""
    top = spec.split(".")[0]
    found = importlib.machinery.PathFinder.find_spec(top)
    if found is None or (found.origin is None and not found.submodule_search_locations):
        raise TaskError(
            f"task {spec!r} is not a built-in ({', '.join(BUILTIN_TASKS)}), a .py file, or a "
            f"module on the Python path (no {top!r} found)"
        )
    if found.submodule_search_locations:
        roots = [Path(p) for p in found.submodule_search_locations]
        for root in roots:
            _refuse_unhashed_code(spec, root)
        digest, modules = _read_package(top, roots)
        homes = [r.parent for r in roots]
    else:
        assert found.origin is not None
        origin = Path(found.origin)
        if not origin.name.endswith(".py"):
            raise TaskError(f"task {spec!r}: {origin} is not Python source the digest covers")
        data = origin.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        modules = {top: Source(top, origin, data, package=False)}
        homes = [origin.parent]
    guarded = _guarded(homes)
    for home in guarded:
        _refuse_shadows(spec, Path(home), own=top)
    _refuse_siblings(spec, [m.code for m in modules.values()], guarded, own=top)
    return TaskCode(top, digest, modules, guarded)


def _read_package(top: str, roots: list[Path]) -> tuple[str, dict[str, Source]]:
    """The digest (today's format) and the modules, from one read of each file."""
    digest = hashlib.sha256()
    modules: dict[str, Source] = {}
    files = sorted((f.relative_to(r.parent), f) for r in roots for f in r.rglob("*.py"))
    for relative, path in files:
        data = path.read_bytes()
        digest.update(str(relative).encode() + b"\x00" + data + b"\x00")
        parts = list(relative.with_suffix("").parts)
        package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if package else parts)
        search = (str(path.parent),) if package else ()
        modules.setdefault(name, Source(name, path, data, package, search))
    for name in list(modules):  # folders without __init__.py: empty packages, as namespaces
        parts = name.split(".")
        for depth in range(1, len(parts)):
            parent = ".".join(parts[:depth])
            if parent not in modules:
                dirs = tuple(str(r.parent.joinpath(*parts[:depth])) for r in roots)
                modules[parent] = Source(parent, None, b"", True, dirs)
    return digest.hexdigest(), modules


def _refuse_unhashed_code(spec: str, root: Path) -> None:
    """Compiled code in a package is not in its digest and is never served; refusing it
    up front says so, instead of an import error mid-run."""
    for path in root.rglob("*"):
        if "__pycache__" in path.parts or not path.is_file():
            continue  # bytecode caches are never read: sources are compiled from memory
        if path.name.endswith(_COMPILED):
            raise TaskError(
                f"task {spec!r}: {path} is compiled code, which the task digest (its .py "
                "sources) does not cover: remove it"
            )


def _entries(home: Path) -> dict[str, Path]:
    """Importable names in ``home`` (modules, compiled modules, folders) -> their path."""
    found: dict[str, Path] = {}
    for entry in home.iterdir():
        name = entry.name.split(".")[0]
        if entry.is_dir() and name != entry.name:
            continue  # fedops.egg-info, x.dist-info: not importable as a name
        if (entry.is_dir() or entry.suffix in (".py", *_COMPILED)) and name.isidentifier():
            found.setdefault(name, entry)
    return found


def _refuse_shadows(spec: str, home: Path, own: str | None) -> None:
    """A module in the task's directory named like a stdlib module or an installed
    distribution would be imported in its place (the directory is on sys.path), outside
    the task's digest."""
    entries = {
        name: entry
        for name, entry in _entries(home).items()
        if not entry.is_dir() or (entry / "__init__.py").is_file()
    }
    for name, entry in sorted(entries.items()):
        if name in sys.stdlib_module_names:
            raise TaskError(
                f"task {spec!r}: {entry} shadows the standard library's {name!r} module and "
                "is outside the task's digest: move the task package to its own directory"
            )
    others = set(entries) - {own}
    installed = set(importlib.metadata.packages_distributions()) if others else set()
    for name in sorted(others & installed):
        if is_the_imported(name, entries[name]):
            continue  # e.g. a checkout's fedops/, installed editable: the very package in use
        raise TaskError(
            f"task {spec!r}: {entries[name]} shadows the installed {name!r} package and is "
            "outside the task's digest: move the task package to its own directory"
        )


def is_the_imported(name: str, location: Path) -> bool:
    """Whether ``location`` (a module file or package folder) is, or lies in, the already
    imported module ``name`` (then it shadows nothing: it is the package this process
    runs, e.g. a checkout's fedops/ installed editable)."""
    module = sys.modules.get(name)
    homes = [*getattr(module, "__path__", ()), getattr(module, "__file__", None) or ""]
    at = location.resolve()
    return any(at.is_relative_to(Path(home).resolve()) for home in homes if home)


def _refuse_siblings(
    spec: str, codes: list[bytes], guarded: tuple[str, ...], own: str | None
) -> None:
    """The task's sources import a module beside the task: code its digest does not cover
    (at run time the import is refused too; this says so before anything runs)."""
    imported = set().union(*(_imported_tops(code) for code in codes)) - {own}
    for home in guarded:
        entries = _entries(Path(home))
        for name in sorted(imported & set(entries)):
            if is_the_imported(name, entries[name]):
                continue  # the package this process already runs (a checkout's fedops/)
            raise TaskError(
                f"task {spec!r} imports {name!r}, which lies beside it ({entries[name]}) and "
                "is outside its digest: make the task a package (a folder with __init__.py "
                "holding every module it imports) so the digest covers all of its code"
            )


def _imported_tops(code: bytes) -> set[str]:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return set()  # the import itself reports it
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _installed_dirs() -> set[str]:
    """site-packages and the stdlib: what lies there is the environment's own code, which
    the site installed (as it installed fedops), not the task's."""
    paths = [*site.getsitepackages(), site.getusersitepackages()]
    paths += [sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    return {os.path.realpath(p) for p in paths}


def _guarded(homes: list[Path]) -> tuple[str, ...]:
    installed = _installed_dirs()
    return tuple(
        sorted({h for h in (os.path.realpath(home) for home in homes) if h not in installed})
    )


def _on_sys_path(home: Path) -> bool:
    wanted = os.path.realpath(home)
    return any(
        isinstance(entry, str) and os.path.realpath(entry or os.getcwd()) == wanted
        for entry in sys.path
    )
