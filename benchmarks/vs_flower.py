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

``--model cnn`` (issue 22): the same comparison on an image model, default 100 clients: the
two-conv CNN on generated 28x28 single-channel images of ``vs_floor_cnn.py`` (its ``cnn`` and
``images``, imported: class templates shifted and scaled per client plus noise), 1 epoch of
SGD, batch 32, lr 0.05, rows shuffled with fedops' per-(seed, round, client) seed on both
sides. Besides fedops and Flower it runs, in a child per ``--fedops-threads`` value, that
script's plain per-client PyTorch loop and its compute floor (one pass of the same training
rows through one model in batches of 256), and prints fedops against each: the goals are
Flower / fedops >= 3x per round, fedops <= 0.4x the loop and <= 1.5x the floor, accuracy
equal within 2 points.

    python benchmarks/vs_flower.py --model cnn --clients 100 --rounds 4
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

FRAMEWORKS = ("fedops", "flower", "loop")  # "loop": the CNN's plain loop and floor


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
        if "params" in result:  # the loop child scores itself
            params = {k: np.asarray(v, dtype=np.float32) for k, v in result.pop("params").items()}
            rows = test_rows(spec["clients"], spec["seed"], spec["model"])
            result["accuracy"] = global_accuracy(params, *rows, spec["model"])
    else:
        result["log_tail"] = run.log_tail
    return result


def _variants(args: argparse.Namespace, torch_threads: int) -> list[tuple[str, str, dict]]:
    """(framework, label, spec overrides) for every configuration to run at every size."""
    out = []
    if "fedops" in args.frameworks:
        for t in args.fedops_threads:
            for w in args.fedops_workers:
                # simulation.threads = t: 0 is torch's default, 1 fedops' own default;
                # simulation.workers = w: threads training a round's clients side by side
                label = (
                    f"fedops, torch threads {t or torch_threads}{'' if t else ' (torch default)'}"
                    f", {w} worker{'s' if w > 1 else ''}"
                )
                out.append(("fedops", label, {"fedops_threads": t, "fedops_workers": w}))
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
    if "loop" in args.frameworks and args.model == "cnn":
        for t in args.fedops_threads:
            label = f"plain PyTorch loop, torch threads {t or torch_threads}"
            out.append(("loop", label, {"fedops_threads": t}))
    return out


def _print_run(r: dict) -> None:
    if r["status"] != "ok":
        print(f"  {r['label']} {r['status']}; last log lines:", flush=True)
        for line in r["log_tail"]:
            print(f"    {line}")
        return
    # the CNN's plain loop has no start-up to speak of
    phases = f"startup {r['startup_s']:.1f} s, rounds " if "startup_s" in r else "rounds "
    phases += ", ".join(f"{s:.2f}" for s in r["rounds_s"]) + " s, "
    if "floor_rounds_s" in r:
        phases += "floor " + ", ".join(f"{s:.2f}" for s in r["floor_rounds_s"]) + " s, "
    if "teardown_s" in r:
        phases += f"teardown {r['teardown_s']:.1f} s, "
    if "torch_threads" in r:
        phases += f"torch threads {r['torch_threads']}, "
    own = ""
    if "reported_accuracy" in r:
        own = " (framework's own per round: "
        own += ", ".join(f"{v:.4f}" for v in r["reported_accuracy"].values()) + ")"
    print(
        f"  {phases}data {r['data_s']:.1f} s, wall {r['wall_s']:.1f} s; "
        f"peak RSS {r['peak_rss_mb']:.0f} MB (PSS {r['peak_pss_mb']:.0f} MB, up to "
        f"{r['max_procs']} processes); accuracy {r['accuracy']:.4f}{own}; "
        f"1-min load average {r['load_avg'][0]:.1f} -> {r['load_avg'][1]:.1f}",
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
        fmt(r.get("peak_rss_mb"), ".0f"),
        fmt(r.get("peak_pss_mb"), ".0f"),
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


def _cnn_ratio(o: dict, b: dict) -> list[str]:
    """fedops run ``o`` against baseline ``b`` (Flower, the plain loop or the floor)."""
    kind = b["framework"]
    goal = {"flower": ">= 3x", "loop": "<= 0.4x", "floor": "<= 1.5x"}[kind]
    row = [str(o["clients"]), o["label"], b["label"]]
    if b["status"] != "ok" or o["status"] != "ok":
        return [*row, "-", "-", goal, "-"]
    speedup = b["s_per_round"] / o["s_per_round"]
    ratio = f"{speedup:.2f}x" if kind == "flower" else f"{1 / speedup:.2f}x"
    own_gap = f"{100 * (b['accuracy'] - o['accuracy']):+.2f}"
    gap = _accuracy_gap(b, o) if kind == "flower" else own_gap
    return [*row, f"{speedup:.2f}x", ratio, goal, gap]


def cnn_ratio_rows(rows: list[dict], n: int) -> list[list[str]]:
    """Every fedops configuration against every Flower one, and against the plain loop and
    the floor run with the same torch threads."""
    at_n = [r for r in rows if r["clients"] == n]
    out = []
    for o in (r for r in at_n if r["framework"] == "fedops"):
        for b in at_n:
            same_threads = b.get("spec_threads") == o.get("spec_threads")
            if b["framework"] == "flower" or (b["framework"] in ("loop", "floor") and same_threads):
                out.append(_cnn_ratio(o, b))
    return out


def print_cnn_ratios(rows: list[dict], clients: list[int]) -> None:
    print()
    print("Goals (issue 22): Flower / fedops >= 3x; fedops / loop <= 0.4x; fedops / floor <= 1.5x.")
    header = ["clients", "fedops", "against", "its s/round / fedops s/round"]
    header += ["goal figure (Flower / fedops, else fedops / it)", "goal"]
    header += ["accuracy it - fedops (points)"]
    print_table(header, [row for n in clients for row in cnn_ratio_rows(rows, n)], "rllrrlr")


def print_tables(rows: list[dict], clients: list[int], model: str = "logreg") -> None:
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
    if model == "cnn":
        print_cnn_ratios(rows, clients)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[int]]:
    """The flags, and Flower's rounds for each size (one value, or one per --clients)."""
    parser = make_parser(__doc__)
    parser.add_argument("--model", choices=["logreg", "cnn"], default="logreg")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=None, help="100 1000; 100 for --model cnn"
    )
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
        help="fedops' simulation.threads, one fedops run each (0: torch's default; fedops' "
        "default is 1)",
    )
    parser.add_argument(
        "--fedops-workers",
        type=int,
        nargs="+",
        default=[2],
        help="fedops' simulation.workers (threads training a round's clients side by side), "
        "one fedops run each per --fedops-threads value (fedops' default is 2)",
    )
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    args = parser.parse_args(argv)
    args.clients = args.clients or ([100] if args.model == "cnn" else [100, 1000])
    flower_rounds = args.flower_rounds or [args.rounds]
    if len(flower_rounds) == 1:
        flower_rounds = flower_rounds * len(args.clients)
    if len(flower_rounds) != len(args.clients):
        parser.error("--flower-rounds takes one value or one per --clients")
    return args, flower_rounds


