"""What drift and fairness monitoring and the audit log cost, measured side by side in one run.

    python benchmarks/monitoring.py            # about 2 minutes on 2 cores
    python benchmarks/monitoring.py --quick    # about 40 s

(a) Round time of the hospital-drift scenario (20 hospitals, digits MLP, sequential backend, 2
    local epochs) with ``monitoring=none`` and ``monitoring=default``: the two runs alternate,
    --pairs times each, and each round of a monitored run is paired with the same round of the
    unmonitored run before it (same seed: same clients, same model). Printed: median s/round over
    rounds 2..R and the median of the paired ratios. Both runs write the same signed audit log.
(b) Where it goes, each timed on its own (median of --reps): one site's ``Site.report`` (drift
    of its 64 features, label and prediction against its first window, on the coordinator's
    bins) beside the ``Site.evaluate`` it rides along with; the wire check of one report
    (protobuf round trip, bins checked, every statistic recomputed); the coordinator's
    ``summarize`` of 20 reports (pooled drift, fairness, alerts).
(c) The audit log: appends per second with and without fsync (each append also rewrites the
    signed head file), and verification speed in entries per second.
(d) The 1000-client LR run of issue 22 ("every workload on the fast path"): ``+scenario=
    fleet_1000`` (Synthetic(1,1), 1000 clients, logistic regression, every client every round)
    on the default (vectorized) backend, ``monitoring=none`` against ``monitoring=default``,
    paired as (a). Goal: the monitored round <= 1.5x the round without monitoring.

    python benchmarks/monitoring.py --fleet-only   # (d) alone, 3 pairs of 6 rounds (~1 min)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import (
    add_json_flag,
    add_quick_flag,
    compose_simulate,
    make_parser,
    median_time,
    read_jsonl,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TASK = ROOT / "simulations" / "tasks" / "hospital_shift.py"


def _config(*overrides: str):  # type: ignore[no-untyped-def]
    from fedops.runtime.simulate_settings import validate

    return validate(compose_simulate(["+scenario=hospital_drift", f"task={TASK}", *overrides]))


def _durations(run_dir: Path) -> list[float]:
    return [row["duration_s"] for row in read_jsonl(run_dir / "metrics.jsonl")]


def round_cost(rounds: int, pairs: int, work: Path) -> dict[str, float]:
    return _paired(
        lambda mode: _config(f"monitoring={mode}", f"rounds={rounds}", "simulation.threads=1"),
        pairs,
        work / "hospital",
    )


def fleet_cost(rounds: int, pairs: int, work: Path) -> dict[str, float]:
    from fedops.runtime.simulate_settings import validate

    return _paired(
        lambda mode: validate(
            compose_simulate(["+scenario=fleet_1000", f"monitoring={mode}", f"rounds={rounds}"])
        ),
        pairs,
        work / "fleet",
    )


def _paired(config: Callable[[str], Any], pairs: int, work: Path) -> dict[str, float]:
    """Runs without and with monitoring, alternating; each round (from the second) paired
    with the same round of the run before it (same seed: same clients, same model)."""
    from fedops.simulation.engine import run_simulation

    off, on, ratios = [], [], []
    for i in range(pairs):
        runs = {}
        for mode in ("none", "default"):
            run_dir = work / f"{mode}-{i}"
            run_simulation(config(mode), run_dir)
            runs[mode] = _durations(run_dir)[1:]
        off += runs["none"]
        on += runs["default"]
        ratios += [b / a for a, b in zip(runs["none"], runs["default"], strict=True)]
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {
        "off_s": statistics.median(off),
        "on_s": statistics.median(on),
        "ratio": statistics.median(ratios),
        "ratio_q1": quartiles[0],
        "ratio_q3": quartiles[-1],
    }


def _load() -> str:
    """The 1-minute load average (the 2-core machine is shared): '' where there is none."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return ""


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    return median_time(fn, reps) * 1000


