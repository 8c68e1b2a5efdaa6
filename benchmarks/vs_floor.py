"""fedops' simulator against the plain-PyTorch floor, on the same data, in one run.

Why: a simulator is only worth its abstractions if it is not slower than the
for-loop a researcher would write in an afternoon. The floor here is that
loop: for every round, for every client, load the global weights, train one
local epoch with SGD on the client's rows, evaluate the result on the
client's test rows... then a weighted average. fedops runs the same
workload through its real path (Hydra-free API: the round driver, a
transport, the strategy, the run store with checkpoints and metrics).

Printed: seconds per round for both, the speed ratio, and fedops' framework
overhead, i.e. the share of a round spent outside local training and
evaluation (goal: < 10%).

    python benchmarks/vs_floor.py                  # 1000 clients, 5 rounds
    python benchmarks/vs_floor.py --clients 200 --rounds 3
    python benchmarks/vs_floor.py --model cnn      # 100 clients, a two-conv CNN on images
                                                   # (vs_floor_cnn.py), plus the compute floor
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from harness import add_seed_flag, make_parser, read_jsonl, time_into
from plain_loop import plain_fedavg_round
from torch import nn

from fedops.data.synthetic import synthetic
from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.simulation import engine
from fedops.simulation import vectorized_backend as vectorized
from fedops.tasks.dataset_task import task_from_data


def floor_round(
    data,
    model: nn.Module,
    global_state: dict[str, torch.Tensor],
    *,
    lr: float,
    batch: int,
    seed: int,
    server_round: int,
) -> tuple[dict[str, torch.Tensor], float]:
    """One FedAvg round as a plain loop: train each client, average, evaluate."""
    new_state = plain_fedavg_round(
        data,
        model,
        global_state,
        lr=lr,
        batch=batch,
        shuffle_seed=lambda c: seed * 1_000_003 + server_round * 10_007 + c,
    )
    model.load_state_dict(new_state)
    correct = seen = 0
    with torch.no_grad():
        for c in range(data.num_clients):
            x, y = (torch.from_numpy(a) for a in data.client_test(c))
            correct += int((model(x).argmax(1) == y).sum())
            seen += len(y)
    return new_state, correct / max(seen, 1)


def run_floor(data, rounds: int, lr: float, batch: int, seed: int) -> tuple[list[float], float]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(data.num_features, data.num_classes))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    times, accuracy = [], 0.0
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        state, accuracy = floor_round(
            data, model, state, lr=lr, batch=batch, seed=seed, server_round=r
        )
        times.append(time.perf_counter() - t0)
    return times, accuracy


def run_fedops(cfg: SimulateConfig, data, run_dir: Path) -> tuple[list[float], float, float]:
    """Round durations, the share spent in local training/evaluation, final accuracy."""
    inside = {"s": 0.0}

    def add(seconds: float) -> None:
        inside["s"] += seconds

    real_train, real_eval = vectorized.train_many, vectorized.VectorizedTransport._evaluate
    engine.load_federation = lambda _cfg: (  # reuse the already generated data
        task_from_data(data, name="synthetic"),
        data,
    )
    vectorized.train_many = time_into(real_train, add)
    vectorized.VectorizedTransport._evaluate = time_into(real_eval, add)
    try:
        summary = engine.run_simulation(cfg, run_dir)
    finally:
        vectorized.train_many = real_train
        vectorized.VectorizedTransport._evaluate = real_eval
    durations = [row["duration_s"] for row in read_jsonl(run_dir / "metrics.jsonl")]
    return durations, inside["s"], summary["final_metrics"]["eval_accuracy"]


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--clients", type=int, default=None, help="1000; 100 for --model cnn")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", choices=["logreg", "cnn"], default="logreg")
    parser.add_argument("--threads", type=int, default=0, help="--model cnn: torch threads")
    add_seed_flag(parser)
    args = parser.parse_args(argv)
    if args.model == "cnn":
        from vs_floor_cnn import run_cnn

        return run_cnn(args.clients or 100, args.rounds, args.seed, args.threads)
    args.clients = args.clients or 1000
    lr, batch = 0.01, 10
    t0 = time.perf_counter()
    data = synthetic(num_clients=args.clients, alpha=1.0, beta=1.0, seed=args.seed)
    print(
        f"Synthetic(1,1): {args.clients} clients, {len(data.train_y)} train rows, "
        f"generated in {time.perf_counter() - t0:.1f} s; logistic regression 60->10, "
        f"1 local epoch, batch {batch}, lr {lr}, all clients every round; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )

    floor_times, floor_acc = run_floor(data, args.rounds, lr, batch, args.seed)
    cfg = SimulateConfig(
        rounds=args.rounds, seed=args.seed, simulation=SimulationConfig(num_clients=args.clients)
    )
    cfg.dataset.name = "synthetic"
    cfg.client.epochs, cfg.client.batch_size, cfg.client.lr = 1, batch, lr
    with tempfile.TemporaryDirectory() as tmp:
        fed_times, inside, fed_acc = run_fedops(validate(cfg), data, Path(tmp) / "run")

    floor_round_s = statistics.median(floor_times)
    fed_round_s = statistics.median(fed_times)
    overhead = 1 - inside / sum(fed_times)
    print("\n| | s/round (median) | final accuracy |")
    print("|---|---:|---:|")
    print(f"| plain PyTorch loop | {floor_round_s:.2f} | {floor_acc:.4f} |")
    print(f"| fedops vectorized | {fed_round_s:.2f} | {fed_acc:.4f} |")
    print(
        f"\nspeed-up: {floor_round_s / fed_round_s:.1f}x; fedops framework overhead "
        f"(round time outside local training and evaluation): {overhead:.1%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