def _workload(model: str) -> tuple[float, int]:
    """(lr, batch) of the workload: the LR benchmark's, or ``vs_floor_cnn``'s for the CNN."""
    if model == "cnn":
        from vs_floor_cnn import BATCH, LR

        return LR, BATCH
    return 0.01, 10


def _floor_row(r: dict) -> dict:
    """The loop child's second figure as its own row: the compute floor (same process, so no
    memory figure of its own)."""
    from vs_floor_cnn import FLOOR_BATCH

    label = r["label"].replace("plain PyTorch loop", f"compute floor (batch {FLOOR_BATCH})")
    floor = {**r, "framework": "floor", "label": label, "peak_rss_mb": None, "peak_pss_mb": None}
    if r["status"] == "ok":
        floor.update(rounds_s=r["floor_rounds_s"], accuracy=r["floor_accuracy"])
    return floor


def run_all(args: argparse.Namespace, flower_rounds: list[int], torch_threads: int) -> list[dict]:
    """Every configuration at every size, each in its own subprocess, printed as it ends."""
    variants = _variants(args, torch_threads)
    lr, batch = _workload(args.model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vs_flower_") as tmp:
        for n, f_rounds in zip(args.clients, flower_rounds, strict=True):
            for k, (framework, label, overrides) in enumerate(variants):
                rounds = f_rounds if framework == "flower" else args.rounds
                spec = {
                    "clients": n,
                    "rounds": rounds,
                    "seed": args.seed,
                    "lr": lr,
                    "batch": batch,
                    "model": args.model,
                    "timeout": args.timeout,
                    "cpus": args.cpus,
                    **overrides,
                }
                print(f"\n[{n} clients] {label}, {rounds} rounds ...", flush=True)
                r = run_child(framework, spec, args.timeout, Path(tmp) / f"{n}-{k}-{framework}")
                r.update(clients=n, framework=framework, label=label, rounds=rounds)
                r["spec_threads"] = overrides.get("fedops_threads")
                _print_run(r)
                rows.append(r)
                if framework == "loop":
                    rows.append(_floor_row(r))
    return rows


def main(argv: list[str] | None = None) -> int:
    args, flower_rounds = parse_args(argv)

    import flwr
    import ray
    import torch

    lr, batch = _workload(args.model)
    if args.model == "cnn":
        what = "generated 28x28 images, CNN Conv(1->8)-pool-Conv(8->16)-pool-Linear(784->10)"
    else:
        what = "Synthetic(1,1), logistic regression 60->10"
    print(
        f"{what}, 1 local epoch, batch {batch}, lr {lr} SGD, "
        f"all clients train and evaluate every round, FedAvg by examples.\n"
        f"fedops (vectorized backend) vs flwr {flwr.__version__} run_simulation on Ray "
        f"{ray.__version__} (ray.init num_cpus={args.cpus}); torch {torch.__version__}; "
        f"{os.cpu_count()} CPUs here; load average {os.getloadavg()[0]:.2f} at start.",
        flush=True,
    )
    rows = run_all(args, flower_rounds, torch.get_num_threads())
    print_tables(rows, args.clients, args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
