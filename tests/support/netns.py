"""What the network-namespace tests share: running `ip`, and whether they may at all."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

#: one thread per process, unbuffered logs: several fedops processes share 2 cores
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def cannot_make_namespaces() -> str:
    """Empty when this process may create namespaces; else why not (the skip reason)."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"fdp-probe-{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"`ip netns add` failed: {exc.stderr.decode(errors='replace').strip()}"
    except subprocess.TimeoutExpired:
        return "`ip netns add` hung"
    ip("netns", "del", probe)
    return ""


@contextmanager
def linked_pair(tag: str, subnet: str) -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth link: ``(ns_a, ns_b)``, at ``{subnet}.1`` and ``{subnet}.2``.

    ``subnet`` is a private /24's first three octets (``"10.77.1"``); ``tag`` keeps the names
    apart (the pid: xdist workers never share one). Both namespaces, and the link with them,
    are deleted on the way out.
    """
    ns_a, ns_b = f"fedops-a{tag}", f"fedops-b{tag}"
    try:
        ip("netns", "add", ns_a)
        ip("netns", "add", ns_b)
        ip("link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}")
        for ns, dev, host in ((ns_a, f"va{tag}", 1), (ns_b, f"vb{tag}", 2)):
            ip("link", "set", dev, "netns", ns)
            ip("-n", ns, "addr", "add", f"{subnet}.{host}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield ns_a, ns_b
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", f"va{tag}"], capture_output=True, timeout=30)


def contained(ns: str, *argv: str) -> list[str]:
    """``argv`` in namespace ``ns`` and in a PID namespace of its own, as pid 1 there.

    SIGKILL to the returned command's process (``unshare``) kills its child, and with
    pid 1 every process it started, daemons included: nothing outlives it, and what runs
    inside sees no process outside it (other tests' processes are out of its reach).
    """
    unshare = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"]
    return ["ip", "netns", "exec", ns, *unshare, *argv]
