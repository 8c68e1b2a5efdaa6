"""Two hosts on one machine: the coordinator and the sites in separate network namespaces.

The namespaces and the veth pair between them (10.77.x.0/24, addresses that
exist only inside them) are created by the test and removed after it. The
run is a consortium run: the coordinator's certificate names its namespace's
address, and every call crosses the veth link over mutual TLS. Skipped, with
the reason, where the test may not create namespaces (not root, no iproute2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import ENV, cannot_make_namespaces, ip

from fedops.consortium.kits import init_consortium

pytestmark = pytest.mark.slow


@pytest.fixture
def hosts() -> Iterator[tuple[str, str, str]]:
    """(coordinator namespace, site namespace, coordinator address): a link between them."""
    why = cannot_make_namespaces()
    if why:
        pytest.skip(why)
    tag = f"{os.getpid() % 100000}"
    coord, site = f"fedops-c{tag}", f"fedops-s{tag}"
    subnet = 77 + os.getpid() % 100  # per test process: xdist workers never share a subnet
    try:
        ip("netns", "add", coord)
        ip("netns", "add", site)
        ip("link", "add", f"vc{tag}", "type", "veth", "peer", "name", f"vs{tag}")
        ip("link", "set", f"vc{tag}", "netns", coord)
        ip("link", "set", f"vs{tag}", "netns", site)
        for ns, dev, host in ((coord, f"vc{tag}", 1), (site, f"vs{tag}", 2)):
            ip("-n", ns, "addr", "add", f"10.{subnet}.0.{host}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield coord, site, f"10.{subnet}.0.1:8443"
    finally:
        for ns in (coord, site):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _fedops(ns: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "fedops", *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=ENV,
    )


def test_a_consortium_run_across_two_network_namespaces(hosts, tmp_path: Path):
    coord_ns, site_ns, address = hosts
    spec = tmp_path / "consortium.yaml"
    spec.write_text(
        "name: netns-banks\n"
        f"coordinator: {{name: coordinator, address: '{address}'}}\n"
        "sites: [{name: bank-a}, {name: bank-b}]\n"
        "admins: [{name: alice}]\n"
    )
    init_consortium(spec, tmp_path / "cons")
    kits = tmp_path / "cons" / "kits"
    run_dir = tmp_path / "run"
    procs = [
        _fedops(coord_ns, tmp_path / "coordinator.log", "coordinator", "--kit",
                str(kits / "coordinator"), "--task", "digits", "--rounds", "3",
                "--min-clients", "2", "--run-dir", str(run_dir), "--join-timeout", "120",
                "--epochs", "1"),
    ]  # fmt: skip
    for i, name in enumerate(("bank-a", "bank-b")):
        procs.append(
            _fedops(site_ns, tmp_path / f"{name}.log", "client", "--kit", str(kits / name),
                    "--task", "digits", "--site", str(i), "--num-sites", "2",
                    "--run-dir", str(tmp_path / name), "--max-retries", "10")
        )  # fmt: skip
    try:
        codes = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    logs = {f.name: f.read_text(errors="replace")[-2000:] for f in tmp_path.glob("*.log")}
    assert codes == [0, 0, 0], logs
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 3
    assert f"listening on {address}" in logs["coordinator.log"]
    assert f"registered with {address}" in logs["bank-a.log"]
