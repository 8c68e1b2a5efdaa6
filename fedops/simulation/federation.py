"""The federation every simulated client belongs to: its task, its data, its threads.

Shared by the engine (in the parent) and by the out-of-process workers, which are sent
a :class:`FederationSpec` (a few settings as JSON), not the whole run configuration, and
rebuild the same task and data from it. Nothing here opens a run's records.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from fedops.core.partition import SplitError
from fedops.data import FederatedData
from fedops.data.build import DATASETS, from_task
from fedops.runtime.settings import ConfigError
from fedops.runtime.simulate_settings import (
    DatasetConfig,
    ModelConfig,
    PartitionConfig,
    SimulateConfig,
)
from fedops.tasks import Task, load_task
from fedops.tasks.dataset_task import task_from_data
from fedops.tasks.monitor import takes_round


@dataclass(frozen=True)
class FederationSpec:
    """What decides every client's task and data (see :func:`build_federation`)."""

    task: str | None
    dataset: DatasetConfig
    partition: PartitionConfig
    model: ModelConfig
    num_clients: int
    seed: int
    vectorized: bool  # the vectorized backend holds every client's data at once

    @classmethod
    def of(cls, cfg: SimulateConfig) -> FederationSpec:
        return cls(
            task=cfg.task,
            dataset=cfg.dataset,
            partition=cfg.partition,
            model=cfg.model,
            num_clients=cfg.simulation.num_clients,
            seed=cfg.seed,
            vectorized=cfg.simulation.backend == "vectorized",
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FederationSpec:
        body = json.loads(text)
        return cls(
            **{
                **body,
                "dataset": DatasetConfig(**body["dataset"]),
                "partition": PartitionConfig(**body["partition"]),
                "model": ModelConfig(**body["model"]),
            }
        )


def load_federation(cfg: SimulateConfig) -> tuple[Task, FederatedData | None]:
    """The task every client runs, and (for built-in data) all clients' rows."""
    return build_federation(FederationSpec.of(cfg))


def build_federation(spec: FederationSpec) -> tuple[Task, FederatedData | None]:
    """:func:`load_federation` from the spec alone (what a worker process is sent)."""
    n = spec.num_clients
    if spec.task:
        task = load_task(spec.task)
        first = 0 if takes_round(task.load_data) else None  # round 0: the drift reference
        data = from_task(task, n, first) if spec.vectorized else None
        return task, data
    d, p = spec.dataset, spec.partition
    if d.name == "synthetic":
        data = DATASETS["synthetic"](
            num_clients=n,
            alpha=d.alpha,
            beta=d.beta,
            iid=d.iid,
            num_features=d.num_features,
            num_classes=d.num_classes,
            seed=spec.seed,
            mean_log=d.mean_log,
            sigma_log=d.sigma_log,
            min_samples=d.min_samples,
            max_samples=d.max_samples,
        )
    else:
        try:
            data = DATASETS[d.name](num_clients=n, partition=p.name, alpha=p.alpha, seed=spec.seed)
        except SplitError as exc:
            raise ConfigError("simulation.num_clients", str(exc)) from exc
    task = task_from_data(data, name=d.name, model=spec.model.name, hidden=spec.model.hidden)
    return task, data


def round_loader(task: Task, num_clients: int) -> Callable[[int], FederatedData] | None:
    """``round -> every client's data of that round``, for a task whose data changes per
    round (``load_data`` takes the round); None for one whose data is fixed."""
    if not takes_round(task.load_data):
        return None
    return lambda server_round: from_task(task, num_clients, server_round)


def use_threads(threads: int) -> None:
    """One torch thread by default: measured here, two threads per process gained nothing on
    an idle 2-core machine and made rounds 2-8x slower once other work shared the cores."""
    if threads:
        torch.set_num_threads(threads)
