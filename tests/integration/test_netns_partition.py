"""Network partitions between real hosts: a site's link goes down mid-run, then comes back.

The coordinator and three sites each get a network namespace; the sites' veth links
meet on a bridge in the coordinator's namespace (10.X.0.0/24, with X in 180..249 so
that this module and test_netns_consortium.py, which uses 77..176, never share a
subnet, and the pid in every name so xdist workers never share a namespace). While the
run goes on, one site's link is taken down (`ip link set down` in its namespace: its
packets go nowhere, its open TCP connection to the coordinator stalls, new connections
fail at once) and brought up again:

* shorter than the liveness timeout: the round in flight waits, the stalled connection
  resumes, the site carries on as the same node;
* longer than it: the coordinator drops the site and the rounds go on without it; back,
  the site is told it is unknown, registers again and trains in the next rounds.

A cut shorter than the agent's call deadlines leaves no "retry" in its log (the call in
flight just stalls, then completes); connections that fail outright are retried with
backoff, which the second test shows with a site whose link is down when it starts.
Skipped, with the reason, where the test may not create namespaces (not root, no
iproute2).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from netns import ENV, cannot_make_namespaces, ip
from procs import journal, metrics, wait_until

pytestmark = pytest.mark.slow

SITES = 3
PORT = 8443

# Digits, with a pause before every local training that the test sets (and changes) by
# writing seconds into FEDOPS_TEST_PACE_FILE: rounds are slow while the test cuts a site
# off and lets it back in, and fast once it has seen what it waited for.
PACED_TASK = """
import os
import time

from fedops.core.training import train as default_train
from fedops.tasks.digits import make_task

_digits = make_task()
build_model = _digits.build_model
load_data = _digits.load_data


def train(model, data, config):
    with open(os.environ["FEDOPS_TEST_PACE_FILE"]) as f:
        time.sleep(float(f.read() or 0))
    return default_train(model, data, config)
"""


@dataclass(frozen=True)
class Net:
    coordinator: str  # the coordinator's namespace
    sites: list[str]  # one namespace per site
    links: list[str]  # each site's end of its veth link (inside its namespace)
    address: str  # where the coordinator listens

    def set_link(self, site: int, state: str) -> None:
        ip("-n", self.sites[site], "link", "set", "dev", self.links[site], state)


@pytest.fixture
def net() -> Iterator[Net]:
    why = cannot_make_namespaces()
    if why:
        pytest.skip(why)
    tag = f"{os.getpid() % 100000}"
    subnet = 180 + os.getpid() % 70
    coord = f"fdp-pc{tag}"
    sites = [f"fdp-ps{tag}-{i}" for i in range(SITES)]
    links = [f"pv{tag}s{i}" for i in range(SITES)]
    namespaces = [coord, *sites]
    try:
        for ns in namespaces:
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        bridge = f"pb{tag}"
        ip("-n", coord, "link", "add", bridge, "type", "bridge")
        ip("-n", coord, "addr", "add", f"10.{subnet}.0.1/24", "dev", bridge)
        ip("-n", coord, "link", "set", bridge, "up")
        for i, (ns, link) in enumerate(zip(sites, links, strict=True)):
            peer = f"pv{tag}c{i}"
            ip("link", "add", link, "netns", ns, "type", "veth", "peer", "name", peer,
                "netns", coord)  # fmt: skip
            ip("-n", coord, "link", "set", peer, "master", bridge)
            ip("-n", coord, "link", "set", peer, "up")
            ip("-n", ns, "addr", "add", f"10.{subnet}.0.{10 + i}/24", "dev", link)
            ip("-n", ns, "link", "set", link, "up")
        yield Net(coord, sites, links, f"10.{subnet}.0.1:{PORT}")
    finally:
        for ns in namespaces:  # deleting a namespace deletes the links in it
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


class Hosts:
    """Processes started inside namespaces; their logs; whatever is left is killed."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, ns: str, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.procs[name] = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "fedops", *args],
            stdout=(self.workdir / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
            env={**ENV, **(env or {})},
            cwd=self.workdir,
        )

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{self.log(n)[-4000:]}" for n in self.procs)

    def wait(self, name: str, timeout: float) -> int:
        try:
            return self.procs[name].wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{name} still running after {timeout} s\n{self.logs()}") from exc

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    h = Hosts(tmp_path)
    try:
        yield h
    finally:
        h.kill_all()


