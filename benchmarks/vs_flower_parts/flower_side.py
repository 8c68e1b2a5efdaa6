"""Flower's side: a ServerApp with Flower's FedAvg, a ClientApp on Ray virtual clients.

The ClientApp trains whichever model the run's config names (``model``: logistic regression,
or the two-conv CNN of ``vs_floor_cnn.py``) in plain PyTorch."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vs_flower_parts.shared import build_model, federation, make_model, shuffle_order

WARMUP_MESSAGES_PER_ACTOR = 4
_CLIENT_DATA: dict[str, dict[str, np.ndarray]] = {}  # per Ray worker process: data dir -> arrays


def _client_rows(data_dir: str, split: str, partition: int):  # type: ignore[no-untyped-def]
    """Partition ``partition``'s rows, memory-mapped once per Ray worker (like a cached dataset)."""
    import torch

    arrays = _CLIENT_DATA.get(data_dir)
    if arrays is None:
        arrays = {p.stem: np.load(p, mmap_mode="r") for p in Path(data_dir).glob("*.npy")}
        _CLIENT_DATA[data_dir] = arrays
    off = arrays[f"{split}_offsets"]
    a, b = int(off[partition]), int(off[partition + 1])
    x = torch.from_numpy(np.array(arrays[f"{split}_x"][a:b]))
    y = torch.from_numpy(np.array(arrays[f"{split}_y"][a:b]))
    return x, y


def flower_train(msg, context):  # type: ignore[no-untyped-def]
    """ClientApp train: load the global arrays, one local epoch of SGD, reply with arrays."""
    import torch
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from torch import nn

    cfg = msg.content["config"]
    partition = int(context.node_config["partition-id"])
    x, y = _client_rows(str(cfg["data-dir"]), "train", partition)
    model = make_model(str(cfg["model"]), x[0].numel(), int(cfg["num-classes"]))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=float(cfg["lr"]))
    loss_fn = nn.CrossEntropyLoss()
    batch = int(cfg["batch-size"])
    order = shuffle_order(len(x), int(cfg["seed"]), int(cfg["server-round"]), partition)
    total = 0.0
    for lo in range(0, len(x), batch):
        idx = order[lo : lo + batch]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"train_loss": total / max(len(x), 1), "num-examples": len(x)}),
        }
    )
    return Message(content=content, reply_to=msg)


def flower_evaluate(msg, context):  # type: ignore[no-untyped-def]
    """ClientApp evaluate: accuracy and loss of the global model on this client's test rows."""
    import torch
    from flwr.app import Message, MetricRecord, RecordDict
    from torch import nn

    cfg = msg.content["config"]
    x, y = _client_rows(str(cfg["data-dir"]), "test", int(context.node_config["partition-id"]))
    model = make_model(str(cfg["model"]), x[0].numel(), int(cfg["num-classes"]))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    with torch.no_grad():
        logits = model(x)
        loss = float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct = int((logits.argmax(1) == y).sum())
    n = max(len(y), 1)
    metrics = {"accuracy": correct / n, "loss": loss / n, "num-examples": len(y)}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


def flower_query(msg, context):  # type: ignore[no-untyped-def]
    """Warm-up: touch this worker's data cache, torch and the model, reply with nothing."""
    from flwr.app import Message, RecordDict

    cfg = msg.content["config"]
    x, _ = _client_rows(str(cfg["data-dir"]), "train", 0)
    make_model(str(cfg["model"]), x[0].numel(), int(cfg["num-classes"]))
    return Message(content=RecordDict(), reply_to=msg)


def make_client_app():  # type: ignore[no-untyped-def]
    from flwr.clientapp import ClientApp

    app = ClientApp()
    app.train()(flower_train)
    app.evaluate()(flower_evaluate)
    app.query()(flower_query)
    return app


def write_partitions(spec: dict) -> tuple[Path, int, int, float]:
    """Generate the federation once and save its arrays for the Ray workers to map; the
    driver keeps none of the rows. Returns (data dir, features, classes, seconds)."""
    t = time.perf_counter()
    data = federation(spec["model"], spec["clients"], spec["seed"])
    data_dir = Path(spec["work_dir"]) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in ("train_x", "train_y", "train_offsets", "test_x", "test_y", "test_offsets"):
        np.save(data_dir / f"{name}.npy", getattr(data, name))
    num_features, num_classes = data.num_features, data.num_classes
    del data  # the driver does not need the rows; every Ray worker maps them from disk
    return data_dir, num_features, num_classes, time.perf_counter() - t


