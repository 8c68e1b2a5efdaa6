"""Shared setup for the whole suite.

dp_accounting imports absl, whose logging handler binds the ``sys.stderr`` of
the moment. Imported while pytest captures output, that is pytest's capture
file, and any ``logging.config.dictConfig`` later in the session (Hydra's, when
a test runs ``fedops simulate`` in-process) closes every handler: absl's then
closes pytest's capture file, and the session dies with "lost sys.stderr".
Pointing it at the process's own stderr, which absl never closes, keeps the
suite independent of which test imports dp_accounting first.
"""

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from absl import logging as absl_logging
from procs import Procs  # tests/support, on the path (pyproject: pythonpath)

absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__


@pytest.fixture
def quiet_warnings() -> Iterator[None]:
    """Every warning off for one test (DP-SGD tests: Opacus warns on every step)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Real ``fedops`` processes for one test, with their logs; none outlives it."""
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.kill_all()
