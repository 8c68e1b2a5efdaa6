"""A federation of 100,000 Synthetic(1,1) clients on one machine: seconds per round, peak RSS.

Runs ``fedops simulate`` itself, the command a user types (the default vectorized backend),
in a fresh interpreter and session, and prints one row per run: clients in the federation,
clients trained per round, the data's rows and bytes, seconds per round (every round's
``duration_s`` from the run's metrics.jsonl), the wall time (start-up, data generation and
plots included) and the process's peak resident memory (its own ``ru_maxrss`` at exit, from
``wait4``; while it runs, VmHWM sampled from /proc, which is what is left when a run is
killed at ``--timeout``) and its CPU seconds (user + system, from the same ``wait4``: on a
shared machine the wall times stretch with the load, the CPU time much less).

Before that it shows what the federation is made of: the Python objects the garbage
collector tracks after building it, at two sizes. Every client's rows are slices of one
flat array (``fedops.data.FederatedData``: arrays plus offsets), so the count does not grow
with the clients.

    python benchmarks/scale.py                                    # 100,000 clients, 5 rounds
    python benchmarks/scale.py --clients 100000 --clients-per-round 10000
    python benchmarks/scale.py --clients 10000 --rounds 3
    python benchmarks/scale.py --quick                            # 200 clients, 2 rounds
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness import (
    RunClock,
    Ticker,
    add_json_flag,
    add_quick_flag,
    add_seed_flag,
    fmt,
    kill_session,
    make_parser,
    plain_args,
    print_table,
    proc_kb,
    read_jsonl,
    steady,
)

FEATURES = 60  # Synthetic(1,1)'s defaults (fedops/configs/dataset/synthetic.yaml)


def simulate_args(args: Any, clients: int, per_round: int | None, run_dir: Path) -> list[str]:
    """The ``fedops simulate`` overrides of one run (README: "Simulating thousands of
    clients", the Synthetic line)."""
    overrides = [
        "dataset=synthetic",
        f"simulation.num_clients={clients}",
        f"rounds={args.rounds}",
        f"client.epochs={args.epochs}",
        f"client.batch_size={args.batch_size}",
        f"client.lr={args.lr}",
        f"seed={args.seed}",
        f"hydra.run.dir={run_dir}",
    ]
    if per_round is not None:
        overrides.append(f"simulation.clients_per_round={per_round}")
    return overrides


def run_simulate(overrides: list[str], log: Path, timeout: float) -> dict[str, Any]:
    """``fedops simulate OVERRIDES`` in its own session; its status, wall and peak RSS."""
    sampled: list[int] = [0]
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedops", "simulate", *overrides],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,  # whatever a run writes beside it stays in the work folder
            start_new_session=True,
        )

        def sample() -> bool:
            kb = proc_kb(f"/proc/{proc.pid}/status", "VmHWM:")
            sampled[0] = max(sampled[0], kb or 0)
            return kb is not None

        ticker = Ticker(0.5, sample).start()
        status, usage = _wait(proc, timeout)
        ticker.stop(1.0)
    peak_kb = max(sampled[0], usage.ru_maxrss if usage is not None else 0)
    return {
        "status": status,
        "wall_s": time.perf_counter() - started,
        # user + system: unlike the wall time, not stretched by other work on the machine
        "cpu_s": usage.ru_utime + usage.ru_stime if usage is not None else None,
        "peak_rss_gb": peak_kb * 1024 / 1e9,
    }


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> tuple[str, Any]:
    """Reap ``proc`` with ``wait4`` (its own rusage: ru_maxrss is its peak RSS), killing its
    session past ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(code)
            return ("ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"), usage
        if time.monotonic() > deadline:
            kill_session(proc.pid)
            _, code, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(code)
            return f"timed out after {timeout:.0f} s", usage
        time.sleep(0.2)


def federation_objects(clients: int, seed: int) -> dict[str, Any]:
    """Objects the garbage collector tracks, before and after building ``clients`` clients'
    data (kept alive while counting), and what the data is: its arrays and their bytes."""
    from fedops.data.synthetic import synthetic

    synthetic(num_clients=1, alpha=1.0, beta=1.0, seed=seed)  # lazy one-time state, not counted
    gc.collect()
    before = len(gc.get_objects())
    data = synthetic(num_clients=clients, alpha=1.0, beta=1.0, seed=seed)
    gc.collect()
    after = len(gc.get_objects())
    arrays = {k: v for k in data.__slots__ if isinstance(v := getattr(data, k), np.ndarray)}
    return {
        "clients": clients,
        "new_objects": after - before,
        "arrays": len(arrays),
        "bytes": sum(a.nbytes for a in arrays.values()),
    }


def data_rows(clients: int, seed: int) -> int:
    """Rows (train + test) of Synthetic(1,1) for ``clients``: its device sizes are the first
    draw from the seed's generator (fedops.data.synthetic), so they cost nothing to know."""
    from fedops.data.synthetic import device_sizes

    return int(device_sizes(np.random.default_rng(seed), clients).sum())


