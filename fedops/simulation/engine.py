"""``fedops simulate``: a whole federation in this process, through the same driver.

Every virtual site is a :class:`~fedops.tasks.site.Site` behind an
:class:`~fedops.simulation.inmemory.InMemoryTransport`; strategy, round
driver, run store and metrics are exactly the coordinator's.
"""

from __future__ import annotations

from typing import Any

from fedops.core.training import TrainConfig
from fedops.runtime.driver import DriverConfig
from fedops.runtime.run import RunPlan, execute, make_strategy
from fedops.runtime.settings import SimulateConfig, as_dict
from fedops.runtime.store import RunStore
from fedops.simulation.inmemory import InMemoryTransport
from fedops.tasks import load_task
from fedops.tasks.site import Site, global_evaluator, initial_params


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
    plan = RunPlan(
        label="simulate",
        config=as_dict(cfg),
        strategy=make_strategy(cfg.strategy, mu=cfg.mu),
        driver=DriverConfig(
            rounds=cfg.rounds,
            min_clients=cfg.min_clients,
            clients_per_round=cfg.clients_per_round,
            seed=cfg.seed,
        ),
        initial_params=lambda: initial_params(task, cfg.seed),
        evaluate_global=global_evaluator(task),
        summary={"task": cfg.task, "strategy": cfg.strategy, "rounds_planned": cfg.rounds},
    )
    return execute(plan, store=RunStore(cfg.run_dir), transport=InMemoryTransport(sites))
