"""The settings a deployed run and a simulated run share, each written once.

Each section is a dataclass: the Hydra schema of its config group
(``strategy.*``, ``client.*``, ``privacy.*``, ``secagg.*``, ``monitoring.*``) and,
nested in the deployment configs, what the CLI's flags fill. A field's metadata
carries its flag and help text, so :mod:`fedops.cli.parser` builds the flags from
these fields and both fronts get the same names, defaults and checks; a field
marked ``simulation_only`` has no flag (:mod:`fedops.runtime.schema_table` lists
it with its reason). Errors name the dotted key (``strategy.mu``); the CLI turns
it into the flag the user typed (:func:`flag_of`).

Adding a strategy option is a field here plus a keyword in the strategy that
reads it (its ``options`` mapping): nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fedops.core.optimizers import OPTIMIZERS
from fedops.core.privacy.accountant import ACCOUNTANTS
from fedops.core.strategies import STRATEGIES
from fedops.core.train_settings import TrainPlan, TrainSettings, settings_of
from fedops.runtime.rules import (
    PRIVACY_MODES,
    SECAGG_CLIP,
    SECAGG_MODES,
    noise_multiplier_arg,
)


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    simulation_only: str | None = None,
    **extra: Any,
) -> Any:
    """A setting: its default, the help its flag shows, and the flag when it is not
    ``--`` plus the field name with dashes. ``simulation_only``: why a deployment has no
    flag for it (none is generated; the key is listed in :data:`SIMULATION_ONLY` with this
    reason, and a deployed run keeps the default). ``extra``: ``choices``, ``metavar``,
    ``parse`` (the flag's type, where the field's annotation is not one), and what reads the
    key (:func:`fedops.runtime.section_rules.check_read`): ``modes``, the section's ``name``
    values that read it, and ``needs``, a key of the section that must be set for it to be
    read (``adaptive`` for adaptive clipping's tuning)."""
    metadata = {"help": help, "flag": flag, "simulation_only": simulation_only, **extra}
    return field(default=default, metadata=metadata)


@dataclass
class StrategyConfig:
    """How updates become the next model (``--strategy`` / ``strategy=NAME``)."""

    name: str = option(
        "fedavg",
        "how updates are combined: " + ", ".join(sorted(STRATEGIES)) + ", a registered name, "
        "or module:Class (a user's strategy class, imported from the current directory or "
        "PYTHONPATH)",
        flag="--strategy",
    )
    mu: float = option(0.01, "fedprox: the proximal coefficient of the clients' loss")
    server_lr: float | None = option(
        None,
        "fedavg/fedprox/fedavgm/fedadagrad/fedadam/fedyogi: server learning rate; fedavg "
        "moves the model lr x (mean - model) (default: the strategy's own, 1 for "
        "fedavg/fedprox/fedavgm, 0.1 for fedadagrad, 0.01 for fedadam/fedyogi)",
    )
    server_momentum: float = option(
        0.9, "fedavgm: server momentum b in [0, 1): u = b u + (mean - model), model += lr u"
    )
    beta1: float = option(
        0.9,
        "fedadagrad/fedadam/fedyogi: decay in [0, 1) of the server's first moment (momentum)",
        flag="--server-beta1",
    )
    beta2: float = option(
        0.99,
        "fedadam/fedyogi: decay in [0, 1) of the server's second moment",
        flag="--server-beta2",
    )
    tau: float = option(
        1e-3,
        "fedadagrad/fedadam/fedyogi: adaptivity tau > 0, added to sqrt(v) (v starts at tau^2)",
        flag="--server-tau",
    )
    trim_fraction: float = option(
        0.1,
        "trimmed_mean: fraction of values dropped at each end of every coordinate; at "
        "least f/n to tolerate f Byzantine clients",
    )
    byzantine: int = option(
        1,
        "krum/multi_krum: Byzantine clients f tolerated; a round needs more than 2f+2 clients",
    )
    select: int | None = option(
        None,
        "multi_krum: how many best-scoring models to average (default: n - f)",
        flag="--krum-select",
    )


@dataclass
class ClientTrainConfig:
    """How every site trains, owned by the run (``fedops coordinator --epochs`` ... /
    ``client.*``): each fit task carries this round's values, and a site only checks them
    against its caps (``fedops client --max-epochs`` ...)."""

    epochs: int = option(5, "local epochs per round, at every site")
    batch_size: int = option(16, "local batch size")
    lr: float = option(0.5, "local learning rate of round 1 (tuned for the digits tasks)")
    optimizer: str = option("sgd", "local optimizer", choices=OPTIMIZERS)
    momentum: float = option(0.0, "SGD momentum (0: plain SGD)")
    lr_decay: float = option(
        1.0, "per-round learning-rate decay in (0, 1]: round t trains at lr * lr_decay^(t-1)"
    )

    def plan(self) -> TrainPlan:
        """The settings each round's fit tasks carry (:meth:`TrainPlan.at`)."""
        return TrainPlan(base=self.settings(), lr_decay=self.lr_decay)

    def settings(self) -> TrainSettings:
        """Round 1's settings (the base the schedule decays from)."""
        return settings_of(self)


_KEPT = "a deployment keeps the default here"
#: the ``name`` values that read a key (``option(..., modes=...)``)
_CENTRAL = ("central",)
_DIST = ("distributed",)
_SECAGG_ON = tuple(mode for mode in SECAGG_MODES if mode != "none")
#: a deployment's ``auto`` monitors without DP (under DP it is ``none``: settings.py)
_MONITORED = ("default", "auto")
#: the largest run: a round count past it is a typo (or a run that never ends)
MAX_ROUNDS = 100_000
#: seeds are whole numbers a float carries exactly (a task's config is JSON: a double)
MAX_SEED = 2**53
_ADAPTIVE = "adaptive clipping's tuning: " + _KEPT + " (Andrew et al.'s values)"


@dataclass
class PrivacyConfig:
    """Differential privacy (``--privacy`` ... / ``privacy.*``; DESIGN §6)."""

    name: str = option(
        "none",
        "central: DP-FedAvg at the coordinator; distributed: clients add the noise under "
        "SecAgg+; local: DP-SGD (Opacus) at every site",
        flag="--privacy",
        choices=PRIVACY_MODES,
    )
    #: a number, or "auto" (derived from target_epsilon and the rounds); both fronts read
    #: it with rules.sigma_of (Any: OmegaConf has no number-or-"auto" type)
    noise_multiplier: Any = option(  # noqa: RUF009 (a field(), as for every option)
        1.0,
        "sigma: noise std / clip norm; 'auto' derives it from --target-epsilon",
        parse=noise_multiplier_arg,
    )
    clip_norm: float = option(1.0, "L2 bound of each update")  # the initial one if adaptive
    delta: float = option(1e-5, "DP delta")
    target_epsilon: float | None = option(
        None, "stop the run before a round would spend more epsilon"
    )
    accountant: str = option(
        "pld",
        "the headline accountant (dp_accounting); the other is reported beside it "
        "(default: pld; fixed sampling is accounted with rdp)",
        choices=ACCOUNTANTS,
    )
    sampling: str = option(
        "poisson",
        "central DP: each client joins a round with probability q (poisson, the "
        "default) or exactly --clients-per-round of them join (fixed, replace-one adjacency)",
        choices=("poisson", "fixed"),
        modes=_CENTRAL,
    )
    publish_participants: bool = option(
        False,
        "central DP: account as if who took part were public (no amplification by sampling)",
        modes=_CENTRAL,
    )
    colluders: int = option(
        0, "distributed DP: sites that may pool their noise with the coordinator", modes=_DIST
    )
    release_site_metrics: bool = option(
        False,
        "under DP, record the sites' train loss in the metrics (outside the DP "
        "guarantee; off by default)",
    )
    adaptive: bool = option(
        False,
        "let the clip norm track the median update norm (Andrew et al. 2021)",
        flag="--adaptive-clipping",
        modes=_CENTRAL,
    )
    target_quantile: float = option(
        0.5,
        "adaptive: the quantile of the update norms the clip tracks",
        simulation_only=_ADAPTIVE,
        needs="adaptive",
    )
    clip_learning_rate: float = option(
        0.2,
        "adaptive: the clip's geometric learning rate",
        simulation_only=_ADAPTIVE,
        needs="adaptive",
    )
    count_noise: float = option(
        10.0,
        "adaptive: noise multiplier of the clipped-count estimate",
        simulation_only=_ADAPTIVE,
        needs="adaptive",
    )
    seed: int | None = option(
        None,
        "noise and sampling seed; None: OS entropy (private)",
        simulation_only="a deployed coordinator draws DP noise and sampling from the OS only",
    )
    site_max_epsilon: float | None = option(
        None,
        "privacy=local: each site's own ε limit (policy)",
        simulation_only="simulated sites' policy (deployed: each site's --max-epsilon)",
        modes=("local",),
    )


@dataclass
class SecAggConfig:
    """Secure aggregation, SecAgg+ over every round's fit phase (``--secagg`` ... /
    ``secagg.*``; DESIGN §5)."""

    name: str = option(
        "none",
        "secaggplus: the coordinator only ever sees the sum of the updates",
        flag="--secagg",
        choices=SECAGG_MODES,
    )
    #: None: 2*ceil(log2 n); >= n-1: classic SecAgg
    k: int | None = option(
        None,
        "neighbours per client (default: 2*log2(n))",
        flag="--secagg-k",
        metavar="SECAGG_K",
        modes=_SECAGG_ON,
    )
    threshold: int | None = option(
        None,
        "shares needed to unmask a client (default: k/2 + 1)",
        flag="--secagg-threshold",
        metavar="SECAGG_THRESHOLD",
        modes=_SECAGG_ON,
    )
    clip: float = option(
        SECAGG_CLIP,
        "clip each update coordinate to [-c, c] before quantizing",
        flag="--secagg-clip",
        metavar="SECAGG_CLIP",
        modes=_SECAGG_ON,
    )
    min_survivors: int | None = option(
        None,
        "fewest inputs summed (default: max(3, threshold))",
        simulation_only="deployed sites set their floor themselves (--secagg-min-cohort)",
        modes=_SECAGG_ON,
    )


def _watch(default: Any, help: str, **extra: Any) -> Any:
    """A monitoring setting: read while monitoring is on."""
    return option(default, help, modes=_MONITORED, **extra)


@dataclass
class MonitoringConfig:
    """Drift and fairness reports with every evaluation (``--monitoring`` ... /
    ``monitoring.*``; DESIGN §7). The one default the fronts do not share is ``name``'s:
    a deployment sets ``auto`` (:class:`fedops.runtime.settings.CoordinatorConfig`)."""

    name: str = option(
        "none",
        "sites report drift and per-group confusion counts with every evaluation; auto "
        "(the default): on without DP, off under DP, whose guarantee does not cover them",
        flag="--monitoring",
        choices=("auto", "default", "none"),
    )
    bins: int = _watch(10, "quantile bins per feature (from held-out data)", simulation_only=_KEPT)
    positive_label: int = _watch(1, "the favourable class in fairness statistics")
    psi_alert: float = _watch(0.25, "PSI above this alerts")  # "significant"
    js_alert: float = _watch(0.1, "Jensen-Shannon distance above this alerts")
    ks_pvalue_alert: float = _watch(
        0.0, "KS p-value below this alerts (0: never)", simulation_only=_KEPT
    )
    # fairness alerts, above a threshold (null: none on that metric)
    demographic_parity_difference: float | None = _watch(0.1, "", simulation_only=_KEPT)
    demographic_parity_ratio: float | None = _watch(0.8, "below: alerts", simulation_only=_KEPT)
    equalized_odds_difference: float | None = _watch(0.1, "", simulation_only=_KEPT)
    equal_opportunity_difference: float | None = _watch(0.1, "", simulation_only=_KEPT)
    group_accuracy_gap: float | None = _watch(0.1, "", simulation_only=_KEPT)
    site_accuracy_gap: float | None = _watch(0.15, "", simulation_only=_KEPT)
    action: str = _watch(
        "none",
        "exclude: a site with a drift alert trains no more in this run",
        flag="--drift-action",
        choices=("none", "exclude"),
    )
    min_count: int = _watch(
        5,
        "no reported bin (or fairness cell) holds 1..min_count-1 of a site's rows; 1: exact",
        simulation_only="simulated sites' policy (deployed: --monitoring-min-count)",
    )


#: the sections above by the prefix of their keys
SECTIONS: dict[str, type] = {
    "strategy": StrategyConfig,
    "client": ClientTrainConfig,
    "privacy": PrivacyConfig,
    "secagg": SecAggConfig,
    "monitoring": MonitoringConfig,
}

#: deployment keys whose flag is not ``--`` plus the key with dashes
FLAG_NAMES = {
    "round_timeout_s": "--round-timeout",
    "join_timeout_s": "--join-timeout",
    "liveness_timeout_s": "--liveness-timeout",
    "heartbeat_interval_s": "--heartbeat-interval",
}


def flag_of(key: str) -> str:
    """The CLI flag of a key: ``strategy.select`` -> ``--krum-select``, ``client.lr`` ->
    ``--lr``, ``round_timeout_s`` -> ``--round-timeout``, ``min_clients`` -> ``--min-clients``;
    a simulation-only key (no flag) is named as it is (``privacy.count_noise``)."""
    prefix, _, name = key.rpartition(".")
    section = SECTIONS.get(prefix)
    if section is not None:
        spec = next((f for f in dataclasses.fields(section) if f.name == name), None)
        if spec is not None and spec.metadata.get("simulation_only"):
            return key
        if spec is not None:
            return spec.metadata.get("flag") or "--" + name.replace("_", "-")
    return FLAG_NAMES.get(key, "--" + key.replace("_", "-"))


def flagged(section: type) -> list[dataclasses.Field[Any]]:
    """The fields of a section a deployment sets by flag (all but the simulation-only)."""
    return [f for f in dataclasses.fields(section) if not f.metadata.get("simulation_only")]
