"""The simulator's configuration tree: one dataclass per Hydra config group.

These are Hydra structured-config schemas (registered in
:mod:`fedops.config.hydra_app`) and, once composed and converted, the very
objects the simulation runtime reads. Types are checked by OmegaConf when
the config is composed (an unknown key or a string for an int fails there,
naming the key); ranges and choices are checked by :func:`validate`, which
names the dotted key it refuses.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from fedops.core.secagg import graph
from fedops.runtime.rules import ConfigError
from fedops.runtime.schema import (
    ClientTrainConfig,
    MonitoringConfig,
    PrivacyConfig,
    SecAggConfig,
    StrategyConfig,
)
from fedops.runtime.section_rules import (
    check_monitoring_section,
    check_privacy_section,
    check_read,
    check_rounds,
    check_secagg_section,
    check_seed,
    check_strategy_fits,
    check_strategy_options,
    check_train,
)
from fedops.tasks.flower_app import (
    LOCAL_DP_REFUSAL,
    MONITORING_REFUSAL,
    FlowerAppError,
    split_spec,
)

DATASETS = ("digits", "breast_cancer", "synthetic")
PARTITIONS = ("iid", "dirichlet")
MODELS = ("logreg", "mlp")
BACKENDS = ("vectorized", "sequential", "process", "ray")
DEVICES = ("cpu", "cuda", "auto")
#: simulation.data: every client's rows held, or each round's loaded as it starts (auto: by size)
DATA_MODES = ("auto", "memory", "lazy")
#: simulation.ray_address: ``auto``, or a head's ``HOST:PORT`` / ``ray://HOST:PORT``
RAY_ADDRESS = re.compile(r"auto|(?:ray://)?(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})")
#: the backends that read simulation.workers, and what they run that many of
WORKER_BACKENDS = {"vectorized": "threads", "process": "processes", "ray": "actors"}
#: the vectorized backend's own keys: no other backend reads them
BATCHED_ONLY_KEYS = ("device", "max_chunk")
#: simulation.workers left unset (null): the vectorized backend's CPU threads, the process
#: pool's processes, Ray's actors (one CPU each)
DEFAULT_WORKERS = 2

log = logging.getLogger("fedops.simulate")


@dataclass
class DatasetConfig:
    """Built-in data. ``synthetic`` is FedProx's Synthetic(alpha, beta)."""

    name: str = "digits"
    alpha: float = 1.0
    beta: float = 1.0
    iid: bool = False
    num_features: int = 60
    num_classes: int = 10
    mean_log: float = 4.0
    sigma_log: float = 2.0
    min_samples: int = 50
    max_samples: int | None = None


@dataclass
class PartitionConfig:
    """How digits / breast cancer rows are split across clients (synthetic is per client)."""

    name: str = "dirichlet"
    alpha: float = 0.5


@dataclass
class ModelConfig:
    name: str = "logreg"
    hidden: int = field(default=64, metadata={"modes": ("mlp",)})


@dataclass
class SimulationConfig:
    backend: str = "vectorized"
    num_clients: int = 5
    clients_per_round: int | None = None
    dropout_rate: float = 0.0
    straggler_rate: float = 0.0
    #: read when stragglers are drawn (section_rules.check_read)
    drop_stragglers: bool = field(default=False, metadata={"needs": "straggler_rate"})
    min_fit_results: int = 1  # fewer updates abort the round (model unchanged), as deployed
    device: str = "cpu"
    max_chunk: int = 1024
    #: None: the backend's default (:func:`backend_workers`), so that a key the user never
    #: set can be told from one they did (sequential refuses the latter)
    workers: int | None = None
    ray_address: str | None = None
    threads: int = 1  # torch threads per process; 0 = torch's default (all cores)
    #: the batched backend's client data: ``memory`` (all clients' rows at once), ``lazy``
    #: (each round's clients loaded as it starts), ``auto`` (lazy when all would take
    #: over half the memory available): fedops.simulation.lazy_federation
    data: str = "auto"