def one_run(args: Any, clients: int, per_round: int | None, work: Path) -> dict[str, Any]:
    run_dir = work / f"run-{clients}-{per_round or 'all'}"
    load_start = os.getloadavg()
    result = run_simulate(
        simulate_args(args, clients, per_round, run_dir), work / "log.txt", args.timeout
    )
    rounds = [float(r["duration_s"]) for r in read_jsonl(run_dir / "metrics.jsonl")]
    rows = data_rows(clients, args.seed)
    return {
        **result,
        "clients": clients,
        "clients_per_round": per_round or clients,
        "rows": rows,
        "data_gb": rows * (FEATURES * 4 + 8) / 1e9,
        "round_s": rounds,
        "load_avg": [load_start[0], os.getloadavg()[0]],
        "log_tail": (work / "log.txt").read_text(errors="replace").splitlines()[-5:],
    }


def print_runs(runs: list[dict[str, Any]]) -> None:
    header = [
        "clients",
        "trained per round",
        "rows (train + test)",
        "data",
        "rounds done",
        "s/round (median after the 1st)",
        "s/round (range)",
        "wall",
        "CPU (whole run)",
        "peak RSS",
        "load avg (start, end)",
        "status",
    ]
    rows = []
    for r in runs:
        times = r["round_s"]
        rows.append(
            [
                f"{r['clients']:,}",
                f"{r['clients_per_round']:,}",
                f"{r['rows']:,}",
                f"{r['data_gb']:.2f} GB",
                str(len(times)),
                fmt(float(np.median(steady(times))) if times else None, ".1f"),
                f"{min(times):.1f}\N{EN DASH}{max(times):.1f}" if times else "-",
                f"{r['wall_s']:.0f} s",
                fmt(r["cpu_s"], ".0f") + " s",
                f"{r['peak_rss_gb']:.2f} GB",
                "{:.1f}, {:.1f}".format(*r["load_avg"]),
                r["status"],
            ]
        )
    print_table(header, rows, "r" * (len(header) - 1) + "l")


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--clients", type=int, nargs="+", default=[100_000])
    parser.add_argument(
        "--clients-per-round", type=int, nargs="+", default=[0], help="0: every client"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    parser.add_argument("--probe", type=int, nargs=2, default=[1_000, 10_000])
    parser.add_argument("--work", type=Path, default=None, help="default: a temporary folder")
    add_quick_flag(parser, "200 clients, 2 rounds, probes at 100 and 200 (a smoke test)")
    add_json_flag(parser)
    add_seed_flag(parser)
    args = parser.parse_args()
    if args.quick:
        args.clients, args.rounds, args.probe = [200], 2, [100, 200]
    clock = RunClock()
    print(f"Scale: Synthetic(1,1), {os.cpu_count()} CPUs, load average {clock.load_start:.2f}")
    probes = [federation_objects(n, args.seed) for n in args.probe]
    print("\nThe federation in Python objects (tracked by gc, after building it):\n")
    print_table(
        ["clients", "new Python objects", "numpy arrays", "bytes"],
        [
            [f"{p['clients']:,}", str(p["new_objects"]), str(p["arrays"]), f"{p['bytes']:,}"]
            for p in probes
        ],
    )
    work = args.work or Path(__import__("tempfile").mkdtemp(prefix="fedops-scale-"))
    runs = []
    for clients in args.clients:
        for per_round in args.clients_per_round:
            sub = work / f"{clients}-{per_round}"
            sub.mkdir(parents=True, exist_ok=True)
            runs.append(one_run(args, clients, per_round or None, sub))
    print(
        f"\n`fedops simulate dataset=synthetic rounds={args.rounds} client.epochs={args.epochs} "
        f"client.batch_size={args.batch_size} client.lr={args.lr}` per run:\n"
    )
    print_runs(runs)
    for r in runs:
        if r["status"] != "ok":
            print(f"\n{r['clients']:,} clients {r['status']}:", *r["log_tail"], sep="\n  ")
    results = {"args": plain_args(args), "probes": probes, "runs": runs, "machine": clock.machine()}
    clock.finish(results, args.json, default=str)
    return 0 if all(r["status"] == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
