"""The load benchmark's measurements: the coordinator's memory and CPU, and the figures
read back from the run (round latency, lost updates, retried calls)."""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

from harness import Ticker, proc_kb, proc_stat_fields, read_jsonl


class ProcessSampler:
    """Samples a process's peak RSS (the kernel's VmHWM) and CPU time from /proc every
    ``period_s``, and the most cores it kept busy over any second."""

    def __init__(self, pid: int, period_s: float = 0.25) -> None:
        self.pid = pid
        self.peak_rss = 0
        self.cpu_s = 0.0
        self.peak_cores = 0.0
        self._last = (time.monotonic(), 0.0)
        self._ticker = Ticker(period_s, self._sample, wait_first=True).start()

    def _read(self) -> tuple[int, float] | None:
        hwm = proc_kb(f"/proc/{self.pid}/status", "VmHWM")
        fields = proc_stat_fields(self.pid)
        if hwm is None or fields is None:  # exited (and perhaps not yet reaped)
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        return hwm * 1024, (int(fields[11]) + int(fields[12])) / ticks

    def _sample(self) -> bool:
        read = self._read()
        if read is None:
            return False
        self.peak_rss, self.cpu_s = max(self.peak_rss, read[0]), read[1]
        now = time.monotonic()
        if now - self._last[0] >= 1.0:
            cores = (self.cpu_s - self._last[1]) / (now - self._last[0])
            self.peak_cores = max(self.peak_cores, cores)
            self._last = (now, self.cpu_s)
        return True

    def stop(self) -> None:
        self._ticker.stop(5)


def accepted_by_sites(sites_dir: Path) -> dict[int, set[str]]:
    """Round -> the node ids whose journal says the coordinator accepted their update."""
    accepted: dict[int, set[str]] = {}
    for journal in sites_dir.glob("site-*/client.jsonl"):
        node = ""
        for entry in read_jsonl(journal):
            if entry.get("event") == "registered":
                node = entry["node_id"]
            elif entry.get("event") == "pushed" and entry.get("kind") == "TASK_KIND_FIT":
                accepted.setdefault(int(entry["round"]), set()).add(node)
    return accepted


def committed_by_coordinator(coordinator_dir: Path) -> dict[int, set[str]]:
    """Round -> the participants the coordinator's audit log committed."""
    committed: dict[int, set[str]] = {}
    for line in read_jsonl(coordinator_dir / "audit.jsonl"):
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


def read_figures(
    args: argparse.Namespace,
    coordinator_dir: Path,
    sites_dir: Path,
    sampler: ProcessSampler,
    wall: float,
    worker_codes: list[int],
) -> dict[str, Any]:
    rounds = read_jsonl(coordinator_dir / "metrics.jsonl")
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
