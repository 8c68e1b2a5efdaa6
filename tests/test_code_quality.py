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


def test_ruff_is_clean():
    if shutil.which("ruff") is None:
        pytest.skip("ruff not installed (pip install -e '.[dev]')")
    result = _run("ruff", "check", "fedops", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_layers_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter not installed (pip install -e '.[dev]')")
    result = _run(str(lint), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_and_wire_pass_mypy_strict():
    if shutil.which("mypy") is None and not Path(sys.executable).with_name("mypy").exists():
        pytest.skip("mypy not installed (pip install -e '.[dev]')")
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
