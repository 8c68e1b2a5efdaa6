"""SecAgg+ cost: fedops against its crypto floor and against Flower's SecAgg+, in one run.

    python benchmarks/secagg.py                 # full run, about 5 minutes on 2 cores
    python benchmarks/secagg.py --quick         # about 1 minute
    python benchmarks/secagg.py --json out.json # also write every figure as JSON

Workload (both frameworks): n clients, d float32 parameters (a weight matrix plus a bias),
one round of SecAgg+ with neighbourhood degree k = 2*ceil(log2 n) and threshold k/2 + 1
(fedops' defaults; Flower gets ``num_shares = k + 1`` (its neighbourhood counts the client
itself) and ``reconstruction_threshold = k/2 + 1``), clip 1.0. Each client's "training" is a
fixed small update (one of 4 precomputed deltas), so only secure aggregation is timed. Every
round's result is decoded and checked against the true weighted mean (printed as max error).

(a) fedops against the crypto floor. The fedops round is driven in memory through the real
    state machines (``fedops.core.secagg``) with the real primitives (``fedops.crypto.Crypto``):
    * client time = SecAggClient() + advertise + share + encode_update + mask + unmask, summed
      per client and averaged over the clients that finished the round (every client is run
      and timed, none is sampled);
    * server time = SecAggServer() + setup_for + every receive_* and close_* + finish
      + decode_mean.
    The floor is the crypto work the protocol cannot avoid, timed on this machine with the
    same primitives (medians of repeated calls, times the count):
    * client: (k + 1) PRG expansions of d + 1 uint32 words (1 self mask, k pairwise masks;
      ``Crypto.expand``, AES-256-CTR), (k + 1) in-place numpy uint32 adds (mod 2^32), 2k
      raw X25519 exchanges (k share keys, k mask seeds) on already-parsed key objects, and
      the signatures a malicious coordinator makes necessary (Ed25519, ``cryptography``):
      2 signatures (its keys, the survivor set) and k + q verifications (its neighbours'
      keys, q = ⌊m/2⌋ + 1 of the committee of m = min(n, 64) over the survivor set). The
      ratio to the floor without them (the semi-honest protocol's floor) is printed too;
    * server: one expansion per survivor's self mask, one add per survivor's input and per
      self mask, and for each dropped client, per surviving neighbour: 1 X25519 exchange,
      1 expansion and 1 add (its pairwise mask).
    Not in the floor: quantization (encode_update), Shamir sharing, AES-GCM of the shares,
    key generation, key parsing, HKDF. Ratio = fedops / floor (the issue's goal: <= 2x).
    Dropouts (--dropout-cells, default n = 100 and 1000 at d = 100k): 5% of the clients drop
    at the masked-input stage: they shared their keys but never send a masked input, so the
    server must rebuild their mask keys and remove their pairwise masks (the recovery cost). A
    client vanishing after its masked input costs nothing extra: its self mask is removed like
    any survivor's.

(b) fedops against Flower's SecAgg+ (flwr 1.42), two ways:
    * in-process (sizes with n*d <= --flower-max-work, 1e8 by default: n = 1000 at d = 1M
      would take Flower several minutes and ~10 GB here; --flower-max-work 0 runs it too):
      Flower's real ``SecAggPlusWorkflow`` (server) and its
      ``secaggplus_mod`` on a ``ClientApp`` (NumPyClient via client_fn) exchange their real
      ``Message`` objects through a minimal in-memory ``Grid`` written here (no Ray, no network,
      one thread, like the fedops run). Client time = the ClientApp call for each of the 4
      stages, minus the inner ``fit`` call (the training and Flower's legacy FitIns/FitRes
      conversion around it); server time = the workflow's wall time minus all client time and
      the grid's message copies. Same n, k, threshold, clip, d and dropped clients as fedops.
      Flower's shamir splits each secret in 16-byte chunks on a thread pool; everything else
      runs on one thread.
    * Ray simulation (n = 100, d = 100k; skipped by --quick): ``flwr.simulation.run_simulation``
      with a ServerApp running ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`` and the
      ClientApp with ``secaggplus_mod``, against the same apps without secure aggregation
      (``default_fit_workflow``, no mod); 2 Ray actors (1 CPU each). The fit stage of each round
      is timed in the ServerApp; SecAgg+ cost = median over rounds 2..R of secagg minus plain.
      This includes Flower's per-message framework cost of the 3 extra round trips and runs
      the clients on 2 cores, so it is reported next to, not instead of, the in-process figure.
    Ratio = Flower / fedops (the issue's goal: fedops >= 10x faster).

(c) Bytes each client uploads per round. fedops: the real protobuf messages from
    ``fedops.wire.secagg.reply_to_proto`` (``SecAggReply.ByteSize()``, plus the masked vector's
    raw bytes and its TensorSpec), for the replies of the first clients of the round; if that
    module cannot be used, the sizes are computed from the message dataclasses' fields (4 bytes
    per integer) and the output says so. Flower: ``serde.recorddict_to_proto(reply).ByteSize()``
    of its real replies. Plain update = 4 * d bytes of float32.

Every size runs in a fresh (spawned) process, so each starts from the same allocator state
(whether numpy's large temporaries cost page faults depends on what ran before) and gives its
memory back; fedops at n = 1000, d = 1M holds 1000 masked vectors (4 GB) and is skipped, with
the reason printed, if the memory is not available. Timings use time.perf_counter after one
warm-up round of each framework in that process; the smallest size is repeated (median of
--reps), larger ones run once. The machine is shared: compare within a run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from harness import (
    RunClock,
    add_json_flag,
    add_quick_flag,
    make_parser,
    plain_args,
    steady_median,
    timed,
)
from secagg_parts.fedops_side import fedops_cell
from secagg_parts.flower_side import flower_available, flower_cell, flower_version
from secagg_parts.ray_side import run_ray
from secagg_parts.report import _fmt_d, _ms, print_summary, report
from secagg_parts.workload import mem_available_bytes


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in a new interpreter: every size starts from the same allocator state
    (numpy's temporaries cost page faults or not depending on what ran before) and gives its
    memory back when done."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


def run_fedops(args: argparse.Namespace) -> list[dict]:
    cells: list[dict] = []
    plan = [(n, d, 0.0) for d in args.params for n in args.clients]
    plan += [(n, d, args.dropout) for n, d in args.dropout_cells]
    for n, d, frac in plan:
        need = n * 4 * (d + 1) * 1.3 + (1 << 30)  # the server holds every masked vector
        if need > mem_available_bytes():
            why = f"needs ~{need / 1e9:.1f} GB, {mem_available_bytes() / 1e9:.1f} GB available"
            cells.append({"n": n, "d": d, "dropped": 0, "skipped": why})
            print(f"fedops n={n} d={_fmt_d(d)}: skipped ({why})", flush=True)
            continue
        reps = args.reps if n * d <= args.rep_limit else 1
        c, dt = timed(in_fresh_process, fedops_cell, n, d, frac, reps)
        cells.append(c)
        print(
            f"fedops n={n} d={_fmt_d(d)} dropped={c['dropped']}: client {_ms(c['client_s'])} ms "
            f"({c['client_ratio']:.2f}x floor), server {c['server_s']:.3f} s "
            f"({c['server_ratio']:.2f}x floor) [{dt:.1f} s]",
            flush=True,
        )
    return cells


def flower_inprocess(args: argparse.Namespace, fedops_cells: list[dict]) -> list[dict]:
    """Flower in-process at every fedops size it is asked for, each in a fresh process."""
    out: list[dict] = []
    for c in fedops_cells:
        n, d = c["n"], c["d"]
        if "skipped" in c or (c["dropped"] and (n, d) not in args.flower_dropout_cells):
            continue
        if args.flower_max_work and n * d > args.flower_max_work:
            why = (
                f"n*d above --flower-max-work {args.flower_max_work:.0e} (Flower needs minutes "
                "here at this size); --flower-max-work 0 runs it"
            )
            out.append({"n": n, "d": d, "dropped": c["dropped"], "skipped": why})
            print(f"Flower n={n} d={_fmt_d(d)} dropped={c['dropped']}: skipped ({why})", flush=True)
            continue
        frac = args.dropout if c["dropped"] else 0.0
        f, dt = timed(in_fresh_process, flower_cell, n, d, frac)
        f["fedops_client_s"], f["fedops_server_s"] = c["client_s"], c["server_s"]
        f["client_ratio"] = f["client_s"] / c["client_s"]
        f["server_ratio"] = f["server_s"] / c["server_s"]
        f["total_ratio"] = (n * f["client_s"] + f["server_s"]) / (n * c["client_s"] + c["server_s"])
        out.append(f)
        print(
            f"Flower n={n} d={_fmt_d(d)} dropped={f['dropped']}: client {_ms(f['client_s'])} ms "
            f"({f['client_ratio']:.1f}x fedops), server {f['server_s']:.3f} s "
            f"({f['server_ratio']:.1f}x fedops) [{dt:.1f} s]",
            flush=True,
        )
    return out


def flower_ray(args: argparse.Namespace, fedops_cells: list[dict]) -> dict[str, Any] | str:
    """Flower's Ray simulation, secagg and plain, against fedops' figure at the same size."""
    n, d = args.ray_size
    base = next(
        (
            c
            for c in fedops_cells
            if c["n"] == n and c["d"] == d and not c["dropped"] and "skipped" not in c
        ),
        None,
    )
    if base is None:
        return f"no fedops figure for n={n}, d={d} to compare with"
    ray: dict[str, Any] = {"n": n, "d": d, "rounds": args.ray_rounds}
    for mode in ("secagg", "plain"):
        print(
            f"Flower Ray simulation ({mode}, n={n}, d={_fmt_d(d)}, {args.ray_rounds} rounds)...",
            flush=True,
        )
        ray[mode] = run_ray(mode, n, d, args.ray_rounds, args.ray_timeout)
    if ray["secagg"]["status"] == "ok" and ray["plain"]["status"] == "ok":
        secagg, plain = steady_median(ray["secagg"]["fit_s"]), steady_median(ray["plain"]["fit_s"])
        ray["secagg_overhead_s"] = secagg - plain
        ray["fedops_total_s"] = n * base["client_s"] + base["server_s"]
        ray["ratio"] = ray["secagg_overhead_s"] / ray["fedops_total_s"]
    return ray


def run_flower(args: argparse.Namespace, fedops_cells: list[dict]) -> dict[str, Any] | str:
    if not flower_available():
        return "flwr is not installed (pip install 'flwr[simulation]')"
    out: dict[str, Any] = {"version": flower_version()}
    out["inprocess"] = flower_inprocess(args, fedops_cells)
    out["ray"] = "--quick or --no-ray" if args.no_ray else flower_ray(args, fedops_cells)
    return out


def bytes_table(fedops_cells: list[dict], flower: dict | str, method: str) -> dict[str, Any]:
    cells = []
    for c in fedops_cells:
        if "skipped" in c or c["dropped"] or not c.get("sizes"):
            continue
        b: dict[str, Any] = {"n": c["n"], "d": c["d"], "plain": 4 * c["d"], "fedops": c["sizes"]}
        b["fedops_total"] = sum(c["sizes"].values())
        b["fedops_ratio"] = b["fedops_total"] / b["plain"]
        if isinstance(flower, dict):
            f = next(
                (
                    x
                    for x in flower["inprocess"]
                    if x["n"] == c["n"]
                    and x["d"] == c["d"]
                    and not x.get("dropped")
                    and "skipped" not in x
                ),
                None,
            )
            if f:
                b["flower"] = f["sizes"]
                b["flower_total"] = sum(f["sizes"].values())
                b["flower_ratio"] = b["flower_total"] / b["plain"]
        cells.append(b)
    return {"method": method, "cells": cells}


def _pairs(values: list[str]) -> list[tuple[int, int]]:
    out = []
    for v in values:
        n, d = v.lower().split("x")
        out.append((int(n), int(float(d))))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = make_parser(__doc__)
    add_quick_flag(p, "d=100k only, Flower at n=100 only, no Ray (~1 min)")
    add_json_flag(p, "also write the results here")
    p.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--params", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dropout", type=float, default=0.05, help="fraction dropping in stage 3")
    p.add_argument(
        "--dropout-cells",
        nargs="*",
        default=["100x100000", "1000x100000"],
        help="NxD sizes also run with dropouts",
    )
    p.add_argument(
        "--flower-dropout-cells",
        nargs="*",
        default=["100x100000"],
        help="NxD sizes Flower also runs with dropouts",
    )
    p.add_argument("--reps", type=int, default=3, help="repetitions (median) of small sizes")
    p.add_argument(
        "--rep-limit", type=float, default=1e7, help="repeat only sizes with n*d <= this"
    )
    p.add_argument(
        "--flower-max-work",
        type=float,
        default=1e8,
        help="skip Flower in-process above this n*d (0: no limit)",
    )
    p.add_argument("--no-flower", action="store_true")
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--ray-size", default="100x100000", help="NxD of the Ray simulation")
    p.add_argument("--ray-rounds", type=int, default=3)
    p.add_argument("--ray-timeout", type=float, default=300)
    args = p.parse_args(argv)
    if args.quick:
        args.params = [100_000]
        args.dropout_cells = ["100x100000"]
        args.no_ray = True
        args.flower_max_work = 1e7
    args.dropout_cells = _pairs(args.dropout_cells)
    args.flower_dropout_cells = _pairs(args.flower_dropout_cells)
    args.ray_size = _pairs([args.ray_size])[0]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    clock = RunClock()
    print(
        f"SecAgg+ benchmark: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{mem_available_bytes() / 2**30:.1f} GiB available, Python {platform.python_version()}, "
        f"numpy {np.__version__}, load average {clock.load_start:.2f}; each size in a fresh "
        "process",
        flush=True,
    )
    fedops_cells = run_fedops(args)
    flower: dict[str, Any] | str = (
        "--no-flower" if args.no_flower else run_flower(args, fedops_cells)
    )
    done = [c for c in fedops_cells if "skipped" not in c]
    results = {
        "machine": clock.machine(numpy=np.__version__),
        "args": plain_args(args),
        "units": {str(c["d"]): c["units"] for c in done},
        "fedops": fedops_cells,
        "flower": flower,
        "bytes": bytes_table(fedops_cells, flower, done[0]["size_method"] if done else "-"),
    }
    report(results)
    print_summary(results)
    clock.finish(results, args.json, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
