"""The children: fedops' real simulate path (vectorized backend), or Flower's (flower_side);
each run in its own interpreter by ``harness.run_json_child``."""

from __future__ import annotations

import time
from pathlib import Path

from harness import child_entry, read_jsonl, time_into


def child_fedops(spec: dict) -> dict:
    import torch

    from fedops.runtime.checkpoint_file import read_checkpoint
    from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
    from fedops.runtime.store import RunStore
    from fedops.simulation import engine

    if spec["fedops_threads"]:
        torch.set_num_threads(spec["fedops_threads"])
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
    engine.load_federation = time_into(
        engine.load_federation, lambda s: timing.__setitem__("data_s", s)
    )

    cfg = SimulateConfig(rounds=rounds, seed=seed, simulation=SimulationConfig(num_clients=n))
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


def child_main(spec_path: str) -> int:
    def run(spec: dict) -> dict:
        if spec["framework"] == "fedops":
            return child_fedops(spec)
        from vs_flower_parts.flower_side import child_flower

        return child_flower(spec)

    return child_entry(spec_path, run)