def _run(
    net: Net,
    hosts: Hosts,
    tmp_path: Path,
    *,
    rounds: int,
    liveness_s: float,
    min_clients: int = 2,
    cut_off_from_start: int | None = None,
) -> Path:
    """Start the coordinator and the sites (one of them, if asked, with its link down)."""
    run_dir = tmp_path / "run"
    task = tmp_path / "paced_task.py"
    task.write_text(PACED_TASK)
    _pace(tmp_path, 1.0)
    if cut_off_from_start is not None:
        net.set_link(cut_off_from_start, "down")
    hosts.start(net.coordinator, "coordinator", "coordinator", "--address", net.address,
                "--insecure", "--task", "digits", "--rounds", str(rounds),
                "--min-clients", str(min_clients), "--round-timeout", "40",
                "--liveness-timeout", str(liveness_s),
                "--heartbeat-interval", str(min(2.0, liveness_s / 5)),  # 5x slack at least
                "--join-timeout", "60", "--epochs", "1", "--run-dir", str(run_dir))  # fmt: skip
    for i, ns in enumerate(net.sites):
        hosts.start(ns, f"site{i}", "client", "--coordinator", net.address, "--insecure",
                    "--task", str(task), "--site", str(i), "--num-sites", str(SITES),
                    "--run-dir", str(tmp_path / f"site{i}"),
                    "--max-retries", str(MAX_RETRIES),
                    env={"FEDOPS_TEST_PACE_FILE": str(tmp_path / "pace")})  # fmt: skip
    return run_dir


def _pace(tmp_path: Path, seconds: float) -> None:
    """Seconds every site pauses before each local training, from its next round on."""
    tmp = tmp_path / "pace.tmp"
    tmp.write_text(str(seconds))
    tmp.replace(tmp_path / "pace")


def _partition(net: Net, site: int, seconds: float) -> None:
    """Take the site's link down for ``seconds``, then up again."""
    net.set_link(site, "down")
    try:
        time.sleep(seconds)
    finally:
        net.set_link(site, "up")


MAX_RETRIES = 30
RETRY = re.compile(
    r"^(\S+ \S+) WARNING fedops\.client: (.+) failed \((UNAVAILABLE|DEADLINE_EXCEEDED)\); "
    rf"retry (\d+)/{MAX_RETRIES} in ([\d.]+) s$",
    re.M,
)


def _registrations(site_dir: Path) -> list[str]:
    return [e["node_id"] for e in journal(site_dir) if e.get("event") == "registered"]


def _outcomes(run_dir: Path, node: str) -> dict[tuple[int, str], str]:
    """``{(round, phase): outcome}`` of one node, as the coordinator's store has it."""
    path = run_dir / "state.sqlite"
    if not path.exists():  # (connecting would create it)
        return {}
    try:
        with sqlite3.connect(path) as db:
            rows = db.execute(
                "SELECT round, phase, outcome FROM participants WHERE node_id = ?", (node,)
            ).fetchall()
    except sqlite3.OperationalError:  # the coordinator is still creating its tables
        return {}
    return {(r, phase): outcome for r, phase, outcome in rows}


def _completed(run_dir: Path, rounds: int) -> list[dict[str, Any]]:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed", summary
    assert summary["rounds_completed"] == rounds, summary
    rows = metrics(run_dir)
    assert [r["round"] for r in rows] == list(range(1, rounds + 1))
    return rows


