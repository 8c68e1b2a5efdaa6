"""fedops' simulator against Flower's simulation runtime, same workload, in one run.

The issue's goal: at 1000 clients per round, fedops >= 20x faster per round than
Flower's simulation (``flwr[simulation]``, Ray backend) at equal accuracy (+-1 point),
with >= 5x lower peak memory. Both frameworks run the same federation:

* data: FedProx's Synthetic(1, 1) from ``fedops.data.synthetic`` (seed 0), one
  partition per client, generated once per framework run;
* model: logistic regression ``nn.Sequential(nn.Flatten(), nn.Linear(60, 10))``,
  the same initial weights (``torch.manual_seed(seed)`` before building it);
* local training: 1 epoch of SGD, batch 10, lr 0.01, rows shuffled with the same
  per-(seed, round, client) seed fedops uses, so both run the same computation;
* every client trains and evaluates every round; FedAvg weighted by examples;
* accuracy: example-weighted accuracy of the final global model over every client's
  test rows, computed by this script from each framework's final parameters.

fedops runs through ``fedops.simulation.engine.run_simulation`` (vectorized backend,
run store with checkpoints and metrics), Flower through ``flwr.simulation.run_simulation``
with a ServerApp driving Flower's own ``flwr.serverapp.strategy.FedAvg`` and a ClientApp
(Message API) on Ray virtual clients. Each framework run is its own subprocess; a
background thread here sums the RSS (and PSS) of that process's whole tree (driver,
Ray's GCS/raylet/agents, Ray workers) from /proc, so peaks never mix.

    python benchmarks/vs_flower.py                      # --clients 100 1000 --rounds 3
    python benchmarks/vs_flower.py --clients 50 --rounds 2 --timeout 300

Configurations, one subprocess each per size: fedops with torch's default threads and with
1 thread (``--fedops-threads 0 1``); Flower with ``client_resources.num_cpus`` 1 and 0.5 per
virtual client on ``ray.init(num_cpus=2)``, i.e. 2 and 4 actors (``--flower-client-cpus 1 0.5``).

Per-round time excludes one-time start-up, reported separately: for fedops, from the
``run_simulation`` call to the round-0 checkpoint; for Flower, from the ``run_simulation``
call until Ray is up and warm-up queries (4 per actor) came back. "s/round" is the median
of rounds 2..R; round 1 (lazy one-time costs in both frameworks) is shown on its own.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from harness import (
    NO_TELEMETRY,
    add_seed_flag,
    fmt,
    make_parser,
    print_table,
    run_json_child,
    steady_median,
)
from vs_flower_parts.memory import TreeMemory
from vs_flower_parts.shared import global_accuracy, test_rows

FRAMEWORKS = ("fedops", "flower")


def run_child(framework: str, spec: dict, timeout: float, work: Path) -> dict:
    """Run one framework at one size in a subprocess, sampling its process tree's memory;
    never raises for a failed run."""
    watched: list[TreeMemory] = []

    def watch(pid: int):  # type: ignore[no-untyped-def]
        watched.append(TreeMemory(pid))
        watched[0].start()
        return watched[0].stop

    load0 = os.getloadavg()[0]
    run = run_json_child(
        "vs_flower_parts.child",
        "child_main",
        {**spec, "framework": framework, "work_dir": str(work)},
        work,
        timeout=timeout,
        env=NO_TELEMETRY,  # no network: Flower would post usage events
        watch=watch,
        tail=25,
    )
    mem = watched[0]
    result = {
        "status": run.status,
        "wall_s": run.seconds,
        "peak_rss_mb": mem.peak_rss_kb / 1024,
        "peak_pss_mb": mem.peak_pss_kb / 1024,
        "max_procs": mem.max_procs,
        "mem_source": mem.source,
        "load_avg": (load0, os.getloadavg()[0]),
    }
    if run.result is not None:
        result.update(run.result)
        # Scored here, after the child has exited: neither framework's peak memory
        # includes the test rows this script needs for the check.
        params = {k: np.asarray(v, dtype=np.float32) for k, v in result.pop("params").items()}
        result["accuracy"] = global_accuracy(params, *test_rows(spec["clients"], spec["seed"]))
    else:
        result["log_tail"] = run.log_tail
    return result


def _variants(args: argparse.Namespace, torch_threads: int) -> list[tuple[str, str, dict]]:
    """(framework, label, spec overrides) for every configuration to run at every size."""
    out = []
    if "fedops" in args.frameworks:
        for t in args.fedops_threads:
            label = f"fedops, torch threads {t or torch_threads}{'' if t else ' (default)'}"
            out.append(("fedops", label, {"fedops_threads": t}))
    if "flower" in args.frameworks:
        for c in args.flower_client_cpus:
            actors = int(args.cpus / c)
            out.append(
                (
                    "flower",
                    f"Flower, num_cpus {c:g}/client ({actors} actors)",
                    {"flower_client_cpus": c, "flower_actors": actors},
                )
            )
    return out


def _print_run(r: dict) -> None:
    if r["status"] != "ok":
        print(f"  {r['label']} {r['status']}; last log lines:", flush=True)
        for line in r["log_tail"]:
            print(f"    {line}")
        return
    print(
        f"  startup {r['startup_s']:.1f} s, rounds "
        + ", ".join(f"{s:.2f}" for s in r["rounds_s"])
        + f" s, teardown {r['teardown_s']:.1f} s, data {r['data_s']:.1f} s, "
        f"wall {r['wall_s']:.1f} s; peak RSS {r['peak_rss_mb']:.0f} MB "
        f"(PSS {r['peak_pss_mb']:.0f} MB, up to {r['max_procs']} processes); "
        f"accuracy {r['accuracy']:.4f} (framework's own per round: "
        + ", ".join(f"{v:.4f}" for v in r["reported_accuracy"].values())
        + f"); 1-min load average {r['load_avg'][0]:.1f} -> {r['load_avg'][1]:.1f}",
        flush=True,
    )
    if r.get("warmup_errors"):
        print(f"  ({r['warmup_errors']} warm-up queries failed)", flush=True)


def _accuracy_gap(f: dict, o: dict) -> str:
    if f["rounds"] == o["rounds"]:
        return f"{100 * (f['accuracy'] - o['accuracy']):+.2f}"
    # Fewer Flower rounds: compare both frameworks' own (same-metric) accuracy at that round.
    fl = f["reported_accuracy"][str(f["rounds"])]
    fo = o["reported_accuracy"][str(f["rounds"])]
    return f"{100 * (fl - fo):+.2f} (after round {f['rounds']})"


def run_row(r: dict) -> list[str]:
    ok = r["status"] == "ok"
    r["s_per_round"] = steady_median(r["rounds_s"]) if ok else None
    status = "" if ok else f" **{r['status']}**"
    return [
        str(r["clients"]),
        f"{r['label']}{status}",
        str(r["rounds"]),
        fmt(r.get("startup_s"), ".1f"),
        fmt(r["rounds_s"][0] if ok else None, ".2f"),
        fmt(r["s_per_round"], ".3f"),
        f"{r['peak_rss_mb']:.0f}",
        f"{r['peak_pss_mb']:.0f}",
        fmt(r.get("accuracy"), ".4f"),
    ]


def ratio_rows(rows: list[dict], n: int) -> list[list[str]]:
    """Every Flower configuration against every fedops one at ``n`` clients."""
    flowers = [r for r in rows if r["clients"] == n and r["framework"] == "flower"]
    fedopses = [r for r in rows if r["clients"] == n and r["framework"] == "fedops"]
    out = []
    for f in flowers:
        for o in fedopses:
            if f["status"] != "ok" or o["status"] != "ok":
                why = f["status"] if f["status"] != "ok" else "fedops " + o["status"]
                out.append([str(n), f["label"], o["label"], f"- ({why})", "-", "-", "-"])
                continue
            out.append(
                [
                    str(n),
                    f["label"],
                    o["label"],
                    f"{f['s_per_round'] / o['s_per_round']:.1f}x",
                    f"{f['peak_rss_mb'] / o['peak_rss_mb']:.1f}x",
                    f"{f['peak_pss_mb'] / o['peak_pss_mb']:.1f}x",
                    _accuracy_gap(f, o),
                ]
            )
    return out


def print_tables(rows: list[dict], clients: list[int]) -> None:
    print()
    header = ["clients", "framework", "rounds", "startup s", "round 1 s", "s/round"]
    header += ["peak RSS MB", "peak PSS MB", "final accuracy"]
    print_table(header, [run_row(r) for r in rows], "rl" + "r" * 7)
    print()
    print_table(
        [
            "clients",
            "Flower",
            "fedops",
            "Flower s/round / fedops s/round",
            "Flower RSS / fedops RSS",
            "Flower PSS / fedops PSS",
            "accuracy Flower - fedops (points)",
        ],
        [row for n in clients for row in ratio_rows(rows, n)],
        "rllrrrr",
    )


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[int]]:
    """The flags, and Flower's rounds for each size (one value, or one per --clients)."""
    parser = make_parser(__doc__)
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--flower-rounds",
        type=int,
        nargs="+",
        default=None,
        help="Flower's rounds per size (one value, or one per --clients); default --rounds",
    )
    parser.add_argument("--timeout", type=float, default=1200.0, help="s per run (one size)")
    add_seed_flag(parser)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="Ray's num_cpus")
    parser.add_argument(
        "--flower-client-cpus",
        type=float,
        nargs="+",
        default=[1.0, 0.5],
        help="Ray num_cpus per virtual client, one Flower run each (actors = cpus / this)",
    )
    parser.add_argument(
        "--fedops-threads",
        type=int,
        nargs="+",
        default=[0, 1],
        help="torch threads in the fedops process, one fedops run each (0: torch's default)",
    )
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    args = parser.parse_args(argv)
    flower_rounds = args.flower_rounds or [args.rounds]
    if len(flower_rounds) == 1:
        flower_rounds = flower_rounds * len(args.clients)
    if len(flower_rounds) != len(args.clients):
        parser.error("--flower-rounds takes one value or one per --clients")
    return args, flower_rounds


