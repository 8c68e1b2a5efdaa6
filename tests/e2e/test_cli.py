"""Bad flags fail fast, before anything starts, with the flag named."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # real gRPC servers or processes: the slow lane

BAD = [
    (["coordinator", "--rounds", "0"], "--rounds: must be >= 1"),
    (["coordinator", "--min-clients", "0"], "--min-clients"),
    (["coordinator", "--address", "0.0.0.0:8765"], "--address: refusing to serve plaintext"),
    (["coordinator", "--address", "nonsense"], "--address: expected HOST:PORT"),
    (["coordinator", "--round-timeout", "-1"], "--round-timeout"),
    (["coordinator", "--strategy", "fedsgd"], "--strategy: must be one of ['fedadagrad'"),
    (["coordinator", "--task", "digits", "--alpha", "0"], "--alpha: must be > 0"),
    (
        ["client", "--task", "digits", "--site", "3", "--num-sites", "3"],
        "--site: must be in [0, 3)",
    ),
    (["coordinator", "--lr", "0"], "--lr: must be in (0, 100]"),
    (["coordinator", "--lr-decay", "1.5"], "--lr-decay: must be in (0, 1]"),
    (
        ["client", "--task", "digits", "--site", "0", "--num-sites", "1", "--lr", "0.1"],
        "--lr moved to the run",
    ),
    (
        ["client", "--task", "digits", "--site", "0", "--num-sites", "1", "--max-epochs", "0"],
        "--max-epochs: must be >= 1",
    ),
    (
        ["client", "--task", "digits", "--site", "0", "--num-sites", "1", "--retry-for", "soon"],
        "--retry-for: 'soon' is not a duration",
    ),
    (
        ["client", "--task", "nope.py", "--site", "0", "--num-sites", "1"],
        "--task: task file 'nope.py' does not exist",
    ),
    (
        ["client", "--task", "no_such_module_xyz", "--site", "0", "--num-sites", "1"],
        "is not a built-in",
    ),
    (["simulate", "simulation.num_clients=0"], "simulation.num_clients: must be >= 1"),
    (["simulate", "client.lr=-1"], "client.lr: must be in (0, 100]"),
    (["simulate", "client.lr_decay=0"], "client.lr_decay: must be in (0, 1]"),
    # a key nothing reads, a seed out of range: refused before anything starts
    (["simulate", "+simulation.num_client=50"], "simulation.num_client: not a setting"),
    (["coordinator", "--task", "digits", "--seed", "-1"], "--seed: must be in [0, 2^53)"),
    (["coordinator", "--task", "digits", "--secagg-k", "5"], "--secagg-k: has no effect"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_flag_is_named(args: list[str], message: str, tmp_path):
    # cwd: a refused simulate config still gets a Hydra run directory; keep it out of the repo
    result = subprocess.run(
        [sys.executable, "-m", "fedops", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("strategy.muu=1", "strategy.muu: not a setting of fedops simulate (did you mean"),
        ("rounds=abc", "rounds: Value 'abc' of type 'str' could not be converted"),
        ("strategy=fedsgd", "strategy: no option 'fedsgd'"),
    ],
)
def test_simulate_config_errors_hydra_finds_exit_2_naming_the_key(
    override: str, message: str, tmp_path
):
    result = subprocess.run(
        [sys.executable, "-m", "fedops", "simulate", override],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr  # as fedops' own config errors
    assert result.stderr.startswith(f"fedops simulate: error: {message}"), result.stderr
    assert "Traceback" not in result.stderr


def test_simulate_writes_a_run_directory(tmp_path):
    run_dir = tmp_path / "sim"
    result = subprocess.run(
        [sys.executable, "-m", "fedops", "simulate", "rounds=3", f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]
    for key in ("num_clients", "train_loss", "eval_loss", "eval_accuracy", "duration_s"):
        assert key in rows[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["backend"] == "vectorized"
    for name in ("state.sqlite", "config.yaml", "accuracy.png", "loss.png"):
        assert (run_dir / name).exists(), name
    assert "rounds: 3" in (run_dir / "config.yaml").read_text()


def test_simulate_multirun_sweeps(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedops",
            "simulate",
            "-m",
            "strategy=fedavg,fedprox",
            "rounds=1",
            f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    strategies = {
        json.loads((sweep / d / "summary.json").read_text())["strategy"] for d in ("0", "1")
    }
    assert strategies == {"fedavg", "fedprox"}


def test_simulate_ctrl_c_keeps_the_completed_rounds(tmp_path):
    import signal
    import time

    run_dir = tmp_path / "sim"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedops", "simulate", "rounds=100000", f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        metrics = run_dir / "metrics.jsonl"
        while time.monotonic() < deadline:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["rounds_completed"] >= 2
    assert len(metrics.read_text().splitlines()) == summary["rounds_completed"]


def test_a_second_coordinator_on_a_taken_port_stops_before_writing_anything(procs, tmp_path):
    """Issue 18, item 1: gRPC's default SO_REUSEPORT let a second coordinator bind the same
    port (clients were split between two runs at random); a port held by another program
    gave a traceback after the audit log's run_started entry was written."""
    from procs import run_fedops

    first, port = procs.coordinator(
        "first", tmp_path / "A", task="digits", rounds=1, join_timeout=60
    )
    second = run_fedops(
        "coordinator",
        "--address",
        f"127.0.0.1:{port}",
        "--run-dir",
        str(tmp_path / "B"),
        "--task",
        "digits",
        "--rounds",
        "1",
    )
    assert second.returncode == 1, second.stderr
    lines = second.stderr.strip().splitlines()
    assert lines[-1] == (
        f"fedops coordinator: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ), second.stderr
    assert "Traceback" not in second.stderr
    assert not (tmp_path / "B").exists()  # no run directory, no audit entry, no store
    assert first.poll() is None  # the first run is untouched


@pytest.mark.parametrize("lost", ["state.sqlite*", "state.sqlite-wal"])
def test_a_run_directory_whose_state_was_lost_is_not_started_over(procs, tmp_path, lost):
    """Issue 18, item 2: with state.sqlite deleted, or its -wal file deleted after a crash,
    the coordinator started a new run in a directory holding the old run's checkpoints and
    audit chain."""
    import signal

    from procs import run_fedops, wait_until

    run_dir = tmp_path / "run"
    args = ("--task", "digits", "--rounds", "50", "--min-clients", "1", "--join-timeout", "60")
    coord, port = procs.coordinator("coordinator", run_dir, *args)
    procs.client("site0", port, 0, 1)
    wait_until(lambda: list((run_dir / "checkpoints").glob("*.safetensors")), 120, "a round")
    coord.send_signal(signal.SIGKILL)  # a crash: the WAL holds what was not checkpointed
    coord.wait(30)
    procs.kill_all()
    for path in run_dir.glob(lost):
        path.unlink()
    audit = (run_dir / "audit.jsonl").read_bytes()
    again = run_fedops("coordinator", "--address", "127.0.0.1:0", "--run-dir", str(run_dir), *args)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "holds an earlier run" in again.stderr and "Traceback" not in again.stderr
    assert "checkpoints" in again.stderr and "audit.jsonl" in again.stderr
    assert (run_dir / "audit.jsonl").read_bytes() == audit  # nothing appended


def test_simulations_started_together_get_their_own_run_directories(tmp_path):
    """Issue 18, item 3: runs started in the same second shared one directory; one crashed
    and the survivor's config.yaml said seed 1 over seed 3's results."""
    from procs import ENV

    started = [
        subprocess.Popen(
            [sys.executable, "-m", "fedops", "simulate", f"seed={seed}", "rounds=1"],
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for seed in (1, 2, 3)
    ]
    outputs = [p.communicate(timeout=300)[0].decode() for p in started]
    assert [p.returncode for p in started] == [0, 0, 0], outputs
    runs = sorted(d for d in (tmp_path / "runs" / "simulate").iterdir() if d.name != "latest")
    assert len(runs) == 3
    seeds = sorted(
        int(line.split(":")[1])
        for run in runs
        for line in (run / "config.yaml").read_text().splitlines()
        if line.startswith("seed:")
    )
    assert seeds == [1, 2, 3]
    latest = tmp_path / "runs" / "simulate" / "latest"
    assert latest.is_symlink() and (latest / "summary.json").is_file()


def test_a_start_that_fails_on_its_task_leaves_no_run_behind(tmp_path):
    """Issue 18, item 4: a failed first start (--task digit) fixed the stored config for
    good; the later correct start resumed as 'digit'."""
    from procs import run_fedops

    run_dir = tmp_path / "run"
    bad = run_fedops(
        "coordinator", "--address", "127.0.0.1:0", "--run-dir", str(run_dir),
        "--task", "digit", "--rounds", "1",
    )  # fmt: skip
    assert bad.returncode == 2 and "--task" in bad.stderr and "Traceback" not in bad.stderr
    assert not (run_dir / "state.sqlite").exists()


def test_where_the_run_directory_is_is_not_part_of_the_run(tmp_path):
    from fedops.config import CoordinatorConfig
    from fedops.coordinator.app import run_config
    from fedops.runtime.store import config_digest

    here = run_config(CoordinatorConfig(run_dir=tmp_path / "a", task="digits"))
    moved = run_config(CoordinatorConfig(run_dir=(tmp_path / "b").resolve(), task="digits"))
    assert config_digest(here) == config_digest(moved)
    other = run_config(CoordinatorConfig(run_dir=tmp_path / "a", task="digits-mlp"))
    assert config_digest(other) != config_digest(here)


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (
            "def build_model():\n    return None\n",
            2,
            "fedops simulate: error: task: task '{task}': build_model() returned None",
        ),
        (
            "def build_model():\n    return torch.nn.Linear(4, 3)\n"
            "def train(model, data, config):\n    raise RuntimeError('the GPU caught fire')\n",
            1,
            "fedops simulate: error: the run failed: RuntimeError: the GPU caught fire "
            "(traceback in ",
        ),
    ],
)
def test_simulate_names_a_broken_task_in_one_line(tmp_path, body, code, words):
    """Issue 18 #7: a task error in `fedops simulate` was a 19-36 line Hydra traceback."""
    task = tmp_path / "task.py"
    task.write_text(
        "import numpy as np\nimport torch\n" + body + "def load_data(site, num_sites):\n"
        "    x = np.random.rand(20, 4).astype('float32')\n"
        "    return (x, np.arange(20) % 3), (x, np.arange(20) % 3)\n"
    )
    run_dir = tmp_path / "sim"
    result = subprocess.run(
        [sys.executable, "-m", "fedops", "simulate", f"task={task}", "rounds=1",
         "simulation.backend=sequential", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == code, result.stderr
    assert words.format(task=task) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    if code == 1:
        assert "the GPU caught fire" in (run_dir / "error.log").read_text()
