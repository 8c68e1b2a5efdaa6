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
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TASK = HERE / "load_task.py"
#: the longest the whole benchmark may run; every wait below is bounded by it
MAX_WALL_S = 1800.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
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
        args.json.write_text(json.dumps(results if len(results) > 1 else results[0], indent=2))
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
    from fedops.runtime.schema import ClientTrainConfig
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
    train = TrainConfig(epochs=1, batch_size=10, lr=0.1, optimizer="sgd")
    agents = []
    for index in range(first, first + count):
        cfg = ClientConfig(
            coordinator=address,
            task=str(TASK),
            site=index,
            num_sites=num_sites,
            run_dir=run_dir / f"site-{index}",
            train=ClientTrainConfig(epochs=1, batch_size=10, lr=0.1),
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
# the coordinator's side and the measurement
# ----------------------------------------------------------------------------
class ProcessSampler:
    """Samples a process's RSS, peak RSS and CPU time from /proc every ``period_s``."""

    def __init__(self, pid: int, period_s: float = 0.25) -> None:
        self.pid = pid
        self.period_s = period_s
        self.peak_rss = 0
        self.cpu_s = 0.0
        self.peak_cores = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _read(self) -> tuple[int, float] | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return None
        hwm = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")]
        if not hwm:  # exited, not yet reaped
            return None
        fields = stat.rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return hwm[0] * 1024, (int(fields[11]) + int(fields[12])) / ticks

    def _run(self) -> None:
        last = (time.monotonic(), 0.0)
        while not self._stop.wait(self.period_s):
            read = self._read()
            if read is None:
                return
            self.peak_rss, self.cpu_s = max(self.peak_rss, read[0]), read[1]
            now = time.monotonic()
            if now - last[0] >= 1.0:
                self.peak_cores = max(self.peak_cores, (self.cpu_s - last[1]) / (now - last[0]))
                last = (now, self.cpu_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


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
    figures = _figures(args, coordinator_dir, sites_dir, sampler, wall, worker_codes)
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


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def accepted_by_sites(sites_dir: Path) -> dict[int, set[str]]:
    """Round -> the node ids whose journal says the coordinator accepted their update."""
    accepted: dict[int, set[str]] = {}
    for journal in sites_dir.glob("site-*/client.jsonl"):
        node = ""
        for entry in _jsonl(journal):
            if entry.get("event") == "registered":
                node = entry["node_id"]
            elif entry.get("event") == "pushed" and entry.get("kind") == "TASK_KIND_FIT":
                accepted.setdefault(int(entry["round"]), set()).add(node)
    return accepted


def committed_by_coordinator(coordinator_dir: Path) -> dict[int, set[str]]:
    """Round -> the participants the coordinator's audit log committed."""
    committed: dict[int, set[str]] = {}
    for line in _jsonl(coordinator_dir / "audit.jsonl"):
        if line.get("event") == "round_committed":
            payload = line["payload"]
            committed[int(payload["round"])] = {
                p["node_id"]
                for p in payload["participants"]
                if p["phase"] == "fit" and p["outcome"] == "ok"
            }
    return committed


def agent_retries(sites_dir: Path) -> dict[str, int]:
    """``"call CODE" -> count`` of the agents' retried calls (from their warning logs)."""
    pattern = re.compile(r"fedops\.client: (.+?) failed \((\w+)\); retry")
    counts: dict[str, int] = {}
    for log_file in sites_dir.glob("agents-*.log"):
        for match in pattern.finditer(log_file.read_text()):
            key = f"{match.group(1)} {match.group(2)}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _figures(
    args: argparse.Namespace,
    coordinator_dir: Path,
    sites_dir: Path,
    sampler: ProcessSampler,
    wall: float,
    worker_codes: list[int],
) -> dict[str, Any]:
    rounds = _jsonl(coordinator_dir / "metrics.jsonl")
    durations = sorted(float(r["duration_s"]) for r in rounds)
    sent, committed = accepted_by_sites(sites_dir), committed_by_coordinator(coordinator_dir)
    lost = sum(len(sent.get(r, set()) - committed.get(r, set())) for r in committed)
    unexplained = sum(len(committed[r] - sent.get(r, set())) for r in committed)
    return {
        "agents": args.agents,
        "monitoring": args.monitoring,
        "agent_processes": len(worker_codes),
        "rounds_completed": len(rounds),
        "round_s_p50": statistics.median(durations) if durations else None,
        "round_s_p95": _percentile(durations, 0.95),
        "round_s_max": durations[-1] if durations else None,
        "updates_per_round": [len(committed.get(r, ())) for r in sorted(committed)],
        "lost_updates": lost,
        "committed_without_site_record": unexplained,
        "agent_retries": agent_retries(sites_dir),
        "final_global_accuracy": rounds[-1].get("global_accuracy") if rounds else None,
        "coordinator_peak_rss_mb": round(sampler.peak_rss / 2**20, 1),
        "coordinator_cpu_s": round(sampler.cpu_s, 1),
        "coordinator_mean_cores": round(sampler.cpu_s / wall, 2),
        "coordinator_peak_cores": round(sampler.peak_cores, 2),
        "wall_s": round(wall, 1),
        "agent_processes_ok": sum(1 for c in worker_codes if c == 0),
    }


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def format_figures(f: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"{f['agents']} agents in {f['agent_processes']} processes, "
            f"{f['rounds_completed']} rounds, {f['wall_s']} s wall, "
            f"{f['hostile_streams']} hostile streams {f.get('hostile_uploads', '')}",
            f"round latency: p50 {f['round_s_p50']} s, p95 {f['round_s_p95']} s, "
            f"max {f['round_s_max']} s",
            f"updates committed per round: {f['updates_per_round']}; lost: {f['lost_updates']}",
            f"calls the agents retried: {f['agent_retries'] or 'none'}",
            f"coordinator: peak RSS {f['coordinator_peak_rss_mb']} MB, CPU "
            f"{f['coordinator_cpu_s']} s (mean {f['coordinator_mean_cores']} cores, "
            f"peak {f['coordinator_peak_cores']})",
            f"final global accuracy: {f['final_global_accuracy']}",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
