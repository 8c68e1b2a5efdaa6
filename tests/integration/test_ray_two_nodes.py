"""A Ray cluster of two nodes, each in a network namespace of its own, runs one simulation.

The test joins two namespaces with a veth link (a private 10.X.1.0/24 that exists only
inside them), starts a Ray head in the first (``ray start --head``, dashboard off, one
CPU) and a second Ray node in the other, joining the head across the link (one CPU).
``fedops simulate simulation=ray simulation.ray_address=HEAD:PORT`` then runs in the
head's namespace as a driver of that cluster, with two actors: one CPU per node puts one
actor on each. It must complete, log that it joined two live nodes, log a node address
for each actor, as Ray reported it from inside that actor, with results taken from
actors on both addresses, and end with the model the sequential backend computes for
the same seed.

The cluster uses token authentication (a fresh token in ``RAY_AUTH_TOKEN`` for both nodes
and the driver) and temp dirs of its own (so that nothing is written to ``/tmp/ray`` where
another Ray on this machine would look for a cluster). Each node runs as pid 1 of a PID
namespace of its own (:func:`netns.contained`): killing it stops all its daemons, where
``ray stop --force`` would kill every Ray process on the machine, other tests' included.
Skipped, with the reason, only where the machine cannot run it: Ray, ``unshare`` or ``ip``
not installed, not root, or ``ip netns add`` refused.

On a loaded machine (two cores shared with the rest of the suite) every step is slow, so
no step has a short fixed deadline: each waits for its real condition (a node's "started"
line, a process's exit, a node namespace emptied) up to a generous bound, and a node that
misses Ray's one fixed deadline (a raylet's 30 s to register) is started again while its
bound lasts (after a second node's retry, until the head counts exactly two live nodes).
The driver waits for its actors to be up before its first round (fedops's own
:data:`~fedops.simulation.ray_backend.ACTORS_UP_S`), so no round's deadline is spent on them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from netns import ENV, cannot_make_namespaces, contained, linked_pair
from one_ray import one_ray_at_a_time
from procs import final_model

from fedops.runtime.rules import ConfigError
from fedops.runtime.simulate_settings import SimulationConfig, check_simulation
from fedops.simulation.ray_backend import SLOW_START

PORT = 6379  # free: nothing else listens inside a namespace the test has just made
STARTED = "Ray runtime started."
SIMULATE = ["simulate", "rounds=2", "seed=3", "simulation.num_clients=4"]
# Upper bounds, not expected times (idle: 15 s in all; two busy loops on 2 cores: 2 min).
NODE_START_S = 240.0  # one node, all its tries: Ray's own waits are 120 s (GCS) + 30 s
TRY_S = 180.0  # one try: those waits and then some; a try that neither starts nor fails
MAX_TRIES = 4
LIVE_NODES_S = 120.0  # a failed try's raylet that registered is declared dead in ~30 s
SEQUENTIAL_S = 300.0
DRIVER_S = 480.0  # joining, up to 180 s for its actors, two rounds


@dataclass(frozen=True)
class Cluster:
    head_ns: str  # the head's namespace, where the driver runs too
    head_ip: str
    node_ip: str  # the second node's address
    env: dict[str, str]  # what a process needs to join (the token)

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{PORT}"


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def _started(proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> bool:
    """Whether ``ray start`` said it started: polled until it does, it exits (failed) or
    ``timeout_s`` passes (hung)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if STARTED in log.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return STARTED in log.read_text(errors="replace")
        time.sleep(0.5)
    return False


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")  # a zombie holds nothing


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a node's ``unshare`` and wait, bounded, until its PID namespace is empty (its
    pid 1, the node's ``ray start``, exits only after every other process there): a node
    started next, or the next Ray test, finds the node's port, memory and CPU free."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    try:
        inner = [int(pid) for pid in children.read_text().split()]
    except OSError:
        inner = []  # exited already (its namespace went with it) or no such /proc file
    proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):  # the wait below is bounded too
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in inner) and time.monotonic() < deadline:
        time.sleep(0.1)


