"""The privacy benchmark's tables: per workload and mode, then (d) and (e)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from harness import fmt, print_table

from fedops.core.privacy import accountant as acct
from privacy_parts.modes import MODES

WORKLOAD_HEADER = [
    "mode",
    "clients/round",
    "s/round",
    "ratio to none",
    "+ms/round",
    "fit s",
    "aggregate ms",
    "ε accounting ms",
    "other s",
    "final acc",
    "ε PLD / RDP (known participants)",
    "clip norm",
]

NOTES = (
    "\n    clients/round: mean trained per round; s/round: median of rounds 2..R; ratio to "
    "none: median over those rounds of (mode's round / the same workload's none round: "
    "same sampled clients, except 'as deployed', whose Poisson cohort is its own); +ms/round: "
    "median of the paired differences. fit: training + collection (SecAgg+: the whole "
    "protocol; distributed: clipping and noise on the clients inside it; local: DP-SGD and "
    "each site's accountant); aggregate: FedAvg.aggregate_fit, or the privacy object's "
    "aggregate (central: clip + noise + mean); ε accounting: the privacy object's "
    "begin_round + spend + metrics and the ledger's commit (central/distributed: ε by PLD, "
    "the no-amplification PLD and RDP, once per round each); other: sampling, evaluation "
    "on the sampled clients, metrics. final acc: eval_accuracy of the last round; ε at "
    "δ = {delta:g} (user-level, PLD headline / RDP, and in brackets against a "
    "party that knows who took part; distributed: that is the headline; local: "
    "record-level, the largest a site reported); clip norm: the next round's (adaptive). "
    "1 BLAS thread: "
    "numpy's BLAS limited to 1 thread during that mode's rounds (see (d))."
)


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}\n")
    print_table(header, rows, "l" + "r" * (len(header) - 1))


def epsilon_cell(s: dict[str, Any]) -> str:
    """ε by PLD / RDP (and against a party that knows who took part), or local DP's ε."""
    if s.get("epsilon") is not None and s.get("accountant") == "pld":
        eps = f"{s['epsilon']:.2f} / {fmt(s.get('epsilon_rdp'), '.2f')}"
        if s.get("epsilon_known_participants") is not None:
            eps += f" ({s['epsilon_known_participants']:.2f})"
        return eps
    if s.get("epsilon") is not None:  # local DP: the largest a site reported
        return f"{s['epsilon']:.2f}"
    return "-"


def mode_row(name: str, s: dict[str, Any]) -> list[str]:
    label = MODES[name][0]
    if s["status"] != "completed":
        label += f" ({s['status']})"
    if "median_s" not in s:
        error = s.get("error", "no round completed").splitlines()[0][:200]
        return [label, f"failed after {len(s['round_s'])} rounds: {error}", *[""] * 10]
    cohort = [c for c in s.get("clients", []) if c is not None]
    return [
        label,
        fmt(statistics.mean(cohort) if cohort else None, ".1f"),
        f"{s['median_s']:.3f}",
        "1.00x" if name == "none" else fmt(s.get("ratio"), ".2f") + "x",
        "-" if name == "none" else fmt(s.get("extra_s", math.nan) * 1e3, "+.0f"),
        f"{s['median_fit_s']:.3f}",
        f"{s['median_aggregate_s'] * 1e3:.1f}",
        f"{s['median_accounting_s'] * 1e3:.0f}" if s["median_accounting_s"] else "-",
        f"{s['median_other_s']:.3f}",
        fmt(s.get("final_accuracy"), ".4f"),
        epsilon_cell(s),
        fmt(s.get("final_clip_norm"), ".3g"),
    ]


def report_workload(w: dict[str, Any], clients: int) -> None:
    rows = [mode_row(name, s) for name, s in w["modes"].items()]
    notes = []
    for i, (name, why) in enumerate(w["not_available"].items(), 1):
        rows.append([f"{MODES[name][0]} [{i}]", "not available yet", *[""] * 10])
        notes.append(f"    [{i}] validate: {why}")
    table(
        f"({w['tag']}) {w['name']}: {w['title']}, {w['num_params']:,} parameters; {w['per_round']} "
        f"of {clients} clients per round, {w['rounds']} rounds (rounds 2..{w['rounds']} timed); "
        f"{w['wall_s']:.0f} s",
        WORKLOAD_HEADER,
        rows,
    )
    if notes:
        print("\n" + "\n".join(notes))


