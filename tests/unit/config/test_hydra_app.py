"""``fedops simulate`` in-process: refused starts leave nothing behind; sweeps end in a table."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedops.config.hydra_app import simulate_main, sweep_table


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("rounds=-1", "rounds: must be >= 1"),
        ("simulation.num_clients=5000", "simulation.num_clients: digits: 5000 clients is too many"),
        (
            "simulation.num_clients=100",
            "simulation.num_clients: no Dirichlet(alpha=0.5) split gave every one of 100 sites",
        ),
        ("task=/nonexistent/task.py", "task: task file '/nonexistent/task.py' does not exist"),
        # keys nothing would read are refused, not ignored (issue 18 item 5)
        ("strategy.mu=0.5", "strategy.mu: has no effect with strategy fedavg"),
        ("strategy=krum strategy.trim_fraction=0.2", "strategy.trim_fraction: has no effect"),
        ("dataset.alpha=0.3", "dataset.alpha: has no effect with dataset=digits"),
        ("partition=iid dataset=synthetic", "partition.name: has no effect with dataset=synthetic"),
        ("partition=iid partition.alpha=0.2", "partition.alpha: has no effect with partition=iid"),
        ("task=my.py model=mlp", "model.name: has no effect with task=..."),
    ],
)
def test_a_refused_start_names_the_key_and_leaves_no_run_directory(workdir, capsys, override, says):
    assert simulate_main(override.split()) == 2
    err = capsys.readouterr().err
    assert err.strip().startswith(f"fedops simulate: error: {says}")
    assert "Traceback" not in err
    assert list(workdir.iterdir()) == []  # no runs/simulate/DATE-TIME-XXXX, no runs/


def test_a_refused_start_keeps_a_directory_that_holds_other_files(workdir):
    run_dir = workdir / "mine"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("kept")
    assert simulate_main(["rounds=0", f"hydra.run.dir={run_dir}"]) == 2
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]


def test_a_refused_start_never_removes_a_runs_records(workdir):
    run_dir = workdir / "run"
    assert simulate_main(["rounds=1", f"hydra.run.dir={run_dir}"]) == 0
    before = sorted(p.name for p in run_dir.iterdir())
    assert simulate_main(["rounds=-1", f"hydra.run.dir={run_dir}"]) == 2
    assert "state.sqlite" in before
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_a_sweep_ends_with_one_table_of_its_jobs(workdir, capsys):
    sweep = workdir / "sweep"
    code = simulate_main(["-m", "strategy=fedavg,fedprox", "rounds=1", f"hydra.sweep.dir={sweep}"])
    assert code == 0
    out = capsys.readouterr().out
    table = out[out.index(f"sweep of 2 jobs ({sweep})") :].splitlines()[1:4]
    assert table[0].split() == ["job", "overrides", "status", "rounds", "eval_accuracy"]
    assert table[1].split()[:4] == ["0", "strategy=fedavg", "completed", "1"]
    assert table[2].split()[:4] == ["1", "strategy=fedprox", "completed", "1"]
    assert 0.0 < float(table[1].split()[4]) <= 1.0
    assert (sweep / "sweep.txt").read_text().splitlines() == table


def test_sweep_table_aligns_columns_and_drops_an_all_empty_epsilon():
    rows = [
        {
            "job": 0,
            "overrides": "seed=1",
            "status": "completed",
            "rounds": 3,
            "acc": 0.5,
            "epsilon": None,
            "run_dir": "x/0",
        },
        {
            "job": 1,
            "overrides": "seed=22",
            "status": "failed",
            "rounds": 0,
            "acc": None,
            "epsilon": None,
            "run_dir": "x/1",
        },
    ]
    assert sweep_table(rows).splitlines() == [
        "job  overrides  status     rounds  acc",
        "0    seed=1     completed  3       0.5000",
        "1    seed=22    failed     0       -",
    ]


def test_a_task_that_leaves_a_site_without_training_rows_is_refused(workdir, capsys):
    task = workdir / "sparse_task.py"
    task.write_text(
        "import numpy as np, torch\n"
        "def build_model():\n    return torch.nn.Linear(4, 2)\n"
        "def load_data(site, num_sites):\n"
        "    n = 0 if site == 3 else 12\n"
        "    x = np.ones((n, 4), dtype=np.float32)\n"
        "    return (x, np.zeros(n, dtype=int)), (np.ones((3, 4), np.float32), np.zeros(3, int))\n"
    )
    assert simulate_main([f"task={task}", "simulation.num_clients=4", "rounds=1"]) == 2
    err = capsys.readouterr().err
    assert "load_data(site=3, num_sites=4) returned an empty train split" in err
    assert sorted(p.name for p in workdir.iterdir()) == ["sparse_task.py"]


def test_a_scenario_finds_its_task_file_from_any_directory(workdir, capsys):
    assert simulate_main(["+scenario=bank_fairness", "rounds=1"]) == 0
    (run_dir,) = (workdir / "runs" / "simulate").glob("2*")
    config = (run_dir / "config.yaml").read_text()
    assert "simulations/tasks/bank_credit.py" in config and "${" not in config