@dataclass
class ServerLog:
    """What the ServerApp saw: when the warm-up ended, the end of each round (and its
    start: the first entry), the final arrays and the accuracy Flower reported."""

    warm: float = 0.0
    round_ends: list[float] = field(default_factory=list)
    params: dict[str, np.ndarray] | None = None
    reported_accuracy: dict[int, float] = field(default_factory=dict)
    warmup_errors: int = 0


def warm_up(grid: Any, config: Any, spec: dict, log: ServerLog) -> None:
    """Start-up, not a round: wait for the Ray actor pool and let every actor import torch
    and map the data once, through a few query messages."""
    from flwr.app import Message, MessageType, RecordDict

    n = spec["clients"]
    deadline = time.monotonic() + spec["timeout"]
    while len(node_ids := list(grid.get_node_ids())) < n and time.monotonic() < deadline:
        time.sleep(0.05)  # the SuperNodes register after the ServerApp thread starts
    k = min(len(node_ids), WARMUP_MESSAGES_PER_ACTOR * spec["flower_actors"])
    warm = [
        Message(RecordDict({"config": config}), dst_node_id=i, message_type=MessageType.QUERY)
        for i in node_ids[:k]
    ]
    replies = list(grid.send_and_receive(warm, timeout=spec["timeout"]))
    log.warmup_errors = sum(r.has_error() for r in replies)
    log.warm = time.perf_counter()


def server_app(spec: dict, config: Any, initial: Any, log: ServerLog) -> Any:
    """The ServerApp: the warm-up, then Flower's own FedAvg for ``spec["rounds"]`` rounds."""
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg

    app = ServerApp()

    @app.main()
    def _main(grid, context) -> None:  # type: ignore[no-untyped-def]
        warm_up(grid, config, spec, log)

        def evaluate_fn(server_round, arrays):  # type: ignore[no-untyped-def]
            log.round_ends.append(time.perf_counter())  # before round 1 and after each round

        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0)
        result = strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=spec["rounds"],
            timeout=spec["timeout"],
            train_config=config,
            evaluate_config=config,
            evaluate_fn=evaluate_fn,
        )
        log.params = {k: v.numpy() for k, v in result.arrays.items()}
        log.reported_accuracy = {
            r: float(m["accuracy"]) for r, m in result.evaluate_metrics_clientapp.items()
        }

    return app


def child_flower(spec: dict) -> dict:
    """Child process: one Flower run_simulation on Ray; start-up, rounds, final arrays."""
    import torch
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.simulation import run_simulation

    n, seed, rounds = spec["clients"], spec["seed"], spec["rounds"]
    data_dir, num_features, num_classes, data_s = write_partitions(spec)
    config = ConfigRecord(
        {
            "data-dir": str(data_dir),
            "lr": spec["lr"],
            "batch-size": spec["batch"],
            "seed": seed,
            "num-classes": num_classes,
            "model": spec["model"],
        }
    )
    initial = ArrayRecord(build_model(num_features, num_classes, seed, spec["model"]).state_dict())
    log = ServerLog()
    app = server_app(spec, config, initial, log)
    backend_config = {
        "client_resources": {"num_cpus": spec["flower_client_cpus"], "num_gpus": 0.0},
        "init_args": {"num_cpus": spec["cpus"], "num_gpus": 0},
    }
    torch.set_num_threads(1)  # the driver only aggregates; leave the cores to the actors
    t_call = time.perf_counter()
    run_simulation(
        server_app=app,
        client_app=make_client_app(),
        num_supernodes=n,
        backend_name="ray",
        backend_config=backend_config,
    )
    t_end = time.perf_counter()
    round_ends = log.round_ends
    if log.params is None or len(round_ends) != rounds + 1:
        raise RuntimeError(f"Flower finished {max(len(round_ends) - 1, 0)} of {rounds} rounds")
    return {
        "data_s": data_s,
        "startup_s": log.warm - t_call,
        "rounds_s": list(np.diff(round_ends)),
        "teardown_s": t_end - round_ends[-1],
        "params": {k: v.tolist() for k, v in log.params.items()},
        "reported_accuracy": log.reported_accuracy,
        "warmup_errors": log.warmup_errors,
    }
