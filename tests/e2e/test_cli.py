"""Bad flags fail fast, before anything starts, with the flag named."""

from __future__ import annotations

import subprocess
import sys

import pytest

BAD = [
    (["coordinator", "--rounds", "0"], "--rounds: must be >= 1"),
    (["coordinator", "--min-clients", "0"], "--min-clients"),
    (["coordinator", "--address", "0.0.0.0:8765"], "--address: refusing to serve plaintext"),
    (["coordinator", "--address", "nonsense"], "--address: expected HOST:PORT"),
    (["coordinator", "--round-timeout", "-1"], "--round-timeout"),
    (["coordinator", "--strategy", "fedsgd"], "--strategy: invalid choice"),
    (["coordinator", "--task", "digits", "--alpha", "0"], "--alpha: must be > 0"),
    (
        ["client", "--task", "digits", "--site", "3", "--num-sites", "3"],
        "--site: must be in [0, 3)",
    ),
    (["client", "--task", "digits", "--site", "0", "--num-sites", "1", "--lr", "0"], "--lr"),
    (
        ["client", "--task", "nope.py", "--site", "0", "--num-sites", "1"],
        "--task: task file 'nope.py' does not exist",
    ),
    (
        ["client", "--task", "no_such_module_xyz", "--site", "0", "--num-sites", "1"],
        "is not a built-in",
    ),
    (["simulate", "--num-sites", "0"], "--num-sites: must be >= 1"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_flag_is_named(args: list[str], message: str):
    result = subprocess.run(
        [sys.executable, "-m", "fedops", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr, result.stderr


def test_simulate_default_runs_and_writes_a_run_directory(tmp_path):
    run_dir = tmp_path / "sim"
    result = subprocess.run(
        [sys.executable, "-m", "fedops", "simulate", "--rounds", "3", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    for key in ("round", "num_clients", "train_loss", "eval_loss", "eval_accuracy", "duration_s"):
        assert key in lines[0]
    assert (run_dir / "summary.json").exists()
    assert (run_dir / "state.sqlite").exists()