def _start_node(
    argv: list[str], log: Path, env: dict[str, str], nodes: list[subprocess.Popen[bytes]]
) -> int:
    """Start a node and wait for it; again after a failed start while :data:`NODE_START_S`
    lasts (Ray gives a raylet a fixed 30 s to register, which a loaded machine can miss; a
    later try finds Ray's files in the page cache). Every process started goes into
    ``nodes``, for the fixture to stop. Returns the number of tries it took."""
    deadline = time.monotonic() + NODE_START_S
    tries: list[str] = []
    while len(tries) < MAX_TRIES and (left := deadline - time.monotonic()) > 0:
        nodes.append(_start(argv, log, env))
        if _started(nodes[-1], log, min(TRY_S, left)):
            return len(tries) + 1
        _stop(nodes[-1])  # its whole PID namespace: nothing of the failed try is left
        failed = log.rename(log.with_name(f"{log.stem}.try{len(tries) + 1}.log"))
        tries.append(f"--- try {len(tries) + 1} ---\n{failed.read_text(errors='replace')[-2000:]}")
    pytest.fail(
        f"{log.name}: no {STARTED!r} in {len(tries)} tries, {NODE_START_S:g} s:\n"
        + "\n".join(tries)
    )


def _live_nodes(cluster: Cluster) -> str:
    """How many nodes the head's GCS counts as alive, asked by a driver in its namespace."""
    code = (
        f"import ray; ray.init(address={cluster.address!r}, log_to_driver=False); "
        "print('live:', sum(bool(n['Alive']) for n in ray.nodes()))"
    )
    probe = subprocess.run(
        ["ip", "netns", "exec", cluster.head_ns, sys.executable, "-c", code],
        capture_output=True, text=True, env=cluster.env, timeout=LIVE_NODES_S,
    )  # fmt: skip
    found: list[str] = re.findall(r"^live: (\d+)$", probe.stdout, re.MULTILINE)
    return found[-1] if found else f"no answer (exit {probe.returncode}): {probe.stderr[-1500:]}"


def _await_two_live_nodes(cluster: Cluster) -> None:
    """Poll until the cluster has exactly its two nodes alive, the driver's premise: after a
    failed try of the second node, the GCS may count that try's raylet until it misses
    its health checks."""
    deadline = time.monotonic() + LIVE_NODES_S
    while (live := _live_nodes(cluster)) != "2" and time.monotonic() < deadline:
        time.sleep(2)
    assert live == "2", f"live nodes after {LIVE_NODES_S:g} s: {live}"


def _skip_reason() -> str:
    if shutil.which("unshare") is None:
        return "util-linux `unshare` is not installed"
    if not Path(sys.executable).with_name("ray").exists():
        return "the `ray` command is not next to this Python"
    return cannot_make_namespaces()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    why = _skip_reason()
    if why:
        pytest.skip(f"cannot run a Ray cluster in network namespaces here: {why}")
    with one_ray_at_a_time():  # test_ray_backend starts a local Ray too
        yield from _cluster(tmp_path)


