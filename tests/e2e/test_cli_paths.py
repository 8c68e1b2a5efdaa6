"""A bad output path or bad task data is one line naming what is wrong, exit 2, nothing
left behind: no traceback, no run directory, no report folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # processes: the slow lane

TASK = """
import numpy as np
import torch
def build_model():
    return torch.nn.Linear({width}, 2)
def load_data(site, num_sites):
    x = np.random.default_rng(site).normal(size=(40, 4)).astype(np.float32)
    x[3, 1] = {poison}
    y = (x[:, 0] > 0).astype(np.int64)
    return (x[:30], y[:30]), (x[30:], y[30:])
"""


def _fedops(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedops", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


CLIENT = ["client", "--task", "digits", "--site", "0", "--num-sites", "2"]
BAD_PATHS = [
    (["coordinator", "--task", "digits", "--run-dir", "a_file"], "--run-dir: a_file is a file"),
    ([*CLIENT, "--run-dir", "a_file/sub"], "--run-dir: cannot create a_file/sub: a_file is a"),
    ([*CLIENT, "--max-epsilon", "3"], "--max-epsilon 3 needs --run-dir"),
    ([*CLIENT, "--require-secagg"], "--require-secagg needs --run-dir"),
    ([*CLIENT, "--secagg-min-noise-multiplier", "1"], "this site requires (a SecAgg floor"),
    (["run", "submit", "a_file", "--root", "a_file"], "--root: a_file is a file"),
    (["audit", "export", "no_run"], "RUN_DIR: no_run does not exist"),
]


@pytest.mark.parametrize(("args", "message"), BAD_PATHS, ids=[a[0] for a, _ in BAD_PATHS])
def test_a_bad_output_path_is_named_and_nothing_is_created(args, message, tmp_path):
    (tmp_path / "a_file").write_text("task: digits\n")
    result = _fedops(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.parametrize(
    ("width", "poison", "message"),
    [
        (4, "np.nan", "load_data(site=0) train split: features hold NaN or infinity"),
        (5, "0.0", "build_model()'s model fails on its first rows (features of shape (4,))"),
    ],
    ids=["nan-features", "model-width"],
)
def test_bad_task_data_is_refused_before_the_run_directory(width, poison, message, tmp_path):
    (tmp_path / "bad_task.py").write_text(TASK.format(width=width, poison=poison))
    result = _fedops(tmp_path, "simulate", "task=bad_task.py", "simulation.num_clients=2")
    assert result.returncode == 2, result.stderr
    assert "fedops simulate: error: task: task 'bad_task.py': " in result.stderr
    assert message in result.stderr and "the run failed" not in result.stderr
    assert not (tmp_path / "runs").exists()