def test_partition_shorter_than_liveness_heals_in_place(net: Net, hosts: Hosts, tmp_path: Path):
    """A 6 s cut with a 20 s liveness timeout: the round waits, the site stays in."""
    rounds = 5
    run_dir = _run(net, hosts, tmp_path, rounds=rounds, liveness_s=20, min_clients=SITES)
    wait_until(lambda: len(metrics(run_dir)) >= 2, 60, "two rounds", hosts.logs)
    _partition(net, 2, 6)
    _pace(tmp_path, 0)
    for name in ("coordinator", *(f"site{i}" for i in range(SITES))):
        assert hosts.wait(name, 60) == 0, hosts.logs()

    rows = _completed(run_dir, rounds)
    assert [r["num_clients"] for r in rows] == [SITES] * rounds, rows
    # The cut did not drop site2: the round in flight waited for it rather than dropping it...
    assert "dropped" not in hosts.log("coordinator"), hosts.log("coordinator")
    # ...and the site went on where it was: same node, never re-registered, in every round.
    (node,) = _registrations(tmp_path / "site2")
    outcomes = _outcomes(run_dir, node)
    assert all(outcomes.get((r, "fit")) == "ok" for r in range(1, rounds + 1)), outcomes
    pushed = {
        e["round"]
        for e in journal(tmp_path / "site2")
        if e.get("event") == "pushed" and e.get("kind") == "TASK_KIND_FIT"
    }
    assert pushed == set(range(1, rounds + 1)), pushed


def test_partition_longer_than_liveness_drops_then_reregisters(
    net: Net, hosts: Hosts, tmp_path: Path
):
    """Site2 starts cut off (it retries with backoff), joins, is cut off again for 12 s with
    a 5 s liveness timeout (dropped; the rounds go on), and registers again on return."""
    rounds = 30  # paced until site2 trains again, then fast: room for its backoff
    run_dir = _run(net, hosts, tmp_path, rounds=rounds, liveness_s=5, cut_off_from_start=2)
    site2 = tmp_path / "site2"
    wait_until(
        lambda: len(RETRY.findall(hosts.log("site2"))) >= 3, 60, "site2 retrying", hosts.logs
    )
    net.set_link(2, "up")
    first = wait_until(lambda: _registrations(site2), 60, "site2 registered", hosts.logs)[0]
    wait_until(
        lambda: "ok" in _outcomes(run_dir, first).values(), 60, "site2 in a round", hosts.logs
    )
    _partition(net, 2, 12)
    second = wait_until(
        lambda: _registrations(site2)[1:], 60, "site2 registering again", hosts.logs
    )[0]
    wait_until(
        lambda: "ok" in _outcomes(run_dir, second).values(), 60, "site2 training again", hosts.logs
    )
    _pace(tmp_path, 0)
    for name in ("coordinator", *(f"site{i}" for i in range(SITES))):
        assert hosts.wait(name, 60) == 0, hosts.logs()

    # While its link was down from the start, registering failed fast (UNAVAILABLE) and
    # was retried with growing, jittered, capped delays: 0.5 s * 2**(n-1), times 0.5..1.5.
    log = hosts.log("site2")
    joined = log.index(f"registered with {net.address} as {first}")
    retries = RETRY.findall(log[:joined])  # (the cut later on has retries of its own)
    assert len(retries) >= 3, log
    for n, (_, what, code, count, delay) in enumerate(retries, 1):
        assert (what, code, int(count)) == ("register", "UNAVAILABLE", n), retries
        base = min(10.0, 0.5 * 2 ** (n - 1))
        assert 0.5 * base - 0.05 <= float(delay) <= 1.5 * base + 0.05, retries

    # The coordinator dropped the silent node and went on without it...
    coord_log = hosts.log("coordinator")
    assert f"node {first} dropped: silent for 5 s" in coord_log, coord_log
    rows = _completed(run_dir, rounds)
    before = _outcomes(run_dir, first)
    trained_before = [r for (r, phase), o in before.items() if phase == "fit" and o == "ok"]
    dropped_in = [r for (r, _), o in before.items() if o == "dropped"]
    assert trained_before and dropped_in, before
    # ...and the site, back, learned it was unknown, registered as a new node and trained
    # in the rounds after the cut.
    assert _registrations(site2) == [first, second] and first != second
    assert "the coordinator no longer knows this node; registering again" in log, log
    trained_after = [
        r for (r, phase), o in _outcomes(run_dir, second).items() if phase == "fit" and o == "ok"
    ]
    (dropped,) = dropped_in
    assert trained_after and max(trained_before) <= dropped < min(trained_after)
    # In between, the rounds went on with the two other sites.
    between = rows[dropped : min(trained_after) - 1]
    assert between and all(r["num_clients"] == SITES - 1 for r in between), between
    assert rows[-1]["num_clients"] == SITES, rows