def _cluster(tmp_path: Path) -> Iterator[Cluster]:
    ray_cmd = str(Path(sys.executable).with_name("ray"))
    tag = f"{os.getpid() % 100000}"
    subnet = f"10.{77 + os.getpid() % 100}.1"
    env = {
        **ENV,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        **SLOW_START,  # fedops's own raised deadlines: a loaded machine starts Ray slowly
    }
    env.pop("RAY_ADDRESS", None)
    # short: a node's unix socket paths under it must fit in 107 bytes
    temp = Path(tempfile.mkdtemp(prefix="fdray", dir="/tmp"))
    common = ["--num-cpus=1", "--disable-usage-stats", "--block"]
    nodes: list[subprocess.Popen[bytes]] = []
    with linked_pair(tag, subnet) as (ns_a, ns_b):
        try:
            head_log, node_log = tmp_path / "head.log", tmp_path / "node.log"
            _start_node(contained(ns_a, ray_cmd, "start", "--head", *common,
                                  f"--node-ip-address={subnet}.1", f"--port={PORT}",
                                  "--include-dashboard=false",
                                  f"--temp-dir={temp / 'a'}"), head_log, env, nodes)  # fmt: skip
            node_b = contained(ns_b, ray_cmd, "start", *common,
                               f"--address={subnet}.1:{PORT}",
                               f"--node-ip-address={subnet}.2",
                               f"--temp-dir={temp / 'b'}")  # fmt: skip
            tries = _start_node(node_b, node_log, env, nodes)
            cluster = Cluster(ns_a, f"{subnet}.1", f"{subnet}.2", env)
            if tries > 1:  # a failed try's raylet may still count as alive for a while
                _await_two_live_nodes(cluster)
            yield cluster
        finally:
            for proc in nodes:  # SIGKILL to unshare: every process of that node goes with it
                _stop(proc)
            shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(1500)  # the bounds above, summed, and the wait for the other Ray test
def test_a_simulation_runs_across_a_two_node_ray_cluster(cluster: Cluster, tmp_path: Path):
    fedops = [sys.executable, "-m", "fedops"]
    sequential = subprocess.run(
        [*fedops, *SIMULATE, "simulation=sequential", f"hydra.run.dir={tmp_path / 'seq'}"],
        capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=SEQUENTIAL_S,
    )  # fmt: skip
    assert sequential.returncode == 0, sequential.stderr[-3000:]
    driver = subprocess.run(
        ["ip", "netns", "exec", cluster.head_ns, *fedops, *SIMULATE, "simulation=ray",
         "simulation.workers=2", f"simulation.ray_address={cluster.address}",
         f"hydra.run.dir={tmp_path / 'ray'}"],
        capture_output=True, text=True, env=cluster.env, cwd=tmp_path, timeout=DRIVER_S,
    )  # fmt: skip
    log = driver.stdout + driver.stderr
    assert driver.returncode == 0, log[-3000:]

    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["backend"] == "ray", summary
    assert f"joined the Ray cluster at {cluster.address}: 2 live node(s)" in log, log[-3000:]
    given: dict[str, int] = {}
    for results, ip in re.findall(r"ray actor \d+ gave (\d+) result\(s\) on node (\S+)", log):
        given[ip] = given.get(ip, 0) + int(results)
    assert set(given) == {cluster.head_ip, cluster.node_ip}, log[-3000:]
    assert all(count > 0 for count in given.values()), given

    rounds = [json.loads(line) for line in (tmp_path / "ray" / "metrics.jsonl").open()]
    reference = [json.loads(line) for line in (tmp_path / "seq" / "metrics.jsonl").open()]
    assert [r["round"] for r in rounds] == [r["round"] for r in reference] == [1, 2]
    for got, want in zip(rounds, reference, strict=True):
        assert got["eval_loss"] == pytest.approx(want["eval_loss"], rel=1e-5, abs=1e-6)
    expected = final_model(tmp_path / "seq")
    for name, value in final_model(tmp_path / "ray").items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize(
    ("backend", "address", "message"),
    [
        ("ray", "10.0.0.1", "must be auto, HOST:PORT or ray://HOST:PORT"),
        ("ray", "head:0", "must be auto, HOST:PORT or ray://HOST:PORT"),
        ("ray", "http://head:6379", "must be auto, HOST:PORT or ray://HOST:PORT"),
        ("process", "auto", "needs simulation.backend=ray"),
    ],
)
def test_a_ray_address_is_checked(backend: str, address: str, message: str):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_simulation(SimulationConfig(backend=backend, ray_address=address))
    for good in ("auto", "10.0.0.1:6379", "ray://head.example:10001", "[fd00::1]:6379"):
        check_simulation(SimulationConfig(backend="ray", ray_address=good))
