"""``fedops simulate``'s start: every job checked before the first runs, Hydra's refusals
as fedops' one-line errors (exit 2, the key named), the Python API raising ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedops.config.hydra_app import compose_settings, simulate, simulate_main
from fedops.runtime.settings import ConfigError


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_sweep_with_one_bad_value_runs_no_job(workdir, capsys):
    sweep = workdir / "sweep"
    assert simulate_main(["-m", "rounds=1,0,2", f"hydra.sweep.dir={sweep}"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == "fedops simulate: error: rounds: must be >= 1, got 0"
    assert not sweep.exists()  # job 0 never ran
    assert "sweep of" not in captured.out


def test_a_sweep_table_names_what_a_job_varied_even_when_alone(workdir, capsys):
    """Job 1 fails with the task's data (5000 clients): job 0's row still says what it set."""
    sweep = workdir / "sweep"
    argv = ["-m", "simulation.num_clients=3,5000", "rounds=1", f"hydra.sweep.dir={sweep}"]
    assert simulate_main(argv) == 2
    table = (sweep / "sweep.txt").read_text().splitlines()
    assert table[1].split()[:3] == ["0", "simulation.num_clients=3", "completed"]


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("rounds=abc", "rounds: Value 'abc' of type 'str' could not be converted to Integer"),
        ("strategy.muu=1", "strategy.muu: not a setting of fedops simulate"),
        ("strategy=fedsgd", "strategy: no option 'fedsgd' (options: fedadagrad"),
        ("rounds=1,2", "rounds: 'rounds=1,2' lists values: add -m to sweep"),
    ],
)
def test_hydras_refusals_exit_2_in_one_line_naming_the_key(workdir, capsys, override, says):
    assert simulate_main([override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fedops simulate: error: {says}"), err
    assert len(err.strip().splitlines()) == 1
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("override", ["rounds=abc", "strategy.nam=x", "strategy=fedsgd"])
def test_the_python_api_raises_config_error_naming_the_key(tmp_path, override):
    with pytest.raises(ConfigError) as info:
        simulate(override, run_dir=tmp_path / "run")
    assert info.value.key == override.partition("=")[0]
    with pytest.raises(ConfigError):
        compose_settings(override)


def test_a_run_directory_that_is_a_file_is_refused_by_key(workdir, capsys):
    (workdir / "my_task.py").write_text("")
    assert simulate_main(["hydra.run.dir=my_task.py"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "fedops simulate: error: hydra.run.dir: my_task.py is a file, not a directory"
    )
    assert simulate_main(["hydra.run.dir=my_task.py/run"]) == 2
    assert "hydra.run.dir: my_task.py/run is inside my_task.py, a file" in capsys.readouterr().err
