"""The workloads: one federation each, run in every mode."""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from harness import compose_simulate

from fedops.runtime.settings import ConfigError
from fedops.runtime.simulate_settings import SimulateConfig, validate
from fedops.simulation import engine
from privacy_parts.interleave import data_key, instrumented, model_task, run_interleaved, summarize
from privacy_parts.modes import MODES, threadpool_limits


@dataclass
class Workload:
    """One federation, run in every mode of ``modes`` (``none`` first: the baseline)."""

    tag: str
    name: str
    title: str
    overrides: list[str]
    rounds: int
    modes: list[str]
    per_round: int


def workloads(args: argparse.Namespace) -> list[Workload]:
    def fleet(per_round: int) -> list[str]:
        return [
            "+scenario=fleet_1000",
            f"simulation.num_clients={args.clients}",
            f"simulation.clients_per_round={per_round}",
            f"seed={args.seed}",
        ]

    dp = ["none", "central", "central_poisson", "central_adaptive", "distributed", "secaggplus"]
    n = args.per_round
    return [
        Workload(
            "a", "logreg", "logistic regression, vectorized backend", fleet(n), args.rounds, dp, n
        ),
        Workload(
            "b",
            "mlp",
            f"MLP (hidden {args.hidden}), vectorized backend",
            [*fleet(n), "model=mlp", f"model.hidden={args.hidden}"],
            args.mlp_rounds,
            dp + ([] if args.quick or threadpool_limits is None else ["central_blas1"]),
            n,
        ),
        Workload(
            "c",
            "local",
            "logistic regression, the default (batched) backend, local DP-SGD",
            fleet(args.local_per_round),
            args.local_rounds,
            ["none", "local"],
            args.local_per_round,
        ),
    ]


def check_mode(overrides: list[str]) -> SimulateConfig | str:
    """The validated config, or why ``validate`` (or composition) refuses it."""
    try:
        return validate(compose_simulate(overrides))
    except ConfigError as exc:
        return f"{exc.key}: {exc.message}"
    except Exception as exc:  # composition itself refused it (e.g. no such config group option)
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


def run_workload(w: Workload, data_cache: dict[str, Any]) -> dict[str, Any]:
    checked = {m: check_mode([*w.overrides, f"rounds={w.rounds}", *MODES[m][1]]) for m in w.modes}
    configs = {m: c for m, c in checked.items() if isinstance(c, SimulateConfig)}
    if "none" not in configs:
        raise SystemExit(f"the baseline of workload {w.name} does not validate: {checked['none']}")
    with (
        tempfile.TemporaryDirectory(prefix=f"fedops-privacy-{w.name}-") as tmp,
        instrumented(data_cache),
    ):
        t = time.perf_counter()
        results = run_interleaved(configs, w.rounds, Path(tmp))
        wall = time.perf_counter() - t
        summary = summarize(results)
    cfg = configs["none"]
    initial = engine.initial_model(model_task(cfg, data_cache[data_key(cfg)]), cfg.seed)
    return {
        "tag": w.tag,
        "name": w.name,
        "title": w.title,
        "overrides": w.overrides,
        "rounds": w.rounds,
        "per_round": w.per_round,
        "num_params": sum(p.numel() for p in initial.parameters()),
        "initial": model_like(initial),
        "wall_s": wall,
        "modes": summary,
        "not_available": {m: c for m, c in checked.items() if isinstance(c, str)},
    }


def model_like(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
