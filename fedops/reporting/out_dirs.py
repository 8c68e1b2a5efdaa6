"""A directory a command will create or write into, checked before anything is written.

Every command that takes such a path (``fedops coordinator --run-dir``, ``fedops client
--run-dir``, ``fedops serve --root``, ``fedops run submit --root``, ``fedops report
--out``, ``fedops audit export --out``) asks :func:`out_dir_problem` first, so a path
that cannot be one (an existing file, a folder under a file, a place nobody may create a
folder in, such as ``/proc``) is refused in one line naming the flag and why, instead of a
traceback from deep in the run, and nothing is left behind. It lives here, the lowest
layer those commands share (the CLI, and the report and audit commands themselves).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["out_dir_problem"]


def out_dir_problem(flag: str, path: str | os.PathLike[str]) -> str | None:
    """None when ``path`` is a directory this process can write in, or one it can create
    (the nearest existing folder above it takes a new folder); else one line, ``flag``
    first, saying what is wrong. Creates nothing that outlives the call: writability is
    probed with a temporary folder, removed at once (``os.access`` says yes to root where
    the kernel refuses, e.g. under ``/proc`` or on a read-only mount)."""
    path = Path(path)
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if existing == path and not path.is_dir():
        kind = "a file" if path.is_file() else "not a directory"
        return f"{flag}: {path} is {kind}; give a directory (it is created if missing)"
    if not existing.is_dir():
        return f"{flag}: cannot create {path}: {existing} is a file, not a directory"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".fedops-probe-", dir=existing))
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        if existing == path:
            return f"{flag}: cannot write in {path} ({why})"
        return f"{flag}: cannot create {path}: {existing} does not take new folders ({why})"
    return None
