"""``fedops simulate flower_app=module:app``: a Flower app as every virtual client.

Virtual client ``i`` of ``N`` is a :class:`~fedops.tasks.flower_site.FlowerSite` with
Flower's ``node_config`` ``partition-id=i``, ``num-partitions=N``, driven one after
another by the sequential backend (:class:`~fedops.simulation.inmemory.InMemoryTransport`),
the backend a deployed agent's code runs on; the batched backend's trainers cannot run
a training loop that lives in the app (:mod:`fedops.simulation.backend_choice` says so
in the run's log). The run's first model is the app's own (``flower_initial``, or a
NumPyClient's ``get_parameters``), as a coordinator without a task takes a site's.
"""

from __future__ import annotations

from fedops.core.training import TrainConfig
from fedops.runtime.rules import ConfigError
from fedops.runtime.simulate_settings import SimulateConfig
from fedops.tasks.contract import Task
from fedops.tasks.flower_app import FlowerApp, FlowerAppError, load_flower_app
from fedops.tasks.flower_site import FlowerSite, flower_task

__all__ = ["flower_run_task", "flower_sites", "load_app"]


def load_app(cfg: SimulateConfig) -> FlowerApp:
    """The configured app; what cannot be loaded is a ConfigError naming the key."""
    assert cfg.flower_app is not None
    try:
        app = load_flower_app(cfg.flower_app, initial=cfg.flower_initial)
    except FlowerAppError as exc:
        raise ConfigError("flower_app", str(exc)) from exc
    if app.message_api and app.initial is None:
        raise ConfigError(
            "flower_initial",
            f"{cfg.flower_app} is a Message API ClientApp, which has no first model of its "
            "own (in Flower its ServerApp supplies initial_arrays): set flower_initial="
            "module:attr, a callable that builds it",
        )
    return app


def flower_run_task(cfg: SimulateConfig) -> Task:
    """The app as the run's task: its name and digest for the run's records."""
    return flower_task(load_app(cfg))


def flower_sites(cfg: SimulateConfig, train: TrainConfig) -> list[FlowerSite]:
    """One site per virtual client, all running the one loaded app."""
    app = load_app(cfg)
    n = cfg.simulation.num_clients
    return [
        FlowerSite(app, site=i, num_sites=n, train_config=train, seed=cfg.seed) for i in range(n)
    ]
