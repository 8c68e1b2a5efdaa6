"""Which backend runs a simulation: the batched one unless the task truly cannot be batched.

``simulation.backend=vectorized`` (the default) means "as fast as this task allows":
every client's data in flat arrays (pairs, TensorDatasets and map-style Datasets are
read into them once), per-round data reloaded each round, monitoring counted for all
clients together. What the batched trainers cannot run is a user ``train()`` or
``evaluate()`` (fedops' own loop is what they batch), another optimizer than SGD, a
model :func:`fedops.core.vectorized.supports` refuses (buffers outside a chain whose
BatchNorm statistics :mod:`fedops.core.batched_cnn` keeps per client). Local DP-SGD is
batched too (:mod:`fedops.simulation.local_dp_sites`: every site's own policy, ledger,
Poisson batches and noise). Such a run goes to the fastest backend that can run it, and says
so in one log line, never an error: Hydra composes the default and an explicit
``simulation=vectorized`` into the same config, so the two cannot be told apart, and a
run that works beats a run that refuses.
Naming ``sequential``, ``process`` or ``ray`` is never overridden.
"""

from __future__ import annotations

import dataclasses
import logging

from fedops.core.vectorized import supports
from fedops.runtime.simulate_settings import BATCHED_ONLY_KEYS, SimulateConfig, SimulationConfig
from fedops.tasks import load_task

log = logging.getLogger("fedops.simulate")


def settle_backend(cfg: SimulateConfig) -> SimulateConfig:
    """``cfg`` with the backend the run goes with (``cfg`` itself when it stays)."""
    backend = choose_backend(cfg)
    if backend == cfg.simulation.backend:
        return cfg
    return dataclasses.replace(cfg, simulation=dataclasses.replace(cfg.simulation, backend=backend))


def choose_backend(cfg: SimulateConfig) -> str:
    """``cfg``'s backend, or the fastest one that can run what the batched one cannot."""
    if cfg.simulation.backend != "vectorized":
        return cfg.simulation.backend
    why = batching_refusal(cfg)
    if why is None:
        return "vectorized"
    backend = FALLBACK
    log.warning(
        "simulation runs on the %s backend, not the batched one: %s%s",
        backend,
        why,
        _unused_there(cfg.simulation),
    )
    return backend


def _unused_there(s: SimulationConfig) -> str:
    """The batched backend's keys the user set, which the fallback does not read: said
    with the move, never dropped without a word."""
    unused = [f"simulation.workers={s.workers}"] if s.workers is not None else []
    unused += [
        f"simulation.{key}={getattr(s, key)}"
        for key in BATCHED_ONLY_KEYS
        if getattr(s, key) != getattr(SimulationConfig, key)
    ]
    return f" ({', '.join(unused)} not used there: it runs one client at a time)" if unused else ""


def batching_refusal(cfg: SimulateConfig) -> str | None:
    """Why the batched backend cannot run this task as a site would, or None if it can."""
    if cfg.flower_app:
        return f"flower_app={cfg.flower_app} trains in the Flower app's own loop, client by client"
    if cfg.client.optimizer != "sgd":
        return f"client.optimizer={cfg.client.optimizer} (the batched trainers run SGD)"
    if not cfg.task:
        return None  # a built-in dataset's logreg/MLP
    task = load_task(cfg.task)
    if task.train is not None:
        return f"task {task.name!r} has its own train(), which runs client by client"
    if task.evaluate is not None:
        return f"task {task.name!r} has its own evaluate(), which runs client by client"
    reason = supports(task.build_model())
    return None if reason is None else f"task {task.name!r}: {reason}"


#: where a task the batched trainers cannot run goes: the sequential backend runs anything
#: a site runs, in this process. Not the process pool: measured on the 2-core machine (a
#: digits task with its own train(), 1 epoch), sequential took 3.1 s for 20 clients x 3
#: rounds where 2 workers took 3.4 s, and 2.3 s for 100 x 5 where they took 3.4 s (spawning
#: them, torch in each, costs more than they save); and a pool spawned behind a user's back
#: re-imports the user's script, which fails without an `if __name__ == "__main__"` guard.
#: Heavy per-client work on spare cores: name simulation=process.
FALLBACK = "sequential"
