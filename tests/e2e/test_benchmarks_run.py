"""The benchmarks that reach into fedops' internals still run.

``vs_floor.py`` times the vectorized trainer from the inside, ``privacy.py``
times the round driver's fit phase and the DP plug-in's calls, and
``fedprox_synthetic.py`` configures the simulator field by field: each broke
silently once when the code under it moved. ``scale.py`` runs ``fedops simulate`` with
Synthetic overrides and reads its metrics.jsonl; ``vs_flower.py --model cnn`` patches the
simulator's data loading and times its run store's commits. Run at their smallest sizes, they
must finish and print their result table; their speed is not asserted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

RUNS = {
    "vs_floor.py": (["--clients", "10", "--rounds", "2"], "| fedops vectorized |"),
    "fedprox_synthetic.py": (["--rounds", "2"], "| FedProx mu=1, 90% stragglers"),
    "privacy.py": (["--quick"], "| privacy=local (Opacus DP-SGD) |"),
    "scale.py": (["--quick"], "| 200 | 200 |"),
    # The CNN mode's fedops child, plain loop and compute floor, and its goals table. Flower is
    # left out: its Ray simulation takes ~20 s even at 10 clients on 2 cores (Ray's start-up
    # alone ~11 s), not the few seconds a test here may spend; its CNN ClientApp shares the
    # LR mode's code path and is run by the benchmark itself.
    "vs_flower.py": (
        [
            *("--model", "cnn", "--clients", "4", "--rounds", "2"),
            *("--frameworks", "fedops", "loop", "--fedops-threads", "1"),
        ],
        "| fedops, torch threads 1, 2 workers | compute floor (batch 256), torch threads 1 |",
    ),
}


@pytest.mark.parametrize("script", sorted(RUNS))
def test_the_benchmark_runs_and_prints_its_table(script: str, tmp_path: Path):
    args, row = RUNS[script]
    if script == "fedprox_synthetic.py":
        args = [*args, "--figure", str(tmp_path / "figure.png")]
    if script == "scale.py":
        args = [*args, "--work", str(tmp_path / "work")]
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=480,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert row in run.stdout, run.stdout[-3000:]
