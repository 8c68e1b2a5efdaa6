"""Which logs ``fedops audit export`` reads: the run directory's own, and its sites'.

A run directory is one holding the coordinator's ``audit.jsonl``; anything else is
refused before a file is read or written (:class:`NotARunDirectory`), so pointing the
export at a wrong path neither creates that path nor reports a verdict on nothing.

Site logs are the ones given (``--site-log``) and those in the run directory's own layout,
at most two folders down (:data:`SITE_LOG_PATTERNS`: ``RUN_DIR/site0/audit.jsonl``,
``RUN_DIR/sites/a/audit.jsonl``): a bounded look, so a directory over a large tree
(``/tmp``, a home folder) cannot keep the export walking and verifying every log in it.
The model files are checked against the coordinator's log only when that log verifies
(:func:`model_files_against`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from fedops.reporting.audit.logs import LOG_NAME

__all__ = [
    "SITE_LOG_PATTERNS",
    "NotARunDirectory",
    "coordinator_log",
    "model_files_against",
    "site_log_paths",
]

#: where a run directory's site logs are looked for (relative to it); others: --site-log
SITE_LOG_PATTERNS = (f"*/{LOG_NAME}", f"*/*/{LOG_NAME}")
#: a run's records beside its log: a directory holding them but no log lost its log
_RUN_RECORDS = ("state.sqlite", "summary.json", "metrics.jsonl", "checkpoints")


#: why the model files were not checked against a coordinator log that does not verify
UNCHECKED = (
    "not checked: the coordinator's log does not verify, so the models it committed are not "
    "known (fix or restore the log, then export again)"
)
Check = TypeVar("Check")


class NotARunDirectory(ValueError):
    """``RUN_DIR`` holds no coordinator log; ``lost``: it holds a run's other records, so
    the log is missing (a failed audit), not a wrong path (a usage error)."""

    def __init__(self, message: str, *, lost: bool = False) -> None:
        super().__init__(message)
        self.lost = lost


def coordinator_log(run_dir: Path) -> Path:
    """``run_dir``'s ``audit.jsonl``, or :class:`NotARunDirectory` saying what is there."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise NotARunDirectory(f"RUN_DIR: {run_dir} does not exist")
    if not run_dir.is_dir():
        raise NotARunDirectory(f"RUN_DIR: {run_dir} is a file, not a run directory")
    path = run_dir / LOG_NAME
    if path.is_file():
        return path
    records = [name for name in _RUN_RECORDS if (run_dir / name).exists()]
    if records:
        raise NotARunDirectory(
            f"{run_dir} holds a run ({', '.join(records)}) but no {LOG_NAME}: the "
            "coordinator's signed log is missing",
            lost=True,
        )
    raise NotARunDirectory(
        f"RUN_DIR: {run_dir} is not a run directory: it holds no {LOG_NAME} (the "
        f"coordinator's signed log; site logs are looked for at "
        f"{' and '.join(f'RUN_DIR/{p}' for p in SITE_LOG_PATTERNS)}, or given with --site-log)"
    )


def site_log_paths(run_dir: Path, coordinator: Path, given: Sequence[Path]) -> list[Path]:
    """The given site logs (a folder: its ``audit.jsonl``), then the run directory's own
    (:data:`SITE_LOG_PATTERNS`, in path order), each once, the coordinator's aside."""
    found = [p / LOG_NAME if p.is_dir() else p for p in map(Path, given)]
    found += sorted(
        p for pattern in SITE_LOG_PATTERNS for p in Path(run_dir).glob(pattern) if p.is_file()
    )
    seen, out = {coordinator.resolve()}, []
    for p in found:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            out.append(p)
    return out


def model_files_against(
    run_dir: Path,
    log_ok: bool,
    entries: list[dict[str, Any]],
    check: Callable[[Path, list[dict[str, Any]]], Check] | None,
) -> tuple[Check | None, str]:
    """``(the model files' check, why it was not made)``. Not against a coordinator log
    that fails verification: only its prefix up to the first bad entry is read, whose last
    commitment is an early round's, so every honest model file would read as the wrong
    model. The failed log is the finding; the files are said to be unchecked, with why."""
    if check is None:
        return None, ""
    if not log_ok:
        return None, UNCHECKED
    return check(run_dir, entries), ""
