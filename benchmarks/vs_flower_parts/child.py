"""The children: fedops' real simulate path (vectorized backend), Flower's (flower_side), or,
for the CNN, the plain per-client loop and the compute floor of ``vs_floor_cnn.py``; each run
in its own interpreter by ``harness.run_json_child``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from harness import child_entry, read_jsonl, time_into

from vs_flower_parts.shared import federation


def _cnn_federation(spec: dict, timing: dict[str, float]) -> Any:
    """``engine.load_federation`` for the CNN: the generated images and a task training
    ``vs_floor_cnn.cnn`` (as ``vs_floor.py --model cnn`` runs it), data generation timed."""

    def load(_cfg: Any) -> Any:
        from vs_floor_cnn import cnn

        from fedops.tasks import Task

        t = time.perf_counter()
        data = federation("cnn", spec["clients"], spec["seed"])
        timing["data_s"] = time.perf_counter() - t

        def load_data(site: int, num_sites: int) -> Any:
            return data.client_train(site), data.client_test(site)

        return Task(name="cnn_images", build_model=cnn, load_data=load_data), data

    return load


def child_fedops(spec: dict) -> dict:
    import torch

    from fedops.runtime.checkpoint_file import read_checkpoint
    from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
    from fedops.runtime.store import RunStore
    from fedops.simulation import engine

    n, seed, rounds = spec["clients"], spec["seed"], spec["rounds"]

    # Time rounds from commit to commit (the checkpoint and metrics writes included).
    commits: dict[int, float] = {}
    real_save = RunStore.save_round

    def save_round(self, server_round, *args, **kwargs):  # type: ignore[no-untyped-def]
        digest = real_save(self, server_round, *args, **kwargs)
        commits[server_round] = time.perf_counter()
        return digest

    RunStore.save_round = save_round  # type: ignore[method-assign]
    # fedops generates the data itself, as `fedops simulate dataset=synthetic` does (the
    # dataset group's defaults are Synthetic(1, 1) with the generator's own defaults); the
    # wrapper only times it, so that start-up can be reported without data generation.
    timing: dict[str, float] = {}
    if spec["model"] == "cnn":
        engine.load_federation = _cnn_federation(spec, timing)
    else:
        engine.load_federation = time_into(
            engine.load_federation, lambda s: timing.__setitem__("data_s", s)
        )

    # fedops' own setting: 0 keeps torch's default (one thread per core); fedops defaults to 1
    # and sets it itself, so a set_num_threads here would be overridden.
    simulation = SimulationConfig(
        num_clients=n, threads=spec["fedops_threads"], workers=spec.get("fedops_workers", 2)
    )
    cfg = SimulateConfig(rounds=rounds, seed=seed, simulation=simulation)
    if spec["model"] != "cnn":
        cfg.dataset.name = "synthetic"
    cfg.client.epochs, cfg.client.batch_size, cfg.client.lr = 1, spec["batch"], spec["lr"]
    run_dir = Path(spec["work_dir"]) / "run"
    t_call = time.perf_counter()
    engine.run_simulation(validate(cfg), run_dir)
    t_end = time.perf_counter()

    metrics = read_jsonl(run_dir / "metrics.jsonl")
    params = read_checkpoint(run_dir / "checkpoints" / f"round-{rounds:05d}.safetensors")
    return {
        "data_s": timing["data_s"],
        "startup_s": commits[0] - t_call - timing["data_s"],
        "rounds_s": [commits[r] - commits[r - 1] for r in range(1, rounds + 1)],
        "teardown_s": t_end - commits[rounds],
        "params": {k: v.tolist() for k, v in params.items()},
        "reported_accuracy": {i + 1: m["eval_accuracy"] for i, m in enumerate(metrics)},
        "torch_threads": torch.get_num_threads(),
    }


def child_loop(spec: dict) -> dict:
    """The CNN's plain per-client loop, then its compute floor (``vs_floor_cnn``'s own), on
    the same data; both scored by the child (no parameters travel back)."""
    import torch
    from vs_floor_cnn import run_floor, run_loop

    if spec["fedops_threads"]:
        torch.set_num_threads(spec["fedops_threads"])
    t = time.perf_counter()
    data = federation("cnn", spec["clients"], spec["seed"])
    data_s = time.perf_counter() - t
    loop_s, loop_accuracy = run_loop(data, spec["rounds"], spec["seed"])
    floor_s, floor_accuracy = run_floor(data, spec["rounds"], spec["seed"])
    return {
        "data_s": data_s,
        "rounds_s": loop_s,
        "accuracy": loop_accuracy,
        "floor_rounds_s": floor_s,
        "floor_accuracy": floor_accuracy,
        "torch_threads": torch.get_num_threads(),
    }


def child_main(spec_path: str) -> int:
    def run(spec: dict) -> dict:
        if spec["framework"] == "fedops":
            return child_fedops(spec)
        if spec["framework"] == "loop":
            return child_loop(spec)
        from vs_flower_parts.flower_side import child_flower

        return child_flower(spec)

    return child_entry(spec_path, run)
