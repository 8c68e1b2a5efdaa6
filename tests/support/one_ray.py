"""One Ray start at a time across the test processes: two clusters starting together on two
cores miss Ray's own start-up deadlines (the GCS port file), a flake and not a finding."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

LOCK = Path(tempfile.gettempdir()) / "fedops-tests-ray.lock"


@contextlib.contextmanager
def one_ray_at_a_time() -> Iterator[None]:
    """Held while a test runs Ray (each such test bounds its own run in time)."""
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
