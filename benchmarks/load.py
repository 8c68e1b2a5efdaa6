"""Load: a thousand real client agents against one coordinator on loopback.

    python benchmarks/load.py                      # 1000 agents, 5 rounds
    python benchmarks/load.py --agents 200 --rounds 2 --json out.json
    python benchmarks/load.py --hostile 100 --side-by-side   # without, then with an attacker

The coordinator is the real ``fedops coordinator`` process; the agents are
the real :class:`fedops.client.agent.Agent` (the code ``fedops client``
runs), many per process on threads, each with its own gRPC channel,
heartbeats, journal and signed audit log, so the coordinator sees a
thousand independent connections. Every agent takes part in every round
(all clients per round), training a small logistic regression
(``benchmarks/load_task.py``) for one local epoch.

Printed and written with ``--json``:
* round latency p50 / p95 / max (the coordinator's ``duration_s``: model
  out to every agent, local training, every update in and aggregated);
* the coordinator's peak RSS (VmHWM) and CPU (seconds, mean and peak cores);
* lost updates: per round, the agents whose journal says their update was
  accepted against the participants the coordinator's signed audit log
  committed. Zero lost means the two sets are equal in every round.

With ``--hostile N`` an attacker process holds N idle ``PushResult``
streams open against the coordinator for the whole run (each sends no
header; when the coordinator cuts one, it is reopened at once) from the same
loopback address as the agents. ``--side-by-side`` runs the load twice in one
invocation, without and then with the attacker, and prints the ratio of the
p95 round latencies.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harness import (
    add_json_flag,
    make_parser,
    write_json,
)
from load_measure import ProcessSampler, format_figures, read_figures

HERE = Path(__file__).resolve().parent
TASK = HERE / "load_task.py"
#: the longest the whole benchmark may run; every wait below is bounded by it
MAX_WALL_S = 1800.0


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=4, help="agent processes")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="heartbeat interval, s")
    parser.add_argument("--liveness", type=float, default=60.0, help="liveness timeout, s")
    parser.add_argument("--max-workers", type=int, default=64, help="coordinator RPC threads")
    parser.add_argument(
        "--monitoring",
        choices=("none", "default"),
        default="none",
        help="drift/fairness reports with every evaluation (default: none; each report costs "
        "the coordinator ~11 ms to check, see the monitoring benchmark)",
    )
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: temp)")
    add_json_flag(parser, "write the figures here")
    parser.add_argument(
        "--hostile", type=int, default=0, help="idle upload streams an attacker holds open"
    )
    parser.add_argument(
        "--side-by-side", action="store_true", help="run without, then with, the --hostile streams"
    )
    parser.add_argument("--worker", nargs=4, metavar=("ADDR", "FIRST", "COUNT", "DIR"))
    parser.add_argument("--attacker", nargs=3, metavar=("ADDR", "STREAMS", "REPORT"))
    args = parser.parse_args()
    if args.worker:
        address, first, count, run_dir = args.worker
        return run_agents(address, int(first), int(count), args.agents, Path(run_dir))
    if args.attacker:
        address, streams, report = args.attacker
        return run_attacker(address, int(streams), Path(report))
    out = args.out or Path(tempfile.mkdtemp(prefix="fedops-load-"))
    plans = [0, args.hostile] if args.side_by_side else [args.hostile]
    results = []
    for hostile in plans:
        figures = run_load(args, out / f"hostile-{hostile}" if len(plans) > 1 else out, hostile)
        print(format_figures(figures), flush=True)
        results.append(figures)
    if len(results) == 2 and results[0]["round_s_p95"] and results[1]["round_s_p95"]:
        ratio = results[1]["round_s_p95"] / results[0]["round_s_p95"]
        print(f"p95 round latency with {args.hostile} hostile streams / without: {ratio:.2f}x")
    if args.json:
        write_json(args.json, results if len(results) > 1 else results[0])
    ok = all(f["lost_updates"] == 0 and f["rounds_completed"] == args.rounds for f in results)
    return 0 if ok else 1


# ----------------------------------------------------------------------------
# the attacker
# ----------------------------------------------------------------------------
def run_attacker(address: str, streams: int, report: Path) -> int:
    """Hold ``streams`` idle uploads open (reopening each one the coordinator cuts) until
    killed or ``MAX_WALL_S``; every 2 s ``report`` gets how many were opened and cut."""
    import grpc

    stop = threading.Event()
    counts = {"opened": 0, "cut": 0}
    lock = threading.Lock()
    # a handful of connections, as a real attacker would spread its streams
    channels = [grpc.insecure_channel(address) for _ in range(max(1, streams // 25))]

    def never() -> Any:
        stop.wait(MAX_WALL_S)
        return
        yield  # a generator that sends nothing: no header, ever

    def hold(channel: grpc.Channel) -> None:
        push = channel.stream_unary(
            "/fedops.v1.Coordinator/PushResult",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        deadline = time.monotonic() + MAX_WALL_S
        while not stop.is_set() and time.monotonic() < deadline:
            with lock:
                counts["opened"] += 1
            try:
                push(never(), timeout=MAX_WALL_S)
            except grpc.RpcError:
                with lock:
                    counts["cut"] += 1
                stop.wait(0.05)  # never a hot loop, even against a server that refuses at once

    threads = [
        threading.Thread(target=hold, args=(channels[i % len(channels)],), daemon=True)
        for i in range(streams)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + MAX_WALL_S
    while time.monotonic() < deadline:
        with lock:
            report.write_text(json.dumps(counts))
        time.sleep(2.0)
    stop.set()
    return 0


# ----------------------------------------------------------------------------
# the agents' side
# ----------------------------------------------------------------------------
def run_agents(address: str, first: int, count: int, num_sites: int, run_dir: Path) -> int:
    """Run agents ``first .. first+count-1`` on threads; exit 0 when all finished cleanly."""
    import torch

    from fedops.client.agent import Agent
    from fedops.core.training import TrainConfig
    from fedops.runtime.settings import ClientConfig
    from fedops.tasks import load_task
    from fedops.tasks.site import Site

    torch.set_num_threads(1)
    logging.basicConfig(
        filename=run_dir / f"agents-{first}.log",
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,  # Opacus configures the root logger on import
    )
    task = load_task(str(TASK))
    train = TrainConfig()  # unused: every task brings the run's (the coordinator's --epochs ...)
    agents = []
    for index in range(first, first + count):
        cfg = ClientConfig(
            coordinator=address,
            task=str(TASK),
            site=index,
            num_sites=num_sites,
            run_dir=run_dir / f"site-{index}",
        )
        site = Site(task, site=index, num_sites=num_sites, train_config=train)
        agents.append(Agent(cfg, site))
    codes: dict[int, int] = {}

    def run(i: int, agent: Agent) -> None:
        try:
            codes[i] = agent.run()
        except Exception:
            logging.getLogger("load").exception("agent %d failed", i)
            codes[i] = 1

    threads = [threading.Thread(target=run, args=(i, a), daemon=True) for i, a in enumerate(agents)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + MAX_WALL_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    failed = count - sum(1 for code in codes.values() if code == 0)
    return 0 if failed == 0 else 1


# ----------------------------------------------------------------------------
# the coordinator's side
# ----------------------------------------------------------------------------
def run_load(args: argparse.Namespace, out: Path, hostile: int = 0) -> dict[str, Any]:
    coordinator_dir, sites_dir = out / "coordinator", out / "sites"
    sites_dir.mkdir(parents=True, exist_ok=True)
    n = args.agents
    cmd = [
        sys.executable, "-m", "fedops", "coordinator",
        "--address", "127.0.0.1:0", "--task", str(TASK), "--run-dir", str(coordinator_dir),
        "--rounds", str(args.rounds), "--min-clients", str(n), "--clients-per-round", str(n),
        "--round-timeout", "600", "--join-timeout", "900",
        "--heartbeat-interval", str(args.heartbeat), "--liveness-timeout", str(args.liveness),
        "--max-workers", str(args.max_workers), "--monitoring", args.monitoring,
        # the run's training settings, sent to every agent with each task
        "--epochs", "1", "--batch-size", "10", "--lr", "0.1",
    ]  # fmt: skip
    log = (out / "coordinator.log").open("w")
    started = time.monotonic()
    coordinator = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    sampler = ProcessSampler(coordinator.pid)
    # port 0: the kernel picks a free port as the coordinator binds; it says which
    address = _wait_listening(coordinator_dir, out / "coordinator.log", coordinator)
    attack_report = out / "attacker.json"
    attacker = None
    if hostile:
        attacker = subprocess.Popen(
            [sys.executable, __file__, "--attacker", address, str(hostile), str(attack_report)]
        )
    per = -(-n // args.processes)
    worker = [sys.executable, __file__, "--agents", str(n), "--worker", address]
    workers = [
        subprocess.Popen([*worker, str(first), str(min(per, n - first)), str(sites_dir)])
        for first in range(0, n, per)
    ]
    try:
        coordinator.wait(MAX_WALL_S)
        left = max(1.0, MAX_WALL_S - (time.monotonic() - started))
        worker_codes = [w.wait(left) for w in workers]
    finally:
        sampler.stop()
        for proc in (coordinator, *workers, *([attacker] if attacker else [])):
            if proc.poll() is None:
                proc.kill()
        log.close()
    wall = time.monotonic() - started
    figures = read_figures(args, coordinator_dir, sites_dir, sampler, wall, worker_codes)
    figures["hostile_streams"] = hostile
    if hostile:
        figures["hostile_uploads"] = json.loads(attack_report.read_text())
    return figures


def _wait_listening(run_dir: Path, log_path: Path, proc: subprocess.Popen[bytes]) -> str:
    """The address coordinator ``proc`` bound, from the ``listening.json`` it writes."""
    from fedops.coordinator.listening import read_listening

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        record = read_listening(run_dir, proc.pid)
        if record is not None:
            return record.address
        if proc.poll() is not None:
            raise RuntimeError(f"the coordinator exited: {log_path.read_text()[-2000:]}")
        time.sleep(0.2)
    raise TimeoutError("the coordinator did not start listening within 120 s")


if __name__ == "__main__":
    sys.exit(main())
