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
import math
from dataclasses import dataclass, field, fields
from typing import Any

from fedops.core.secagg import graph
from fedops.runtime.rules import PRIVACY_MODES, SECAGG_CLIP, ConfigError, check_dp, check_secagg
from fedops.runtime.schema import (
    ClientTrainConfig,
    StrategyConfig,
    check_strategy_fits,
    check_strategy_options,
    check_train,
)

DATASETS = ("digits", "breast_cancer", "synthetic")
PARTITIONS = ("iid", "dirichlet")
MODELS = ("logreg", "mlp")
BACKENDS = ("vectorized", "sequential", "process", "ray")
DEVICES = ("cpu", "cuda", "auto")


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
    hidden: int = 64


@dataclass
class SimulationConfig:
    backend: str = "vectorized"
    num_clients: int = 5
    clients_per_round: int | None = None
    dropout_rate: float = 0.0
    straggler_rate: float = 0.0
    drop_stragglers: bool = False
    min_fit_results: int = 1  # fewer updates abort the round (model unchanged), as deployed
    device: str = "cpu"
    max_chunk: int = 1024
    workers: int = 2
    ray_address: str | None = None
    threads: int = 1  # torch threads per process; 0 = torch's default (all cores)


@dataclass
class PrivacyConfig:
    """``privacy=central``: DP-FedAvg with an accountant and a budget (DESIGN §6)."""

    name: str = "none"
    noise_multiplier: Any = 1.0  # a number, or "auto" (derived from target_epsilon and rounds)
    clip_norm: float = 1.0  # L2 bound of each client's update (the initial one if adaptive)
    delta: float = 1e-5
    target_epsilon: float | None = None  # the run stops before a round would exceed it
    accountant: str = "pld"  # pld | rdp: the headline (dp_accounting); the other beside it
    sampling: str = "poisson"  # poisson | fixed (clients_per_round of num_clients)
    publish_participants: bool = False  # account as if who took part were public
    colluders: int = 0  # distributed: sites that may pool their noise with the coordinator
    release_site_metrics: bool = False  # sites' train loss in the metrics (outside DP)
    adaptive: bool = False  # track a quantile of the update norms (Andrew et al. 2021)
    target_quantile: float = 0.5
    clip_learning_rate: float = 0.2
    count_noise: float = 10.0  # noise multiplier of the clipped-count estimate (adaptive)
    seed: int | None = None  # noise and sampling seed; None: OS entropy (private)
    site_max_epsilon: float | None = None  # privacy=local: each site's own ε limit (policy)


@dataclass
class SecAggConfig:
    """``secagg=secaggplus``: SecAgg+ over every round's fit phase (DESIGN §5)."""

    name: str = "none"
    k: int | None = None  # neighbours per client; None: 2*ceil(log2 n); >= n-1: classic SecAgg
    threshold: int | None = None  # shares that unmask a client; None: k/2 + 1
    clip: float = SECAGG_CLIP  # each update coordinate is clipped to [-clip, clip]
    min_survivors: int | None = None  # fewest inputs summed; None: max(3, threshold)


@dataclass
class MonitoringConfig:
    """``monitoring=default``: drift and fairness reports with every evaluation (DESIGN §7)."""

    name: str = "none"
    bins: int = 10  # quantile bins per input feature (from the held-out data)
    positive_label: int = 1  # the favourable outcome in fairness statistics
    psi_alert: float = 0.25  # PSI above this alerts ("significant")
    js_alert: float = 0.1  # Jensen-Shannon distance above this alerts
    ks_pvalue_alert: float = 0.0  # KS p-value below this alerts (0: KS never alerts)
    demographic_parity_difference: float | None = 0.1  # null: no alert on this metric
    demographic_parity_ratio: float | None = 0.8  # alerts when below (four-fifths rule)
    equalized_odds_difference: float | None = 0.1
    equal_opportunity_difference: float | None = 0.1
    group_accuracy_gap: float | None = 0.1
    site_accuracy_gap: float | None = 0.15
    action: str = "none"  # none | exclude (a site with a drift alert trains no more)
    #: no reported bin (or fairness cell) holds 1..min_count-1 of a site's rows; 1: exact
    min_count: int = 5