def server_dp_row(c: dict[str, Any], blas1: bool) -> list[str]:
    row = [
        f"{c['d']:,}",
        str(c["n"]),
        f"{c['fedavg_s'] * 1e3:.1f}",
        f"{c['central_s'] * 1e3:.1f}",
        f"{c['central_adaptive_s'] * 1e3:.1f}",
        f"{c['central_s'] / c['fedavg_s']:.2f}x",
        f"{(c['central_s'] - c['fedavg_s']) * 1e3:+.1f}",
    ]
    if blas1:
        row += [
            f"{c['central_blas1_s'] * 1e3:.1f}",
            f"{c['central_adaptive_blas1_s'] * 1e3:.1f}",
            f"{c['central_blas1_s'] / c['fedavg_blas1_s']:.2f}x",
        ]
    return row


def report_server_dp(results: dict[str, Any]) -> None:
    """(d): private_mean against FedAvg.aggregate_fit, with BLAS as is and on one thread."""
    blas1 = all("central_blas1_s" in c for c in results["server_dp"])
    header = [
        "d",
        "n",
        "FedAvg.aggregate_fit ms",
        "private_mean ms",
        "private_mean adaptive ms",
        "central / FedAvg",
        "+ms",
    ]
    if blas1:
        header += ["private_mean, 1 BLAS thread ms", "adaptive, 1 BLAS thread ms", "ratio"]
    table(
        f"(d) server-side DP on its own: private_mean over n updates, clip 1, σ = 1 (median of "
        f"{results['args']['reps']}, interleaved, after a warm-up; {results['blas']})",
        header,
        [server_dp_row(c, blas1) for c in results["server_dp"]],
    )
    if blas1:
        print(
            "\n    private_mean's norms no longer use BLAS (with np.vdot, a call on a shared "
            "machine took up to ~100x longer with 2 BLAS threads); the 1-thread columns are "
            "the same calls under threadpoolctl's limit of 1, for comparison."
        )


def report_accountant(results: dict[str, Any]) -> None:
    """(e): one ε computation after R rounds, by each accountant."""
    rows = [
        [
            str(r["rounds"]),
            f"{r['pld_s'] * 1e3:.1f}",
            f"{r['known_s'] * 1e3:.1f}",
            f"{r['rdp_s'] * 1e3:.1f}",
            f"{(r['pld_s'] + r['known_s'] + r['rdp_s']) * 1e3:.0f}",
            f"{r['pld_epsilon']:.3f}",
            f"{r['known_epsilon']:.3f}",
            f"{r['rdp_epsilon']:.3f}",
        ]
        for r in results["accountant"]
    ]
    build = results["accountant"][0]["pld_build_s"] if results["accountant"] else math.nan
    table(
        f"(e) accountant (dp_accounting): one ε computation after R rounds (q = "
        f"{results['sample_rate']:g}, σ = 1, δ = {results['delta']:g}; PLD at interval "
        f"{acct.PLD_INTERVAL:g}, pessimistic, the one-round PLD cached per event and "
        f"self-composed R times; known: the same without sampling; RDP: {len(acct.RDP_ORDERS)} "
        f"orders). The first round also builds the one-round Poisson PLD: {build * 1e3:.0f} ms",
        [
            "R",
            "PLD ms",
            "known PLD ms",
            "RDP ms",
            "per round (all three) ms",
            "ε PLD",
            "ε known",
            "ε RDP",
        ],
        rows,
    )


def report(results: dict[str, Any]) -> None:
    for w in results["workloads"]:
        report_workload(w, results["args"]["clients"])
    print(NOTES.format(delta=results["delta"]))
    report_server_dp(results)
    report_accountant(results)
