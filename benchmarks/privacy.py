"""Privacy cost per round: every DP mode (and SecAgg+) against no DP, in one run.

    python benchmarks/privacy.py                  # full run, about 2.5 minutes on 2 cores
    python benchmarks/privacy.py --quick          # about 30 s (fewer rounds, a smaller (c))
    python benchmarks/privacy.py --json out.json  # also write every figure as JSON

The issue asks for "the overhead of each mode per round as a ratio to no-DP". Modes, each one
set of Hydra overrides on top of the same composed ``simulate`` config:

* ``none``: no DP, FedAvg (the baseline of every table);
* ``privacy=central``: DP-FedAvg, fixed clip norm (clip 1.0, σ = 1.0, δ = 1e-5), accounted as
  Poisson sampling at q = m/N (PLD, RDP beside it), on the baseline's cohort (see below);
* ``privacy=central`` as deployed: the same, with the cohort drawn by Poisson sampling from the
  OS's CSPRNG (its size varies round to round: Binomial(N, q), so the paired ratio also holds
  the extra or missing clients' training);
* ``privacy=central_adaptive``: the same with adaptive clipping (Andrew et al. 2021);
* ``privacy=distributed secagg=secaggplus``: clients clip and add Skellam noise before masking;
* ``secagg=secaggplus``: SecAgg+ without DP, for comparison;
* ``privacy=central`` with numpy's BLAS limited to 1 thread (threadpoolctl) while its slots run
  (workload (b) only, not with --quick): DP's clipping took norms with ``np.vdot``, which
  OpenBLAS ran on several threads, and on a shared 2-core machine that made a call anywhere
  from 1x to ~100x slower; norms now avoid BLAS, and this row checks it stays so;
* ``privacy=local``: DP-SGD on every site (batched: ``fedops.simulation.local_dp_sites``); its
  own table (c) against ``none``, both on the default (vectorized) backend.
A mode whose config ``validate`` refuses (not implemented yet, or not with this backend) is
printed as "not available yet" with validate's message; a mode that fails while running is
printed with its error.

Workloads (``+scenario=fleet_1000`` with ``simulation.clients_per_round=100``): FedProx's
Synthetic(1,1), 1000 clients (power-law sizes), 100 sampled per round (q = 0.1), 1 local
epoch of SGD (batch 10, lr 0.01), 1 torch thread, seed 0, evaluation on the round's sampled
clients. (a) ``logreg``: logistic regression 60 -> 10 (610 parameters), vectorized backend,
12 rounds; (b) ``mlp``: ``model=mlp model.hidden=1408`` (99,978 parameters), vectorized, 7
rounds; (c) ``local``: (a)'s model on the default backend, 4 rounds (--quick: 20 clients
per round). Every mode of a workload starts from the same model. DP draws its own cohort
(Poisson from the OS's CSPRNG; distributed DP m of N from it), which would make rounds
unpaired (the fleet's client sizes follow a power law): so every DP mode except "as deployed"
is handed the baseline's cohort (``sample_clients`` with the run seed, m = 100) by replacing its
privacy object's ``sample`` for the benchmark only; its accounting is unchanged (q = m/N, fixed
denominator m). Rounds are then paired across modes.

How: each mode is a real ``fedops.simulation.engine.run_simulation`` on a config composed by
Hydra (as ``fedops simulate`` does), run dirs in a temporary directory. All modes of a workload
run in one process, each on its own thread, interleaved *round by round*: a baton lets exactly
one simulation work at a time (set-up, then round 1 of every mode, then round 2, ...), and the
order of the modes rotates every round, so drift of this shared machine hits every mode alike.
The data are generated once and shared; the progress display and the end-of-run plots are
switched off (neither is inside a round). Timed per round with time.perf_counter:
``RoundDriver.run_round`` (the round), and inside it the fit phase (``RoundDriver._fit``, plain or
SecAgg+'s plug-in: training and collection, for SecAgg+ the whole protocol), the aggregation
(``FedAvg.aggregate_fit``, or the privacy object's ``aggregate``: central DP's clip + noise +
mean) and the accounting (the privacy object's ``begin_round`` + ``spend`` + ``metrics``, and the
ledger's commit ``RunStore.spend_privacy``: ε by dp_accounting's PLD, the no-amplification PLD
and RDP beside it, each once per round).

Printed per workload and mode: s/round = median of rounds 2..R (round 1 is warm-up); ratio to
none = median over rounds 2..R of (mode's round / none's round), +ms = median of the paired
differences; the breakdown; final eval accuracy (example-weighted over the last round's
sampled clients), ε (PLD and RDP, δ = 1e-5), the mean cohort size and the clip norm from the
run's metrics.jsonl.

Then where the overhead comes from, timed on its own (median of --reps, the functions
interleaved, after a warm-up): (d) ``fedops.core.privacy.central.private_mean`` for 100 client
updates of each model's size (fixed and adaptive clipping), beside ``FedAvg.aggregate_fit`` of
the same updates (what it replaces), with numpy's BLAS as it is and limited to 1 thread
(``--blas-threads 1`` runs the whole benchmark so); (e) one ε computation after 1 .. 1000
rounds at q = 0.1, σ = 1 (``fedops.core.privacy.accountant``, its per-history cache bypassed:
every round's history is new): PLD (the headline; the one-round PLD is cached per event, so
this is what the driver pays every round), the no-amplification PLD and RDP, each of which the
driver computes once per round, and once the one-round PLD's construction (first round only).
The simulations clear that per-history cache at the start of every round, for the same reason.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Any

import numpy as np
import torch
from harness import RunClock, add_json_flag, add_quick_flag, add_seed_flag, make_parser, plain_args
from privacy_parts.modes import blas_threads, set_blas_threads, threadpool_limits
from privacy_parts.report import report
from privacy_parts.standalone import accountant_cost, server_dp_cost
from privacy_parts.workloads import run_workload, workloads


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = make_parser(__doc__)
    add_quick_flag(p, "fewer rounds and repeats (~30 s)")
    add_json_flag(p, "also write the results here")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--per-round", type=int, default=100, help="clients sampled per round")
    p.add_argument("--rounds", type=int, default=12, help="rounds of the logreg workload")
    p.add_argument("--mlp-rounds", type=int, default=7, help="rounds of the MLP workload")
    p.add_argument("--local-rounds", type=int, default=4, help="rounds of the local DP workload")
    p.add_argument(
        "--local-per-round",
        type=int,
        help="clients per round of the local DP workload (default: --per-round; --quick: 20)",
    )
    p.add_argument("--hidden", type=int, default=1408, help="MLP width (1408: 99,978 params)")
    add_seed_flag(p)
    p.add_argument(
        "--workloads",
        nargs="+",
        choices=("logreg", "mlp", "local"),
        default=["logreg", "mlp", "local"],
        help="which of (a) logreg, (b) mlp, (c) local to run",
    )
    p.add_argument(
        "--blas-threads",
        type=int,
        help="limit numpy's BLAS to this many threads for the whole run (default: as is)",
    )
    p.add_argument("--reps", type=int, default=5, help="repeats of the standalone timings")
    p.add_argument(
        "--accountant-rounds", type=int, nargs="+", default=[1, 10, 100, 1000], metavar="R"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.mlp_rounds, args.local_rounds, args.reps = 3, 2, 3, 2
        args.accountant_rounds = [1]
        args.local_per_round = args.local_per_round or 20
    args.local_per_round = args.local_per_round or args.per_round
    return args


def run_workloads(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every chosen workload, all its modes interleaved round by round; one line each."""
    data_cache: dict[str, Any] = {}
    done = []
    for w in (w for w in workloads(args) if w.name in args.workloads):
        print(f"{w.name}: {len(w.modes)} modes x {w.rounds} rounds ...", flush=True)
        r = run_workload(w, data_cache)
        done.append(r)
        line = ", ".join(
            f"{n} {s['median_s']:.3f} s" if "median_s" in s else f"{n} failed"
            for n, s in r["modes"].items()
        )
        print(f"  {line} [{r['wall_s']:.0f} s]", flush=True)
    return done


