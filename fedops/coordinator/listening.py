"""``RUN_DIR/listening.json``: where a running coordinator actually listens.

With ``--address HOST:0`` (and ``--metrics-port 0``) the kernel picks free ports at bind
time, so nothing can take the port between choosing it and binding it; operators and
scripts read the bound addresses here instead of guessing. The file names the process that
wrote it, so a reader never mistakes a previous (killed) coordinator's file for this one's.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

LISTENING_FILE = "listening.json"


@dataclass(frozen=True, slots=True)
class Listening:
    address: str  # HOST:PORT of the gRPC service
    pid: int
    run_id: str
    metrics: str | None = None  # HOST:PORT of /metrics, when served

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])


def write_listening(run_dir: Path, listening: Listening) -> None:
    """Atomically (a reader never sees half a file)."""
    body = {
        "address": listening.address,
        "pid": listening.pid,
        "run_id": listening.run_id,
        "metrics": listening.metrics,
    }
    tmp = run_dir / f".{LISTENING_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, run_dir / LISTENING_FILE)


def remove_listening(run_dir: Path) -> None:
    """On a clean stop: the file then means "a coordinator is serving this run"."""
    if read_listening(run_dir, os.getpid()) is None:
        return  # another coordinator's (or none): not ours to remove
    with contextlib.suppress(OSError):
        (run_dir / LISTENING_FILE).unlink()


def read_listening(run_dir: Path, pid: int | None = None) -> Listening | None:
    """The file's record (only if written by ``pid``, when given); None when absent."""
    try:
        body = json.loads((run_dir / LISTENING_FILE).read_text())
        record = Listening(
            address=str(body["address"]),
            pid=int(body["pid"]),
            run_id=str(body["run_id"]),
            metrics=body.get("metrics"),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # absent, or not a file this module wrote
    return record if pid is None or record.pid == pid else None