@dataclass
class SimulateConfig:
    """The root of ``fedops simulate``'s configuration."""

    rounds: int = 10
    seed: int = 0
    task: str | None = None
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
    _require(cfg.rounds >= 1, "rounds", f"must be >= 1, got {cfg.rounds}")
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
    check_data_keys(cfg)
    check_strategy_options(cfg.strategy)
    check_train(c)
    check_simulation(s)
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
        cfg.privacy.name != "local" or s.backend == "sequential",
        "simulation.backend",
        "privacy=local (DP-SGD per site, each site keeping its own ε) runs with "
        "simulation=sequential for now",
    )
    check_secagg_keys(cfg.secagg, s)
    check_monitoring(cfg.monitoring, backend=s.backend)
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
    _require(s.workers >= 1, "simulation.workers", "must be >= 1")
    _require(s.threads >= 0, "simulation.threads", "must be >= 0 (0: torch's default)")


def check_secagg_keys(a: SecAggConfig, s: SimulationConfig) -> None:
    try:
        check_secagg(a.name, a.k, a.threshold, a.clip)
    except ConfigError as exc:
        key = "name" if exc.key == "secagg" else exc.key.removeprefix("secagg_")
        raise ConfigError(f"secagg.{key}", exc.message) from None
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
    _require(
        a.min_survivors is None or a.min_survivors >= 3,
        "secagg.min_survivors",
        "must be >= 3 (sites reveal nothing for a sum of two: each would learn the other's "
        f"update), got {a.min_survivors}",
    )


def _unread(section: object, prefix: str, why: str, skip: tuple[str, ...] = ()) -> None:
    """Every key of ``section`` (but ``skip``) must keep its default: nothing reads it."""
    for spec in dataclasses.fields(section):  # type: ignore[arg-type]
        if spec.name not in skip:
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


def check_monitoring(m: MonitoringConfig, *, backend: str) -> None:
    _one_of(m.name, ("none", "default"), "monitoring.name")
    if m.name == "none":
        return
    _require(
        backend == "sequential",
        "simulation.backend",
        "monitoring=default needs simulation=sequential: drift and fairness are measured by "
        "each site on its own data window",
    )
    _require(m.bins >= 2, "monitoring.bins", f"must be >= 2, got {m.bins}")
    _require(m.min_count >= 1, "monitoring.min_count", f"must be >= 1, got {m.min_count}")
    _require(m.positive_label >= 0, "monitoring.positive_label", "must be >= 0")
    for key in ("psi_alert", "js_alert"):
        _require(getattr(m, key) > 0, f"monitoring.{key}", "must be > 0")
    _require(0 <= m.ks_pvalue_alert < 1, "monitoring.ks_pvalue_alert", "must be in [0, 1)")
    _one_of(m.action, ("none", "exclude"), "monitoring.action")


def check_privacy(p: PrivacyConfig, *, secagg: str, rounds: int) -> None:
    _one_of(p.name, PRIVACY_MODES, "privacy.name")
    if p.name == "none":
        # a DP setting without DP would run without it, silently: refuse it by name
        for f in fields(PrivacyConfig):
            if f.name != "name":
                _require(
                    getattr(p, f.name) == f.default,
                    f"privacy.{f.name}",
                    "has no effect with privacy=none: choose privacy=central, distributed or local",
                )
        return
    value = p.noise_multiplier
    number = isinstance(value, int | float) and not isinstance(value, bool)
    sigma = None if value == "auto" else float(value) if number else math.nan
    try:
        check_dp(
            mode=p.name,
            sigma=sigma,
            raw_sigma=value,
            clip_norm=p.clip_norm,
            delta=p.delta,
            target_epsilon=p.target_epsilon,
            accountant=p.accountant,
            secagg=secagg,
            sampling=p.sampling,
            colluders=p.colluders,
        )
    except ConfigError as exc:
        key = {"privacy": "privacy.name", "secagg": "secagg.name"}.get(exc.key)
        raise ConfigError(key or f"privacy.{exc.key}", exc.message) from None
    auto = sigma is None
    _require(0 < p.target_quantile < 1, "privacy.target_quantile", "must be in (0, 1)")
    _require(p.clip_learning_rate > 0, "privacy.clip_learning_rate", "must be > 0")
    _require(
        not p.adaptive or auto or 2 * p.count_noise > float(p.noise_multiplier),
        "privacy.count_noise",
        "adaptive clipping needs count_noise > noise_multiplier / 2",
    )
    _require(
        p.name != "distributed" or not p.adaptive,
        "privacy.adaptive",
        "adaptive clipping is not available with distributed DP",
    )
    _require(
        p.site_max_epsilon is None or p.site_max_epsilon > 0,
        "privacy.site_max_epsilon",
        f"must be > 0, got {p.site_max_epsilon}",
    )