def server_dp_cells(done: list[dict[str, Any]], args: argparse.Namespace) -> list[dict]:
    """(d) for each workload's model (the local workload's is logreg's again)."""
    server_dp = []
    for r in done:
        shapes = r.pop("initial")
        if r["name"] != "local":  # the same model as logreg
            cell = server_dp_cost(shapes, args.per_round, args.reps)
            server_dp.append({"d": r["num_params"], "n": args.per_round, **cell})
    return server_dp


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.blas_threads:
        if threadpool_limits is None:
            raise SystemExit("--blas-threads needs threadpoolctl (pip install threadpoolctl)")
        set_blas_threads(args.blas_threads)  # for the whole process (the default of every mode)
    clock = RunClock()
    print(
        f"Privacy benchmark: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"load average {clock.load_start:.2f}; {blas_threads()}; modes interleaved round by round",
        flush=True,
    )
    done = run_workloads(args)
    print("server-side DP and accountant on their own ...", flush=True)
    server_dp = server_dp_cells(done, args)
    q = args.per_round / args.clients
    accountant = accountant_cost(args.accountant_rounds, q, args.reps)
    delta = next((s["delta"] for r in done for s in r["modes"].values() if s.get("delta")), 1e-5)
    results: dict[str, Any] = {
        "machine": clock.machine(torch=torch.__version__, numpy=np.__version__),
        "args": plain_args(args),
        "workloads": done,
        "server_dp": server_dp,
        "accountant": accountant,
        "sample_rate": q,
        "delta": delta,
        "blas": blas_threads(),
    }
    report(results)
    clock.finish(results, args.json, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
