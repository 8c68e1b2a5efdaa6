"""``fedops simulate``: a whole federation in this process, through the same driver.

Every virtual site is a :class:`~fedops.tasks.site.Site` behind an
:class:`~fedops.simulation.inmemory.InMemoryTransport`; strategy, round
driver, run store and metrics are exactly the coordinator's.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from fedops.core.training import TrainConfig, get_params
from fedops.runtime.driver import DriverConfig, RoundDriver
from fedops.runtime.progress import RoundProgress
from fedops.runtime.run import make_strategy, start_or_resume
from fedops.runtime.settings import SimulateConfig, as_dict
from fedops.runtime.store import RunStore
from fedops.simulation.inmemory import InMemoryTransport
from fedops.tasks import load_task
from fedops.tasks.site import Site, global_evaluator

log = logging.getLogger("fedops.simulate")


def run_simulation(cfg: SimulateConfig) -> dict[str, Any]:
    """Run (or resume) a simulated federation; return its summary."""
    assert cfg.task is not None
    task = load_task(cfg.task, **cfg.builtin_options())
    train_config = TrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer
    )
    sites = [
        Site(task, site=i, num_sites=cfg.num_sites, train_config=train_config)
        for i in range(cfg.num_sites)
    ]
    transport = InMemoryTransport(sites)
    store = RunStore(cfg.run_dir)
    config = as_dict(cfg)

    def initial_params():
        torch.manual_seed(cfg.seed)
        return get_params(task.build_model())

    status = "failed"
    try:
        start = start_or_resume(store, config, initial_params)
        with RoundProgress(
            total_rounds=cfg.rounds, first_round=start.start_round, label=f"simulate {start.run_id}"
        ) as progress:
            RoundDriver(
                transport=transport,
                strategy=make_strategy(cfg.strategy, mu=cfg.mu),
                config=DriverConfig(
                    rounds=cfg.rounds,
                    min_clients=cfg.min_clients,
                    clients_per_round=cfg.clients_per_round,
                    seed=cfg.seed,
                ),
                store=store,
                evaluate_global=global_evaluator(task),
                on_round=progress.update,
            ).run(start.params, start_round=start.start_round)
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
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
