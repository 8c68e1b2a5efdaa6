"""What the network-namespace tests share: running `ip`, and whether they may at all."""

from __future__ import annotations

import os
import shutil
import subprocess

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
