"""House rules the suite enforces: ruff clean, layering contracts kept, no pickle."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def _tool(name: str) -> str:
    """The dev tool installed beside this interpreter (or on PATH); missing fails the test.

    They come with ``pip install -e ".[dev]"``, which the README's setup runs: a missing
    one means the house rules went unchecked, which must not pass as a skip.
    """
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed beside {sys.executable}: pip install -e '.[dev]'")
    return found


def test_ruff_is_clean_and_formatted():
    result = _run(_tool("ruff"), "check", "fedops", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr
    result = _run(_tool("ruff"), "format", "--check", "fedops", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_layers_hold():
    result = _run(_tool("lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_and_wire_pass_mypy_strict():
    _tool("mypy")
    result = _run(sys.executable, "-m", "mypy")  # files and strictness: pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_pickle_and_no_torch_load_in_the_package():
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in (ROOT / "fedops").rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bimport pickle\b|pickle\.loads?\(|torch\.load\(", line)
    ]
    assert not offenders, offenders