@dataclass
class SimulateConfig:
    """The root of ``fedops simulate``'s configuration."""

    rounds: int = 10
    seed: int = 0
    task: str | None = None
    #: a Flower ClientApp / client_fn / NumPyClient factory (module:attr) as every client
    flower_app: str | None = None
    #: module:attr building a Message API Flower app's first model (initial_arrays)
    flower_initial: str | None = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    client: ClientTrainConfig = field(default_factory=ClientTrainConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    mlflow_uri: str | None = None  # also log every round to MLflow (needs fedops[mlflow])
    mlflow_experiment: str = "fedops"


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(key, message)


def _one_of(value: Any, choices: tuple[str, ...] | Any, key: str) -> None:
    _require(value in choices, key, f"must be one of {sorted(choices)}, got {value!r}")


def validate(cfg: SimulateConfig) -> SimulateConfig:
    """Check ranges and choices; raise :class:`ConfigError` naming the dotted key."""
    check_rounds(cfg.rounds, "rounds")
    check_seed(cfg.seed, "seed")
    d, p, s, c = cfg.dataset, cfg.partition, cfg.simulation, cfg.client
    _one_of(d.name, DATASETS, "dataset.name")
    _require(d.alpha >= 0 and d.beta >= 0, "dataset.alpha", "alpha and beta must be >= 0")
    _require(d.num_features >= 1, "dataset.num_features", "must be >= 1")
    _require(d.num_classes >= 2, "dataset.num_classes", "must be >= 2")
    _require(d.min_samples >= 2, "dataset.min_samples", "must be >= 2")
    _one_of(p.name, PARTITIONS, "partition.name")
    _require(p.alpha > 0, "partition.alpha", f"must be > 0, got {p.alpha}")
    _one_of(cfg.model.name, MODELS, "model.name")
    _require(cfg.model.hidden >= 1, "model.hidden", "must be >= 1")
    check_flower_app(cfg)  # first: its data keys are refused as a Flower app's
    check_data_keys(cfg)
    check_read(cfg.model, "model")
    check_strategy_options(cfg.strategy)
    check_train(c, rounds=cfg.rounds)
    check_simulation(s)
    _require(
        s.data != "lazy" or bool(cfg.task),
        "simulation.data",
        "lazy loads a task's clients round by round (task=...); "
        + (
            "a Flower app's clients load their own data, each time they are built"
            if cfg.flower_app
            else "a built-in dataset is generated whole, in memory"
        ),
    )
    check_strategy_fits(
        cfg.strategy,
        per_round=s.clients_per_round or s.num_clients,
        secagg=cfg.secagg.name,
        privacy=cfg.privacy.name,
    )
    check_privacy(cfg.privacy, secagg=cfg.secagg.name, rounds=cfg.rounds)
    _require(
        cfg.privacy.name != "central" or s.min_fit_results == 1,
        "simulation.min_fit_results",
        "central DP releases its noised mean whatever the number of updates (aborting on a "
        "count would tell, outside the noise, how many were sampled): leave it at 1",
    )
    _require(
        cfg.privacy.name != "local" or s.backend in ("sequential", "vectorized"),
        "simulation.backend",
        "privacy=local (DP-SGD per site, each site keeping its own ε) runs with "
        "simulation=sequential for now (the default backend switches to it)",
    )
    check_secagg_keys(cfg.secagg, s)
    check_monitoring(cfg.monitoring)
    return cfg


def check_simulation(s: SimulationConfig) -> None:
    _one_of(s.backend, BACKENDS, "simulation.backend")
    _require(s.num_clients >= 1, "simulation.num_clients", f"must be >= 1, got {s.num_clients}")
    _require(
        s.clients_per_round is None or 1 <= s.clients_per_round <= s.num_clients,
        "simulation.clients_per_round",
        f"must be in [1, simulation.num_clients={s.num_clients}], got {s.clients_per_round}",
    )
    _require(0 <= s.dropout_rate < 1, "simulation.dropout_rate", "must be in [0, 1)")
    _require(0 <= s.straggler_rate <= 1, "simulation.straggler_rate", "must be in [0, 1]")
    _require(
        1 <= s.min_fit_results <= (s.clients_per_round or s.num_clients),
        "simulation.min_fit_results",
        f"must be in [1, clients per round], got {s.min_fit_results}",
    )
    _one_of(s.device, DEVICES, "simulation.device")
    _require(s.max_chunk >= 1, "simulation.max_chunk", "must be >= 1")
    _require(s.workers is None or s.workers >= 1, "simulation.workers", "must be >= 1")
    if s.ray_address is not None:
        _require(s.backend == "ray", "simulation.ray_address", "needs simulation.backend=ray")
        match = RAY_ADDRESS.fullmatch(s.ray_address)
        _require(
            match is not None and (match[1] is None or 1 <= int(match[1]) <= 65535),
            "simulation.ray_address",
            f"must be auto, HOST:PORT or ray://HOST:PORT, got {s.ray_address!r}",
        )
    _require(s.threads >= 0, "simulation.threads", "must be >= 0 (0: torch's default)")
    check_read(s, "simulation", mode_key="backend")
    _one_of(s.data, DATA_MODES, "simulation.data")
    _require(
        s.data == "auto" or s.backend == "vectorized",
        "simulation.data",
        f"is read by simulation=vectorized only (simulation={s.backend} keeps each client's "
        "data with the client)",
    )
    check_backend_keys(s)


def check_backend_keys(s: SimulationConfig) -> None:
    """Keys the chosen backend never reads would be ignored without a word: refuse them by
    the key the user typed (only when set: a value at its default could be anyone's)."""
    readers = ", ".join(f"{name} ({what})" for name, what in WORKER_BACKENDS.items())
    _require(
        s.workers is None or s.backend in WORKER_BACKENDS,
        "simulation.workers",
        f"has no effect with simulation={s.backend}, which runs one client at a time in this "
        f"process: it is read by simulation={readers}",
    )
    if s.backend != "vectorized":  # the batched trainers' chunking and device, no other's
        _unread(
            s,
            "simulation",
            f"with simulation={s.backend}: only simulation=vectorized reads it",
            only=BATCHED_ONLY_KEYS,
        )


def backend_workers(s: SimulationConfig, device: str = "cpu") -> int:
    """How many threads (vectorized), processes or actors ``s``'s backend runs, on
    ``device`` (resolved: ``cpu`` or ``cuda``): every reader of ``simulation.workers`` asks
    here, so an unset key means one default and never reaches a backend as None.

    On a GPU one thread drives the device whatever was set, said in the log (no error: the
    same config may run on a machine without one).
    """
    if s.backend not in WORKER_BACKENDS:
        return 1  # sequential: one client at a time (check_backend_keys refuses a setting)
    if s.backend == "vectorized" and device != "cpu":
        if s.workers is not None and s.workers > 1:
            log.info(
                "simulation.device=%s: one thread drives the GPU; simulation.workers=%d is not "
                "used (it sets the CPU's threads)",
                device,
                s.workers,
            )
        return 1
    return DEFAULT_WORKERS if s.workers is None else s.workers


def check_secagg_keys(a: SecAggConfig, s: SimulationConfig) -> None:
    check_secagg_section(a)
    per_round = s.clients_per_round or s.num_clients
    _require(
        a.name == "none" or per_round >= 2,
        "simulation.clients_per_round" if s.clients_per_round else "simulation.num_clients",
        "secure aggregation needs at least 2 clients per round",
    )
    if a.name != "none" and a.threshold is not None:
        k = graph.effective_degree(per_round, a.k)
        _require(
            k / 2 < a.threshold <= k,
            "secagg.threshold",
            f"with {per_round} clients per round each has {k} neighbours, so the threshold "
            f"must be above {k / 2:g} and at most {k}, got {a.threshold}",
        )


def _unread(
    section: object,
    prefix: str,
    why: str,
    skip: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
) -> None:
    """Every key of ``section`` (but ``skip``; of ``only`` when given) must keep its
    default: nothing reads it."""
    for spec in dataclasses.fields(section):  # type: ignore[arg-type]
        if spec.name not in skip and (only is None or spec.name in only):
            value = getattr(section, spec.name)
            _require(value == spec.default, f"{prefix}.{spec.name}", f"has no effect {why}")


def check_data_keys(cfg: SimulateConfig) -> None:
    """Keys the chosen data source never reads would be ignored without a word (e.g.
    ``dataset.alpha`` on digits): refuse them by the key the user typed."""
    d, p = cfg.dataset, cfg.partition
    if cfg.task:
        why = "with task=...: the task's load_data and build_model decide"
        _unread(d, "dataset", why)
        _unread(p, "partition", why)
        _unread(cfg.model, "model", why)
        return
    if d.name != "synthetic":
        _unread(d, "dataset", f"with dataset={d.name}: only dataset=synthetic reads it", ("name",))
    else:
        why = "with dataset=synthetic, whose clients are generated apart (see dataset.iid)"
        _unread(p, "partition", why)
    if p.name == "iid":
        _unread(p, "partition", "with partition=iid: only partition=dirichlet reads it", ("name",))


def check_flower_app(cfg: SimulateConfig) -> None:
    """``flower_app=``: what a Flower app's virtual clients can run, refused by the key
    the user typed (README: "Coming from Flower")."""
    if cfg.flower_app is None:
        _require(cfg.flower_initial is None, "flower_initial", "is read with flower_app= only")
        return
    _require(not cfg.task, "flower_app", "a run trains a task (task=) or a Flower app, not both")
    try:
        split_spec(cfg.flower_app)
    except FlowerAppError as exc:
        raise ConfigError("flower_app", str(exc)) from exc
    why = "with flower_app=...: the Flower app loads its data and builds its model"
    _unread(cfg.dataset, "dataset", why)
    _unread(cfg.partition, "partition", why)
    _unread(cfg.model, "model", why)
    _require(
        cfg.simulation.backend in ("vectorized", "sequential"),
        "simulation.backend",
        "a Flower app's clients run on simulation=sequential (the default switches to it)",
    )
    _require(cfg.privacy.name != "local", "privacy", LOCAL_DP_REFUSAL)
    _require(cfg.monitoring.name == "none", "monitoring", MONITORING_REFUSAL)


def check_monitoring(m: MonitoringConfig) -> None:
    """Every backend reports drift and fairness (the batched one for all clients at once)."""
    _one_of(m.name, ("none", "default"), "monitoring.name")
    check_monitoring_section(m)  # with none: refuses every key set, nothing would read it


def check_privacy(p: PrivacyConfig, *, secagg: str, rounds: int) -> None:
    check_privacy_section(
        p,
        secagg=secagg,
        unused="has no effect with privacy=none: choose privacy=central, distributed or local",
    )
