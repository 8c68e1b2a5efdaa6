"""Launch real ``fedops`` processes on loopback and wait on what they write."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedops.coordinator.listening import read_listening
from fedops.reporting.plots import read_metrics

# One torch thread per process: five clients and a coordinator share two cores.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_fedops(
    *args: str, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """One ``fedops`` command to its end, its output kept."""
    return subprocess.run(
        [sys.executable, "-m", "fedops", *args],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=timeout,
    )


def flags(**options: Any) -> list[str]:
    """Keyword options as flags: ``flags(rounds=3, min_clients=8, insecure=True)`` ->
    ``["--rounds", "3", "--min-clients", "8", "--insecure"]``; False and None are left out."""
    out: list[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        out.append("--" + key.replace("_", "-"))
        if value is not True:
            out.append(str(value))
    return out


class Procs:
    """Starts processes, keeps their logs, and kills whatever is left at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *args: str, env: dict[str, str] | None = None):
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedops", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**ENV, **(env or {})},
            cwd=self.workdir,
        )
        self.procs.append((name, proc))
        return proc

    def coordinator(
        self,
        name: str,
        run_dir: Path,
        *args: str,
        port: int = 0,
        env: dict[str, str] | None = None,
        **options: Any,
    ) -> tuple[subprocess.Popen[bytes], int]:
        """A coordinator and the port it bound. Port 0 (the default) lets the kernel pick a
        free one at bind time, so no other process can take it first; give ``port`` only to
        restart a run where its clients already look for it. ``options``: more flags, as
        keywords (:func:`flags`)."""
        proc = self.start(
            name,
            "coordinator",
            "--address",
            f"127.0.0.1:{port}",
            "--run-dir",
            str(run_dir),
            *args,
            *flags(**options),
            env=env,
        )
        return proc, self.bound_port(proc, run_dir, name)

    def bound_port(
        self, proc: subprocess.Popen[bytes], run_dir: Path, name: str, timeout: float = 120
    ) -> int:
        """The port coordinator ``proc`` listens on, from the ``listening.json`` it writes
        once bound; fails with its log if it exits first."""

        def bound() -> int | None:
            if proc.poll() is not None:
                raise AssertionError(
                    f"{name} exited ({proc.returncode}) before listening:\n{self.log(name)[-3000:]}"
                )
            record = read_listening(run_dir, proc.pid)
            return record.port if record is not None else None

        return int(wait_until(bound, timeout, f"{name} to listen", lambda: self.log(name)[-3000:]))

    def client(
        self,
        name: str,
        port: int,
        site: int,
        num_sites: int,
        *args: str,
        task: str = "digits",
        env: dict[str, str] | None = None,
        **options: Any,
    ):
        """A site agent of ``num_sites``; ``options``: more flags, as keywords (:func:`flags`)."""
        return self.start(
            name,
            "client",
            "--coordinator",
            f"127.0.0.1:{port}",
            "--task",
            task,
            "--site",
            str(site),
            "--num-sites",
            str(num_sites),
            "--run-dir",
            str(self.workdir / name),
            *args,
            *flags(**options),
            env=env,
        )

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait(self, proc: subprocess.Popen[bytes], timeout: float, name: str = "") -> int:
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            logs = "\n".join(f"--- {n} ---\n{self.log(n)[-3000:]}" for n, _ in self.procs)
            raise AssertionError(
                f"{name or proc.args} still running after {timeout} s\n{logs}"
            ) from exc

    def kill_all(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    context: Callable[[], str] | None = None,
) -> Any:
    """The predicate's first truthy value; on timeout, fail naming ``what`` (and ``context()``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    extra = f"\n{context()}" if context is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The run's ``metrics.jsonl`` rows (none yet: [])."""
    return read_metrics(run_dir)


def journal(path: Path) -> list[dict[str, Any]]:
    file = path / "client.jsonl"
    if not file.exists():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def final_model(run_dir: Path) -> dict[str, Any]:
    """The last committed round's model of a run directory (verified against its sha256)."""
    from fedops.runtime.store import RunStore

    store = RunStore(run_dir)
    try:
        return store.load_round(store.last_round())
    finally:
        store.close()


def query(run_dir: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(run_dir / "state.sqlite") as db:
        return db.execute(sql, params).fetchall()


SLOW_TASK = '''
import os
import time

from fedops.core.training import train as default_train
from fedops.tasks.digits import make_task

_digits = make_task()
build_model = _digits.build_model
load_data = _digits.load_data
_calls = 0


def train(model, data, config):
    """Digits, but from the second call on every training sleeps first (a straggler)."""
    global _calls
    _calls += 1
    if _calls >= 2:
        time.sleep(float(os.environ.get("FEDOPS_TEST_SLEEP_S", "0")))
    return default_train(model, data, config)
'''


def slow_task(workdir: Path) -> str:
    path = workdir / "slow_task.py"
    path.write_text(SLOW_TASK)
    return str(path)
