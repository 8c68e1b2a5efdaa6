"""A resume with another task or model is refused before any round (newcomer hunt,
2026-12-07: ``fedops simulate task=my_task.py`` into a digits run directory failed
inside round 3 with ``KeyError: 'weight'``; the README promises that a state not
fitting the model is refused before any round)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedops.config.hydra_app import simulate_main
from fedops.runtime.store import RunStore


def _simulate(run_dir: Path, *extra: str) -> int:
    argv = ["simulation.num_clients=4", "seed=1", *extra, f"hydra.run.dir={run_dir}"]
    return simulate_main(argv)


def test_a_resume_with_another_model_is_refused_naming_why(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    assert _simulate(run_dir, "rounds=2") == 0
    capsys.readouterr()
    code = _simulate(run_dir, "rounds=4", "model=mlp")
    err = capsys.readouterr().err
    assert code != 0, err
    assert "is not the one this run's task builds" in err
    assert "start a new run directory" in err and "Traceback" not in err
    store = RunStore(run_dir)
    try:
        assert store.last_round() == 2  # nothing ran
    finally:
        store.close()


@pytest.mark.parametrize("extra", [(), ("strategy.server_lr=0.5",)])
def test_a_resume_with_the_same_model_goes_on(tmp_path: Path, extra: tuple[str, ...]):
    run_dir = tmp_path / "run"
    assert _simulate(run_dir, "rounds=1") == 0
    assert _simulate(run_dir, "rounds=2", *extra) == 0
    store = RunStore(run_dir)
    try:
        assert store.last_round() == 2
    finally:
        store.close()
