"""(b) Flower, Ray simulation: a child process per run, in its own session. Ray's workers
import this module as ``secagg_parts.ray_side`` (the child's PYTHONPATH holds benchmarks/)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness import NO_TELEMETRY, child_entry, run_json_child, timed

from fedops.core.secagg import graph
from secagg_parts.workload import make_workload

ROOT = Path(__file__).resolve().parents[2]

_RAY_DELTAS: dict[tuple[int, ...], np.ndarray] = {}


def ray_client_fn(context):  # type: ignore[no-untyped-def]
    """The Ray runs' ClientApp client: replies with the received parameters plus a fixed update."""
    from flwr.client import NumPyClient

    class Client(NumPyClient):
        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            out = []
            for p in parameters:
                if p.shape not in _RAY_DELTAS:
                    _RAY_DELTAS[p.shape] = np.random.default_rng(0).normal(0, 0.01, p.shape)
                out.append((p + _RAY_DELTAS[p.shape]).astype(p.dtype))
            return out, 10, {}

    return Client().to_client()


def ray_server_app(spec: dict[str, Any], fit_s: list[float]) -> Any:
    """A ServerApp running ``spec["rounds"]`` rounds of FedAvg, the fit stage SecAgg+ or
    plain, each fit stage's seconds appended to ``fit_s``."""
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.default_workflows import default_fit_workflow

    n, rounds, secagg = spec["clients"], spec["rounds"], spec["mode"] == "secagg"
    work = make_workload(2, spec["params"])
    k = graph.default_degree(n)
    server_app = ServerApp()

    @server_app.main()
    def _main(grid, context) -> None:  # type: ignore[no-untyped-def]
        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=n,
            min_available_clients=n,
            initial_parameters=ndarrays_to_parameters(list(work.start.values())),
        )
        legacy = LegacyContext(context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        fit = (
            SecAggPlusWorkflow(
                num_shares=k + 1, reconstruction_threshold=k // 2 + 1, clipping_range=1.0
            )
            if secagg
            else default_fit_workflow
        )

        def timed_fit(grid, ctx) -> None:  # type: ignore[no-untyped-def]
            fit_s.append(timed(fit, grid, ctx)[1])

        DefaultWorkflow(fit_workflow=timed_fit)(grid, legacy)

    return server_app


def simulate(spec: dict[str, Any]) -> dict[str, Any]:
    """One Flower run_simulation, secagg or plain: its fit times and wall time."""
    from flwr.client import ClientApp
    from flwr.client.mod import secaggplus_mod
    from flwr.simulation import run_simulation

    fit_s: list[float] = []
    server_app = ray_server_app(spec, fit_s)
    mods = [secaggplus_mod] if spec["mode"] == "secagg" else []
    client_app = ClientApp(client_fn=ray_client_fn, mods=mods)
    t = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=spec["clients"],
        backend_name="ray",
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": spec["cpus"], "num_gpus": 0},
        },
    )
    wall = time.perf_counter() - t
    if len(fit_s) != spec["rounds"]:
        raise RuntimeError(f"Flower finished {len(fit_s)} of {spec['rounds']} rounds")
    return {"fit_s": fit_s, "wall_s": wall}


def ray_child(spec_path: str) -> int:
    """Child process: one Flower run_simulation, secagg or plain; writes fit times as JSON."""
    return child_entry(spec_path, simulate)


def run_ray(mode: str, clients: int, params: int, rounds: int, timeout: float) -> dict[str, Any]:
    """One Ray simulation in its own session; never raises for a failed run."""
    with tempfile.TemporaryDirectory(prefix="secagg-ray-") as tmp:
        spec = {
            "mode": mode,
            "clients": clients,
            "params": params,
            "rounds": rounds,
            "cpus": os.cpu_count() or 2,
        }
        run = run_json_child(
            "secagg_parts.ray_side",
            "ray_child",
            spec,
            Path(tmp),
            timeout=timeout,
            pythonpath=[ROOT],
            env=NO_TELEMETRY,
        )
        out: dict[str, Any] = {"status": run.status, "process_s": run.seconds}
        if run.result is not None:
            out.update(run.result)
        else:
            out["log_tail"] = run.log_tail
        return out