def run_all(args: argparse.Namespace, flower_rounds: list[int], torch_threads: int) -> list[dict]:
    """Every configuration at every size, each in its own subprocess, printed as it ends."""
    variants = _variants(args, torch_threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vs_flower_") as tmp:
        for n, f_rounds in zip(args.clients, flower_rounds, strict=True):
            for k, (framework, label, overrides) in enumerate(variants):
                rounds = f_rounds if framework == "flower" else args.rounds
                spec = {
                    "clients": n,
                    "rounds": rounds,
                    "seed": args.seed,
                    "lr": 0.01,
                    "batch": 10,
                    "timeout": args.timeout,
                    "cpus": args.cpus,
                    **overrides,
                }
                print(f"\n[{n} clients] {label}, {rounds} rounds ...", flush=True)
                r = run_child(framework, spec, args.timeout, Path(tmp) / f"{n}-{k}-{framework}")
                r.update(clients=n, framework=framework, label=label, rounds=rounds)
                _print_run(r)
                rows.append(r)
    return rows


def main(argv: list[str] | None = None) -> int:
    args, flower_rounds = parse_args(argv)

    import flwr
    import ray
    import torch

    print(
        f"Synthetic(1,1), logistic regression 60->10, 1 local epoch, batch 10, lr 0.01 SGD, "
        f"all clients train and evaluate every round, FedAvg by examples.\n"
        f"fedops (vectorized backend) vs flwr {flwr.__version__} run_simulation on Ray "
        f"{ray.__version__} (ray.init num_cpus={args.cpus}); torch {torch.__version__}; "
        f"{os.cpu_count()} CPUs here; load average {os.getloadavg()[0]:.2f} at start.",
        flush=True,
    )
    rows = run_all(args, flower_rounds, torch.get_num_threads())
    print_tables(rows, args.clients)
    return 0


if __name__ == "__main__":
    sys.exit(main())
