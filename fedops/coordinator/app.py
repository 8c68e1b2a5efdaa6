"""``fedops coordinator``: serve one run until its last round, resuming if asked."""

from __future__ import annotations

import logging
from typing import Any

import torch

from fedops.coordinator.server import build_server
from fedops.coordinator.transport import GrpcTransport
from fedops.core.params import Params
from fedops.core.training import get_params
from fedops.runtime.driver import DriverConfig, RoundDriver
from fedops.runtime.progress import RoundProgress
from fedops.runtime.run import make_strategy, start_or_resume
from fedops.runtime.settings import CoordinatorConfig, as_dict
from fedops.runtime.store import RunStore
from fedops.tasks import load_task
from fedops.tasks.site import global_evaluator

log = logging.getLogger("fedops.coordinator")

INSECURE_WARNING = (
    "WARNING: serving plaintext gRPC (no TLS, no client certificates) on %s. Anyone who can "
    "reach this address can join the run. Use this for local development only."
)


class BindError(RuntimeError):
    pass


def run_coordinator(cfg: CoordinatorConfig) -> dict[str, Any]:
    """Run (or resume) the configured run; return its summary."""
    store = RunStore(cfg.run_dir, keep_checkpoints=cfg.keep_checkpoints)
    config = {k: v for k, v in as_dict(cfg).items() if k != "address"}
    run_id, _ = store.open_run(config)
    task = load_task(cfg.task, **cfg.builtin_options()) if cfg.task else None
    transport = GrpcTransport(
        run_id=run_id,
        heartbeat_interval_s=cfg.heartbeat_interval_s,
        liveness_timeout_s=cfg.liveness_timeout_s,
        on_rejection=store.record_rejection,
    )
    server = build_server(transport, max_workers=cfg.max_workers)
    if server.add_insecure_port(cfg.address) == 0:
        raise BindError(f"cannot listen on {cfg.address} (in use or not a local address)")
    log.warning(INSECURE_WARNING, cfg.address)
    server.start()
    log.info("coordinator for run %s listening on %s", run_id, cfg.address)

    def initial_params() -> Params:
        if task is not None:
            torch.manual_seed(cfg.seed)
            return get_params(task.build_model())
        log.info("no --task: taking the initial model from the first client")
        return transport.fetch_initial_params(cfg.join_timeout_s)

    status = "failed"
    try:
        start = start_or_resume(store, config, initial_params)
        with RoundProgress(
            total_rounds=cfg.rounds, first_round=start.start_round, label=f"run {run_id}"
        ) as progress:
            driver = RoundDriver(
                transport=transport,
                strategy=make_strategy(cfg.strategy, mu=cfg.mu),
                config=DriverConfig(
                    rounds=cfg.rounds,
                    min_clients=cfg.min_clients,
                    clients_per_round=cfg.clients_per_round,
                    round_timeout_s=cfg.round_timeout_s,
                    join_timeout_s=cfg.join_timeout_s,
                    seed=cfg.seed,
                ),
                store=store,
                evaluate_global=global_evaluator(task) if task else None,
                site_names=transport.registry.site_name,
                on_round=progress.update,
            )
            driver.run(start.params, start_round=start.start_round)
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        transport.close(grace_s=5.0 if status == "completed" else 0.5)
        server.stop(grace=1.0).wait(5)
        summary = store.write_summary(
            {
                "status": status,
                "task": cfg.task,
                "strategy": cfg.strategy,
                "rounds_planned": cfg.rounds,
            }
        )
        store.close()
    return summary
