"""Configuration schemas. Each check names the key it refuses.

The CLI turns a key into its flag (``round_timeout_s`` -> ``--round-timeout``
via :data:`FLAG_NAMES`), so every error the user sees names what they typed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fedops.runtime.addresses import is_loopback, parse_address
from fedops.runtime.rules import SECAGG_CLIP, ConfigError
from fedops.runtime.rules import require as _require
from fedops.runtime.schema import (
    FLAG_NAMES,
    ClientTrainConfig,
    MonitoringConfig,
    PrivacyConfig,
    SecAggConfig,
    StrategyConfig,
)
from fedops.runtime.section_rules import (
    check_monitoring_section,
    check_privacy_section,
    check_rounds,
    check_secagg_section,
    check_seed,
    check_split_keys,
    check_strategy_fits,
    check_strategy_options,
    check_train,
)

__all__ = [
    "FLAG_NAMES",
    "SECAGG_CLIP",
    "ClientConfig",
    "ConfigError",
    "CoordinatorConfig",
    "as_dict",
    "is_loopback",
    "parse_address",
]


def deployed_monitoring() -> MonitoringConfig:
    """The one section default a deployment sets apart (``--monitoring auto``, the
    simulator's ``monitoring=none``; schema_table.DIFFERENT_DEFAULTS): auto turns monitoring
    on without DP and off under it, whose guarantee does not cover its statistics; a
    simulation monitors on its sequential backend only, so it is off unless asked for."""
    return MonitoringConfig(name="auto")


@dataclass(frozen=True, kw_only=True)
class TaskOptions:
    """How a built-in task splits its data (ignored by user tasks)."""

    task: str | None = "digits"
    partition: str = "dirichlet"
    alpha: float = 0.5
    data_seed: int = 0

    def check_task_options(self) -> None:
        _require(
            self.partition in ("iid", "dirichlet"),
            "partition",
            f"must be iid or dirichlet, got {self.partition!r}",
        )
        _require(self.alpha > 0, "alpha", f"must be > 0, got {self.alpha}")
        split = ("partition", "alpha", "data_seed")
        check_split_keys(
            {key: getattr(self, key) for key in split},
            {key: getattr(TaskOptions, key) for key in split},
            task=self.task,
        )

    def builtin_options(self) -> dict[str, Any]:
        return {"partition": self.partition, "alpha": self.alpha, "seed": self.data_seed}


@dataclass(frozen=True, kw_only=True)
class RoundOptions:
    rounds: int = 10
    min_clients: int = 2
    clients_per_round: int | None = None
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    seed: int = 0
    run_dir: Path = Path("runs/latest")

    def check_round_options(self) -> None:
        check_strategy_options(self.strategy)
        check_rounds(self.rounds, "rounds")
        check_seed(self.seed, "seed")
        _require(self.min_clients >= 1, "min_clients", f"must be >= 1, got {self.min_clients}")
        _require(
            self.clients_per_round is None or self.clients_per_round >= 1,
            "clients_per_round",
            f"must be >= 1, got {self.clients_per_round}",
        )


@dataclass(frozen=True, kw_only=True)
class CoordinatorConfig(RoundOptions, TaskOptions):
    address: str = "127.0.0.1:8765"
    kit: Path | None = None  # consortium startup kit: mTLS, and only the consortium's sites
    wait_for_start: bool = False  # hold round 1 until an admin runs `fedops admin start`
    task: str | None = None
    round_timeout_s: float = 120.0
    join_timeout_s: float = 600.0
    insecure: bool = False
    heartbeat_interval_s: float = 2.0
    liveness_timeout_s: float = 10.0
    max_nodes: int = 10_000  # live nodes at most: a new site past it is refused
    min_fit_results: int = 1  # fewer accepted updates abort the round (model unchanged)
    keep_checkpoints: int = 3
    max_workers: int = 64
    #: how every site trains (``client.*`` in a simulation): the run owns it, each fit task
    #: carries this round's values, and a site only checks them against its caps
    train: ClientTrainConfig = field(default_factory=ClientTrainConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    monitoring: MonitoringConfig = field(default_factory=deployed_monitoring)
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"
    mlflow_uri: str | None = None
    mlflow_experiment: str = "fedops"

    def __post_init__(self) -> None:
        self.check_round_options()
        check_train(self.train, rounds=self.rounds)
        self.check_task_options()
        self.check_monitoring()
        self.check_serving()
        self.check_aggregation()
        host, _ = parse_address("address", self.address)
        _require(
            is_loopback(host) or self.insecure or self.kit is not None,
            "address",
            f"refusing to serve plaintext gRPC on {host}: without certificates the "
            "coordinator binds loopback only; pass --insecure to accept the risk",
        )

    def check_serving(self) -> None:
        """How the process serves: address, timeouts, limits."""
        _require(
            not self.wait_for_start or self.kit is not None,
            "wait_for_start",
            "only a consortium coordinator (--kit) has admins to start it",
        )
        parse_address("address", self.address)
        _require(self.round_timeout_s > 0, "round_timeout_s", "must be > 0")
        _require(self.join_timeout_s > 0, "join_timeout_s", "must be > 0")
        _require(self.liveness_timeout_s >= 1, "liveness_timeout_s", "must be >= 1")
        _require(self.max_nodes >= 1, "max_nodes", f"must be at least 1, got {self.max_nodes}")
        _require(
            0.1 <= self.heartbeat_interval_s <= self.liveness_timeout_s,
            "heartbeat_interval_s",
            f"must be >= 0.1 s and at most --liveness-timeout "
            f"({self.liveness_timeout_s:g} s), got {self.heartbeat_interval_s:g}",
        )
        _require(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        _require(
            1 <= self.min_fit_results <= (self.clients_per_round or self.min_fit_results),
            "min_fit_results",
            f"must be >= 1 and at most --clients-per-round, got {self.min_fit_results}",
        )
        _require(self.max_workers >= 4, "max_workers", "must be >= 4")

    def check_aggregation(self) -> None:
        """What the round computes: secure aggregation, DP and the strategy, together."""
        _require(
            self.privacy.name != "central" or self.min_fit_results == 1,
            "min_fit_results",
            "central DP releases its noised mean whatever the number of updates (aborting on "
            "a count would tell, outside the noise, how many were sampled): leave it at 1",
        )
        check_secagg_section(self.secagg)
        check_privacy_section(
            self.privacy,
            secagg=self.secagg.name,
            unused="has no effect without --privacy: choose central, distributed or local",
        )
        check_strategy_fits(
            self.strategy,
            per_round=min(self.min_clients, self.clients_per_round or self.min_clients),
            secagg=self.secagg.name,
            privacy=self.privacy.name,
        )
        _require(
            self.secagg.name == "none" or self.min_clients >= 2,
            "min_clients",
            "secure aggregation needs at least 2 clients per round",
        )

    def check_monitoring(self) -> None:
        name = self.monitoring.name
        _require(
            name in ("auto", "default", "none"),
            "monitoring.name",
            f"must be auto, default or none, got {name!r}",
        )
        check_monitoring_section(self.monitoring, privacy=self.privacy.name)
        _require(
            self.metrics_port is None or 0 <= self.metrics_port <= 65535,
            "metrics_port",
            f"must be a TCP port (0: any free one), got {self.metrics_port}",
        )
        _require(
            is_loopback(self.metrics_address) or self.insecure,
            "metrics_address",
            f"refusing to expose metrics on {self.metrics_address} without --insecure",
        )


@dataclass(frozen=True, kw_only=True)
class ClientConfig(TaskOptions):
    coordinator: str = "127.0.0.1:8765"
    kit: Path | None = None  # consortium startup kit: mTLS identity, coordinator address, policy
    insecure: bool = False  # plaintext to a non-loopback coordinator (development only)
    #: a Flower ClientApp / client_fn / NumPyClient factory (module:attr) instead of a task
    flower_app: str | None = None
    #: module:attr building a Message API app's first model (its ServerApp's initial_arrays)
    flower_initial: str | None = None
    site: int = 0
    num_sites: int = 1
    site_name: str = ""
    run_dir: Path | None = None
    #: stay up across runs (``fedops serve``), joining those the site's policy accepts
    standing: bool = False
    #: a standing site's tasks: a run naming another is declined (its code is never fetched)
    tasks: tuple[str, ...] = ()
    max_runs: int | None = None  # a standing site leaves after deciding this many runs
    max_retries: int = 30
    retry_for: float | None = None  # seconds of retrying instead of --max-retries attempts
    poll_wait_s: float = 5.0
    require_secagg: bool = False
    #: send drift and fairness statistics even under --require-secagg or --max-epsilon
    share_monitoring: bool = False
    #: evaluate on request although the site hides its record count (--max-epsilon etc.)
    share_evaluation: bool = False
    monitoring_min_count: int | None = None  # smallest reported bin (None: kit's, else 5)
    monitoring_max_cells: int | None = None  # most bins a report may have (None: kit's, else 20k)
    max_epsilon: float | None = None
    max_run_epsilon: float | None = None  # a standing site's per-run ε (the ledger's run rows)
    dp_delta: float | None = None  # the δ the site accounts local DP at (None: kit's, else 1e-5)
    #: local DP is planned and accounted with this record count; the true one stays hidden
    dp_public_records: int | None = None
    identity_key: Path | None = None
    trusted_keys: Path | None = None
    max_rounds: int | None = None
    # caps on the run's training settings (None: the kit's rule, else none): a task above one
    # is declined with the reason, never trained with less
    max_epochs: int | None = None
    max_batch_size: int | None = None
    max_lr: float | None = None
    allowed_task: list[str] | None = None
    consent_file: Path | None = None
    # secure-aggregation floors (None: the kit's rule, else SecAggPolicy's default)
    secagg_min_cohort: int | None = None
    secagg_min_degree: int | None = None
    secagg_max_colluders: int | None = None
    secagg_min_noise_multiplier: float | None = None
    secagg_max_l2_clip: float | None = None

    def __post_init__(self) -> None:
        self.check_task_options()
        host, _ = parse_address("coordinator", self.coordinator)
        _require(
            self.kit is not None or is_loopback(host) or self.insecure,
            "coordinator",
            f"refusing plaintext gRPC to {host}: outside loopback a site dials with its "
            "consortium kit (--kit); pass --insecure to accept the risk",
        )
        _require(
            self.max_runs is None or (self.standing and self.max_runs >= 1),
            "max_runs",
            f"counts a standing site's runs: with --standing, >= 1 (got {self.max_runs})",
        )
        if self.standing:
            self.check_standing()
        else:
            _require(
                (self.task is None) != (self.flower_app is None),
                "task",
                "a client runs a task (--task) or a Flower app (--flower-app): one of them",
            )
        _require(
            self.flower_initial is None or self.flower_app is not None,
            "flower_initial",
            "builds a Flower app's first model: pass --flower-app too",
        )
        _require(self.num_sites >= 1, "num_sites", f"must be >= 1, got {self.num_sites}")
        _require(
            0 <= self.site < self.num_sites,
            "site",
            f"must be in [0, {self.num_sites}) for --num-sites {self.num_sites}, got {self.site}",
        )
        _require(self.max_retries >= 0, "max_retries", "must be >= 0")
        self.check_policy()

    def check_standing(self) -> None:
        """A standing site: the tasks it runs, and a directory for what outlives a run."""
        _require(
            self.flower_app is None,
            "flower_app",
            "a standing site runs fedops tasks (--task); a Flower app joins one run at a time",
        )
        _require(
            bool(self.tasks),
            "task",
            "a standing site (--standing) names the tasks it runs: --task NAME, repeatable",
        )
        _require(
            self.run_dir is not None,
            "run_dir",
            "a standing site keeps its privacy ledger, audit log and one directory per run "
            "there: pass --run-dir",
        )

    def check_policy(self) -> None:
        """The site's own rules: SecAgg floors, its ε, monitoring limits, what it runs."""
        self._check_secagg_floors()
        self._check_privacy_limits()
        self._check_training_limits()

    def _check_secagg_floors(self) -> None:
        for name, low in (
            ("secagg_min_cohort", 2),
            ("secagg_min_degree", 1),
            ("secagg_max_colluders", 0),
        ):
            value = getattr(self, name)
            _require(value is None or value >= low, name, f"must be >= {low}, got {value}")
        noise, clip = self.secagg_min_noise_multiplier, self.secagg_max_l2_clip
        _require(
            noise is None or (math.isfinite(noise) and noise >= 0),
            "secagg_min_noise_multiplier",
            f"must be a number >= 0, got {noise}",
        )
        _require(
            clip is None or (math.isfinite(clip) and clip > 0),
            "secagg_max_l2_clip",
            f"must be a number > 0, got {clip}",
        )

    def _check_privacy_limits(self) -> None:
        _require(
            self.max_epsilon is None or self.max_epsilon > 0,
            "max_epsilon",
            f"must be > 0, got {self.max_epsilon}",
        )
        _require(
            self.max_run_epsilon is None or self.max_run_epsilon > 0,
            "max_run_epsilon",
            f"must be > 0, got {self.max_run_epsilon}",
        )
        _require(
            self.max_run_epsilon is None or (self.standing and self.max_epsilon is not None),
            "max_run_epsilon",
            "a standing site's per-run budget: pass --standing, and --max-epsilon to bound "
            "the sum over every run (new runs each bring a fresh per-run allowance)",
        )
        _require(
            self.dp_delta is None or (math.isfinite(self.dp_delta) and 0 < self.dp_delta < 1),
            "dp_delta",
            f"must be in (0, 1), got {self.dp_delta}",
        )
        for key in ("monitoring_min_count", "monitoring_max_cells"):
            value = getattr(self, key)
            _require(value is None or value >= 1, key, f"must be at least 1, got {value}")
        _require(
            self.dp_public_records is None or self.dp_public_records >= 1,
            "dp_public_records",
            f"must be at least 1, got {self.dp_public_records}",
        )

    def _check_training_limits(self) -> None:
        """What the site runs: its keys, and how far a coordinator may push its training."""
        for key in ("identity_key", "trusted_keys"):
            path = getattr(self, key)
            _require(path is None or Path(path).exists(), key, f"{path} does not exist")
        _require(
            self.max_rounds is None or self.max_rounds >= 1,
            "max_rounds",
            f"must be >= 1, got {self.max_rounds}",
        )
        for key in ("max_epochs", "max_batch_size"):
            value = getattr(self, key)
            _require(value is None or value >= 1, key, f"must be >= 1, got {value}")
        _require(
            self.max_lr is None or (math.isfinite(self.max_lr) and self.max_lr > 0),
            "max_lr",
            f"must be a number > 0, got {self.max_lr}",
        )
        for digest in self.allowed_task or ():
            _require(
                len(digest) == 64 and all(c in "0123456789abcdef" for c in digest),
                "allowed_task",
                f"must be a sha256 hex digest (64 lowercase hex digits), got {digest!r}",
            )


def as_dict(config: Any) -> dict[str, Any]:
    """The settings as JSON values: paths as text, sections as nested objects."""
    return {f.name: _plain(getattr(config, f.name)) for f in fields(config)}


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value
