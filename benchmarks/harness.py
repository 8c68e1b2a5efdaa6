"""What the benchmark scripts share: timing, /proc sampling, child runs, tables, flags, JSON.

Every script in this folder measures fedops beside a baseline in one run and prints the
figures. The helpers below are the parts that two or more scripts needed and used to carry
a copy of each: kept here once, every script times, samples, isolates and prints the same
way, and a fix to one (a /proc field, a killed Ray process) reaches them all.

Plain functions and two small classes; nothing here imports fedops, torch or a framework at
import time, so importing it costs a script (and each child process it starts) nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: environment for a child that runs Flower or Ray: neither may post usage events (the
#: benchmarks run offline, and a network call would land inside a timing)
NO_TELEMETRY = {"FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------
def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and the seconds it took (time.perf_counter)."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def call_times(
    fn: Callable[[], object],
    reps: int,
    *,
    inner: int = 1,
    warmup: bool = True,
    collect: bool = False,
) -> list[float]:
    """Seconds per call of ``fn``, ``reps`` times.

    ``inner`` calls are timed together and divided, for calls too short for the clock;
    ``warmup`` makes one untimed call first (lazy imports, caches, first-touch pages);
    ``collect`` runs the garbage collector before each timing, so that one call does not
    pay for the previous one's garbage.
    """
    if warmup:
        fn()
    out = []
    for _ in range(reps):
        if collect:
            gc.collect()
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        out.append((time.perf_counter() - t) / inner)
    return out


def median_time(fn: Callable[[], object], reps: int, inner: int = 1) -> float:
    """Median seconds of a call after a warm-up: the typical cost on a shared machine."""
    return statistics.median(call_times(fn, reps, inner=inner))


def best_time(fn: Callable[[], object], reps: int) -> float:
    """Fastest of ``reps`` calls, each after a garbage collection: the cost with the least
    noise, for stages whose typical cost is mostly the machine's."""
    return min(call_times(fn, reps, warmup=False, collect=True))


def time_into(real: Callable[..., Any], record: Callable[[float], None]) -> Callable[..., Any]:
    """``real`` wrapped so that every call's seconds go to ``record``, even when it raises.

    For patching a framework's function (or a class's method: the wrapper passes ``self``
    through) to time one phase from the inside without changing what it does.
    """

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            record(time.perf_counter() - t)

    return wrapper


def steady(values: Sequence[float]) -> Sequence[float]:
    """The values after the first (which pays lazy one-time costs), if there are others."""
    return values[1:] if len(values) > 1 else values


def steady_median(values: Sequence[float]) -> float:
    """Median of :func:`steady`: the per-round figure every script reports."""
    return statistics.median(steady(values))


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds of this process (all threads) or, with RUSAGE_CHILDREN, of
    its waited-for children: CPU, unlike wall time, is not inflated by a busy neighbour."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------------------
# /proc: processes the benchmark started, their memory and CPU
# --------------------------------------------------------------------------------------
def proc_stat_fields(pid: int | str) -> list[str] | None:
    """``/proc/PID/stat`` after the command name: state, ppid, pgrp, session, ... (the name
    may hold spaces and parentheses, so it is cut at the last ')'); None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def proc_kb(path: str, key: str) -> int | None:
    """The kB figure of the line starting with ``key`` in a /proc status-like file (VmRSS:,
    VmHWM:, Pss:); None where the file or the line is missing (the process has gone)."""
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return None


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid``: a child started with ``start_new_session`` and
    everything it spawned (Ray's daemons and workers included), found without any name."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = proc_stat_fields(entry.name)
            with contextlib.suppress(IndexError, ValueError):
                if fields is not None and int(fields[3]) == sid:
                    members.append(int(entry.name))
    return members


def kill_session(sid: int) -> None:
    """SIGKILL whatever is left of session ``sid``: exactly the processes of that run."""
    for pid in session_members(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Ticker:
    """A daemon thread that calls ``tick`` every ``period_s`` until :meth:`stop`, or until
    ``tick`` returns False (what it samples has gone). ``wait_first``: the first call comes
    after one period rather than at once. Samplers of a child's memory and CPU hold one."""

    def __init__(
        self, period_s: float, tick: Callable[[], bool | None], *, wait_first: bool = False
    ) -> None:
        self.period_s, self.tick, self.wait_first = period_s, tick, wait_first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        if self.wait_first and self._stop.wait(self.period_s):
            return
        while self.tick() is not False and not self._stop.wait(self.period_s):
            pass

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout_s)


# --------------------------------------------------------------------------------------
# A function in a fresh interpreter, spec and result as JSON
# --------------------------------------------------------------------------------------
@dataclass
class ChildRun:
    """What :func:`run_json_child` saw: ``status`` is "ok", "failed (exit N)" or "timed out
    after N s"; ``result`` is the child's JSON (only when ok), ``log_tail`` its last output
    lines (only when not)."""

    status: str
    seconds: float
    result: dict[str, Any] | None = None
    log_tail: list[str] = field(default_factory=list)