def parts(reps: int) -> dict[str, float]:
    from fedops.core.monitoring.summary import MonitorThresholds, summarize
    from fedops.core.training import TrainConfig
    from fedops.runtime.round_monitor import MonitorSettings, monitor_spec
    from fedops.tasks import load_task
    from fedops.tasks.site import Site, initial_params
    from fedops.wire import monitoring

    task = load_task(str(TASK))
    params = initial_params(task, 0)
    spec = monitor_spec(MonitorSettings(), task, params)
    sites = [Site(task, site=i, num_sites=20, train_config=TrainConfig()) for i in range(20)]
    for s in sites:
        s.at_round(5)  # two of them now image with the new scanner
    site = sites[3]
    reports = {f"site-{i}": s.report(params, spec) for i, s in enumerate(sites)}
    one = reports["site-3"]
    assert one is not None
    accuracy = {name: 0.9 for name in reports}
    return {
        "site_evaluate_ms": _median_ms(lambda: site.evaluate(params), reps),
        "site_report_ms": _median_ms(lambda: site.report(params, spec), reps),
        "wire_check_ms": _median_ms(
            lambda: monitoring.report_from_proto(monitoring.report_to_proto(one), spec), reps
        ),
        "summarize_20_sites_ms": _median_ms(
            lambda: summarize(
                {k: v for k, v in reports.items() if v is not None}, accuracy, MonitorThresholds()
            ),
            reps,
        ),
    }


def audit_rates(entries: int, work: Path) -> dict[str, float]:
    from fedops.reporting.audit.compliance import verify_log_file
    from fedops.runtime.audit.log_file import AuditLog

    out = {}
    payload = {"round": 7, "node_id": "n-1", "digest": "ab" * 32, "num_examples": 123}
    for fsync in (False, True):
        folder = work / f"audit-{fsync}"
        with AuditLog.open(folder, "bench", fsync=fsync) as log:
            start = time.perf_counter()
            for _ in range(entries):
                log.record("update_received", payload)
            elapsed = time.perf_counter() - start
        out[f"append_per_s_fsync_{str(fsync).lower()}"] = entries / elapsed
    start = time.perf_counter()
    result = verify_log_file(work / "audit-False")
    assert result.ok, result.reason
    out["verify_per_s"] = result.entries / (time.perf_counter() - start)
    return out


def main() -> None:
    parser = make_parser(__doc__)
    add_quick_flag(parser)
    add_json_flag(parser)
    parser.add_argument("--fleet-only", action="store_true", help="(d) alone")
    args = parser.parse_args()
    rounds, pairs, reps, entries = (4, 1, 10, 300) if args.quick else (6, 3, 30, 2000)
    import logging

    logging.disable(logging.WARNING)  # the shifted sites' alerts, every round
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.fleet_only:
            cost = round_cost(rounds, pairs, work)
            split = parts(reps)
            audit = audit_rates(entries, work)
            _print_abc(rounds, pairs, reps, cost, split, audit)
            out |= {**cost, **split, **audit}
        load = _load()
        fleet = fleet_cost(rounds, pairs, work)
    print(
        f"(d) fleet_1000, 1000 clients, LR, vectorized backend, rounds 2..{rounds}, {pairs} pairs"
        f" (load average {load} -> {_load()})"
    )
    print(f"    monitoring=none     {fleet['off_s']:.3f} s/round")
    print(
        f"    monitoring=default  {fleet['on_s']:.3f} s/round   ratio {fleet['ratio']:.3f}x"
        f" (paired ratios' quartiles {fleet['ratio_q1']:.2f}-{fleet['ratio_q3']:.2f})"
    )
    if args.json:
        write_json(args.json, {**out, **{f"fleet_{k}": v for k, v in fleet.items()}}, end="\n")


def _print_abc(
    rounds: int,
    pairs: int,
    reps: int,
    cost: dict[str, float],
    split: dict[str, float],
    audit: dict[str, float],
) -> None:
    print(f"(a) hospital_drift, 20 sites, sequential backend, rounds 2..{rounds}, {pairs} pairs")
    print(f"    monitoring=none     {cost['off_s']:.3f} s/round")
    print(f"    monitoring=default  {cost['on_s']:.3f} s/round   ratio {cost['ratio']:.3f}x")
    print("(b) per call, median of", reps)
    for key, value in split.items():
        print(f"    {key:<24} {value:8.2f} ms")
    print("(c) audit log")
    for key, value in audit.items():
        print(f"    {key:<28} {value:10.0f}")


if __name__ == "__main__":
    main()
