"""Reproduce FedProx's headline experiment: Synthetic(1,1) with stragglers.

Li et al. 2020 (MLSys), "Federated Optimization in Heterogeneous Networks",
systems-heterogeneity experiment: 30 devices of Synthetic(1,1), 10 sampled per
round, E = 20 local epochs, batch 10, lr 0.01, 200 rounds; a share of the
sampled devices are stragglers that finish only a random number of their
epochs. FedAvg drops the stragglers; FedProx keeps their partial work and adds
the proximal term (mu = 1). The claim: with 90% stragglers FedProx converges
where FedAvg degrades.

Every run goes through ``fedops simulate``'s engine (vectorized backend, the
same driver and strategies as a deployment); dropouts, stragglers and data are
drawn from the seed, so the numbers are reproducible.

    python benchmarks/fedprox_synthetic.py                # 5 runs x 200 rounds, ~10 min
    python benchmarks/fedprox_synthetic.py --rounds 50    # a quicker look
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from harness import add_seed_flag, make_parser, print_table, read_jsonl

from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.simulation.engine import run_simulation

RUNS = [  # (label, straggler share, strategy, mu, drop stragglers)
    ("FedAvg, 0% stragglers", 0.0, "fedavg", 0.0, False),  # none to drop: the flag is refused
    ("FedProx mu=1, 0% stragglers", 0.0, "fedprox", 1.0, False),
    ("FedAvg, 90% stragglers (dropped)", 0.9, "fedavg", 0.0, True),
    ("FedProx mu=0, 90% stragglers (partial work kept)", 0.9, "fedprox", 0.0, False),
    ("FedProx mu=1, 90% stragglers (partial work kept)", 0.9, "fedprox", 1.0, False),
]


def run(
    label: str,
    stragglers: float,
    strategy: str,
    mu: float,
    drop: bool,
    *,
    rounds: int,
    seed: int,
    run_dir: Path,
) -> list[dict[str, float]]:
    cfg = SimulateConfig(
        rounds=rounds,
        seed=seed,
        simulation=SimulationConfig(
            num_clients=30, clients_per_round=10, straggler_rate=stragglers, drop_stragglers=drop
        ),
    )
    cfg.dataset.name, cfg.dataset.alpha, cfg.dataset.beta = "synthetic", 1.0, 1.0
    cfg.client.epochs, cfg.client.batch_size, cfg.client.lr = 20, 10, 0.01
    cfg.strategy.name = strategy
    if strategy == "fedprox":  # FedAvg reads no mu: setting it is refused
        cfg.strategy.mu = mu
    t0 = time.perf_counter()
    run_simulation(validate(cfg), run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    print(f"  {label}: {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def plot(results: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in results.items():
        rounds = [r["round"] for r in rows]
        style = "--" if "0% stragglers" in label and "90%" not in label else "-"
        axes[0].plot(rounds, [r["eval_loss"] for r in rows], style, label=label)
        axes[1].plot(rounds, [r["eval_accuracy"] for r in rows], style, label=label)
    axes[0].set_ylabel("test loss (example-weighted over devices)")
    axes[1].set_ylabel("test accuracy")
    for ax in axes:
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].legend(fontsize=7)
    fig.suptitle("Synthetic(1,1), 30 devices, 10 per round, E=20, batch 10, lr 0.01")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def summary_row(label: str, rows: list[dict[str, float]], settled: int) -> list[str]:
    """Mean test accuracy and loss of the last 10 rounds, and the worst loss after ``settled``."""
    tail = rows[-10:]
    acc = sum(r["eval_accuracy"] for r in tail) / len(tail)
    loss = sum(r["eval_loss"] for r in tail) / len(tail)
    worst = max(r["eval_loss"] for r in rows[settled:])
    return [label, f"{acc:.3f}", f"{loss:.3f}", f"{worst:.3f}"]


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    add_seed_flag(parser)
    parser.add_argument(
        "--figure", type=Path, default=Path(__file__).parent / "figures" / "fedprox_synthetic.png"
    )
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, stragglers, strategy, mu, drop) in enumerate(RUNS):
            results[label] = run(
                label,
                stragglers,
                strategy,
                mu,
                drop,
                rounds=args.rounds,
                seed=args.seed,
                run_dir=Path(tmp) / str(i),
            )
    print()
    print_table(
        [
            "run",
            "test accuracy, mean of last 10 rounds",
            "test loss, mean of last 10",
            f"worst test loss after round {args.rounds // 4}",
        ],
        [summary_row(label, rows, args.rounds // 4) for label, rows in results.items()],
        "lrrr",
    )
    plot(results, args.figure)
    print(f"\nfigure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
