"""``vs_floor.py --model cnn``: a two-conv CNN on generated 28x28 images, in one run.

Why: the batched CNN trainer (:mod:`fedops.core.batched_cnn`) exists so that an
image-model federation is not slower than the for-loop a researcher would write.
Three figures, same data, same model, same initial weights:

* fedops: ``engine.run_simulation`` on the default (vectorized) backend: the
  round driver, the strategy, the run store, evaluation of every client;
* the plain PyTorch loop: per round, per client, load the global weights, one
  local epoch of SGD (batch 32) on the client's rows, FedAvg, evaluate;
* the compute floor: one pass of the same training examples through one
  model in batches of 256 (what the round's arithmetic costs at best).

The issue's goal: fedops <= 0.4x the plain loop and within 1.5x of the floor.

Data: 10 class templates (random 7x7 patterns upsampled to 28x28); each client
shifts them by its own offset and scales their intensity by its own factor,
plus pixel noise; 40-200 training rows per client (ragged), 20 test rows.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from harness import read_jsonl, steady_median
from plain_loop import plain_fedavg_round
from torch import nn

from fedops.data import FederatedData

LR, BATCH, FLOOR_BATCH = 0.05, 32, 256


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 10),
    )


def images(clients: int, seed: int) -> FederatedData:
    """Class templates shifted and scaled per client, plus noise."""
    rng = np.random.default_rng(seed)
    templates = np.kron(rng.normal(size=(10, 7, 7)), np.ones((4, 4)))  # [10, 28, 28]
    parts: dict[str, list[np.ndarray]] = {"trx": [], "try": [], "tex": [], "tey": []}
    for _ in range(clients):
        n_train, n_test = int(rng.integers(40, 201)), 20
        labels = rng.integers(0, 10, n_train + n_test)
        dy, dx = rng.integers(-3, 4, 2)
        shifted = np.roll(templates, (int(dy), int(dx)), axis=(1, 2)) * rng.uniform(0.6, 1.4)
        x = shifted[labels] + rng.normal(scale=1.0, size=(len(labels), 28, 28))
        x = x[:, None].astype(np.float32)
        parts["trx"].append(x[:n_train])
        parts["try"].append(labels[:n_train])
        parts["tex"].append(x[n_train:])
        parts["tey"].append(labels[n_train:])

    def offsets(key: str) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([len(p) for p in parts[key]])]).astype(np.int64)

    return FederatedData(
        train_x=np.concatenate(parts["trx"]),
        train_y=np.concatenate(parts["try"]).astype(np.int64),
        train_offsets=offsets("try"),
        test_x=np.concatenate(parts["tex"]),
        test_y=np.concatenate(parts["tey"]).astype(np.int64),
        test_offsets=offsets("tey"),
        num_classes=10,
    )


def _accuracy(model: nn.Module, data: FederatedData) -> float:
    with torch.no_grad():
        model.eval()
        hits = model(torch.from_numpy(data.test_x)).argmax(1) == torch.from_numpy(data.test_y)
        model.train()
    return float(hits.double().mean())


def loop_round(data: FederatedData, model: nn.Module, state: dict, seed: int, rnd: int) -> dict:
    """One FedAvg round as a plain loop: train each client one epoch, average."""
    return plain_fedavg_round(
        data, model, state, lr=LR, batch=BATCH, shuffle_seed=lambda c: seed + rnd * c
    )


def run_loop(data: FederatedData, rounds: int, seed: int) -> tuple[list[float], float]:
    torch.manual_seed(seed)
    model = cnn()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    times = []
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        state = loop_round(data, model, state, seed, r)
        model.load_state_dict(state)
        _accuracy(model, data)  # evaluated every round, as fedops does
        times.append(time.perf_counter() - t0)
    return times, _accuracy(model, data)


def run_floor(data: FederatedData, rounds: int, seed: int) -> tuple[list[float], float]:
    """One pass of every training example through one model, batches of 256, per round."""
    torch.manual_seed(seed)
    model = cnn()
    x, y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    opt, loss_fn = torch.optim.SGD(model.parameters(), lr=LR), nn.CrossEntropyLoss()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for lo in range(0, len(x), FLOOR_BATCH):
            opt.zero_grad()
            loss_fn(model(x[lo : lo + FLOOR_BATCH]), y[lo : lo + FLOOR_BATCH]).backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times, _accuracy(model, data)


def run_fedops(data: FederatedData, rounds: int, seed: int) -> tuple[list[float], float]:
    # Imported here: vs_flower.py's Ray workers import cnn() from this module.
    from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
    from fedops.simulation import engine
    from fedops.tasks import Task

    def load_data(site: int, num_sites: int):  # type: ignore[no-untyped-def]
        return data.client_train(site), data.client_test(site)

    task = Task(name="cnn_images", build_model=cnn, load_data=load_data)
    engine.load_federation = lambda _cfg: (task, data)  # the data generated above
    cfg = SimulateConfig(
        rounds=rounds, seed=seed, simulation=SimulationConfig(num_clients=data.num_clients)
    )
    cfg.client.epochs, cfg.client.batch_size, cfg.client.lr = 1, BATCH, LR
    with tempfile.TemporaryDirectory() as tmp:
        summary = engine.run_simulation(validate(cfg), Path(tmp) / "run")
        durations = [row["duration_s"] for row in read_jsonl(Path(tmp) / "run" / "metrics.jsonl")]
    return durations, summary["final_metrics"]["eval_accuracy"]


def run_cnn(clients: int, rounds: int, seed: int, threads: int = 0) -> int:
    """All three on the same data; ``threads``: torch threads (0: torch's default)."""
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    data = images(clients, seed)
    print(
        f"CNN on generated 28x28 images: {clients} clients, {len(data.train_y)} train rows "
        f"(generated in {time.perf_counter() - t0:.1f} s); Conv(1->8)-pool-Conv(8->16)-pool-"
        f"Linear(784->10), 1 local epoch, batch {BATCH}, lr {LR}, {rounds} rounds; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"1-min load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results = {
        "fedops (vectorized)": run_fedops(data, rounds, seed),
        "plain PyTorch loop": run_loop(data, rounds, seed),
        f"floor (one pass, batch {FLOOR_BATCH})": run_floor(data, rounds, seed),
    }
    s = {k: steady_median(t) for k, (t, _) in results.items()}
    best = {k: min(t) for k, (t, _) in results.items()}
    print("\n| | s/round (median of rounds 2..R) | best round | rounds | final accuracy |")
    print("|---|---:|---:|---|---:|")
    for name, (times, acc) in results.items():
        rounds_s = ", ".join(f"{t:.2f}" for t in times)
        print(f"| {name} | {s[name]:.2f} | {best[name]:.2f} | {rounds_s} | {acc:.4f} |")
    for label, v in (("median", s), ("best round", best)):
        fed, loop, floor = v.values()
        print(
            f"{label}: fedops / plain loop {fed / loop:.2f}x (goal <= 0.4x); fedops / floor "
            f"{fed / floor:.2f}x (goal <= 1.5x); plain loop / floor {loop / floor:.2f}x"
        )
    print(f"1-min load average at the end: {os.getloadavg()[0]:.1f}")
    return 0