def run_json_child(
    module: str,
    function: str,
    spec: dict[str, Any],
    work: Path,
    *,
    timeout: float,
    pythonpath: Sequence[Path] = (),
    env: dict[str, str] | None = None,
    watch: Callable[[int], Callable[[], None]] | None = None,
    tail: int = 20,
) -> ChildRun:
    """Run ``module.function(spec_path)`` in a new interpreter, in its own session; never
    raises for a failed run.

    A framework run in its own process and session starts from a clean allocator, cannot
    leave threads or Ray daemons behind (the whole session is killed afterwards) and has
    memory that is its own to measure. The spec goes in ``work/spec.json`` with a "result"
    path added, where the child writes its JSON (:func:`child_entry` does both ends);
    stdout and stderr go to ``work/log.txt``. The child runs in this folder, which is first
    on its PYTHONPATH (then ``pythonpath``), so ``module`` is a benchmark module; Ray's
    workers inherit that path and can import the functions a ClientApp names.
    ``watch(pid)`` is called once the child runs and returns what to call when it has
    exited (a memory sampler's stop).
    """
    work.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "result": str(work / "result.json")}
    spec_path, log_path = work / "spec.json", work / "log.txt"
    spec_path.write_text(json.dumps(spec))
    paths = [str(HERE), *map(str, pythonpath), os.environ.get("PYTHONPATH", "")]
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(paths)}
    code = f"import sys, {module}; sys.exit({module}.{function}(sys.argv[1]))"
    t = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(spec_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=HERE,
            start_new_session=True,
        )
        stop_watching = watch(proc.pid) if watch else None
        status = "ok"
        try:
            if proc.wait(timeout=timeout) != 0:
                status = f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
        if stop_watching:
            stop_watching()
        kill_session(proc.pid)  # whatever of this run is left (Ray's processes included)
        proc.wait()
    seconds = time.perf_counter() - t
    if status == "ok":
        return ChildRun(status, seconds, result=json.loads(Path(spec["result"]).read_text()))
    lines = log_path.read_text(errors="replace").splitlines()
    return ChildRun(status, seconds, log_tail=lines[-tail:])


def child_entry(spec_path: str, run: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """The child's end of :func:`run_json_child`: ``run(spec)``, its result written as JSON."""
    spec = json.loads(Path(spec_path).read_text())
    Path(spec["result"]).write_text(json.dumps(run(spec)))
    return 0


# --------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------
def fmt(value: Any, spec: str, missing: str = "-") -> str:
    """``format(value, spec)``, or ``missing`` for a figure that was not measured (None, NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def print_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "", *, pad: bool = False
) -> None:
    """A Markdown table, so a run's output pastes into benchmarks/README.md as it is.

    ``align``: one letter per column, "l" or "r" (default: all right, as figures are);
    ``pad``: right-justify every cell to its column's width (readable in a terminal too).
    """
    align = align or "r" * len(header)
    if pad:
        widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
        rule = [
            "-" * (w + 1) + (":" if a == "r" else "-") for w, a in zip(widths, align, strict=True)
        ]
        header = [h.rjust(w) for h, w in zip(header, widths, strict=True)]
        rows = [[c.rjust(w) for c, w in zip(r, widths, strict=True)] for r in rows]
    else:
        rule = ["---:" if a == "r" else "---" for a in align]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(rule) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


# --------------------------------------------------------------------------------------
# Command line, the run's record, JSON
# --------------------------------------------------------------------------------------
def make_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first line of the script's docstring."""
    return argparse.ArgumentParser(description=(doc or "").split("\n")[0])


def add_quick_flag(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--quick", action="store_true", help=help)


def add_json_flag(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--json", type=Path, default=None, help=help)


def add_seed_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0)


def plain_args(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags as JSON-ready values (paths as strings), to keep with the figures."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def write_json(
    path: Path, data: Any, *, default: Callable[[Any], Any] | None = None, end: str = ""
) -> None:
    path.write_text(json.dumps(data, indent=2, default=default) + end)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file (a run's metrics, journal or audit log); none if the
    file is missing (the run failed before writing it)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class RunClock:
    """A whole benchmark run's wall time and the machine's load around it: on a shared
    machine the load average at the start and the end says how far to trust the figures."""

    started: float = field(default_factory=time.perf_counter)
    load_start: float = field(default_factory=lambda: os.getloadavg()[0])

    def machine(self, **versions: str) -> dict[str, Any]:
        return {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            **versions,
            "load_avg_start": self.load_start,
        }

    def finish(
        self, results: dict[str, Any], json_path: Path | None, default: Callable[[Any], Any]
    ) -> None:
        """Print the total and the load, record both, write ``results`` if asked."""
        wall = time.perf_counter() - self.started
        results["wall_s"] = wall
        results["machine"]["load_avg_end"] = os.getloadavg()[0]
        print(
            f"\ntotal {wall:.0f} s; load average at start {self.load_start:.2f}, at the end "
            f"{os.getloadavg()[0]:.2f}"
        )
        if json_path:
            write_json(json_path, results, default=default)
            print(f"wrote {json_path}")


def compose_simulate(overrides: Sequence[str]) -> Any:
    """The config ``fedops simulate OVERRIDES`` would run (scenarios on the search path),
    not yet validated: a script may want validate's refusal as a figure."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from fedops.config.hydra_app import CONFIG_DIR, SCENARIO_DIR, register
    from fedops.runtime.simulate_settings import SimulateConfig

    register()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(
            config_name="simulate",
            overrides=[f"hydra.searchpath=[file://{SCENARIO_DIR}]", *overrides],
        )
    settings = OmegaConf.to_object(cfg)
    assert isinstance(settings, SimulateConfig)
    return settings
