"""The settings a deployed run and a simulated run share, each written once.

Each section is a dataclass: the Hydra schema of its config group
(``strategy.*``, ``client.*``) and, nested in the deployment configs, what the
CLI's flags fill. A field's metadata carries its flag and help text, so
:mod:`fedops.cli.parser` builds the flags from these fields and both fronts
get the same names, defaults and checks. Errors name the dotted key
(``strategy.mu``); the CLI turns it into the flag the user typed
(:func:`flag_of`).

Adding a strategy option is a field here plus a keyword in the strategy that
reads it (its ``options`` mapping): nothing else.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from fedops.core.optimizers import OPTIMIZERS
from fedops.core.strategies import ROBUST_STRATEGIES, STRATEGIES, readers
from fedops.core.strategies.robust import Krum
from fedops.runtime.rules import ConfigError, require


def option(default: Any, help: str, *, flag: str | None = None, **extra: Any) -> Any:
    """A setting: its default, the help its flag shows, and the flag when it is not
    ``--`` plus the field name with dashes. ``extra``: ``choices`` for the flag."""
    return field(default=default, metadata={"help": help, "flag": flag, **extra})


@dataclass
class StrategyConfig:
    """How updates become the next model (``--strategy`` / ``strategy=NAME``)."""

    name: str = option(
        "fedavg", "how updates are combined (built-ins and registered ones)", flag="--strategy"
    )
    mu: float = option(0.01, "fedprox: the proximal coefficient of the clients' loss")
    server_lr: float = option(
        1.0, "fedavg/fedprox: server learning rate; the model moves lr x (mean - model)"
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
    """Local training at each site (``--epochs`` ... / ``client.*``)."""

    epochs: int = option(5, "local epochs per round")
    batch_size: int = option(16, "local batch size")
    lr: float = option(0.5, "local learning rate (tuned for the digits tasks)")
    optimizer: str = option("sgd", "local optimizer", choices=OPTIMIZERS)
    momentum: float = option(0.0, "SGD momentum (0: plain SGD)")


#: the sections above by the prefix of their keys
SECTIONS: dict[str, type] = {"strategy": StrategyConfig, "client": ClientTrainConfig}

#: deployment keys whose flag is not ``--`` plus the key with dashes
FLAG_NAMES = {
    "round_timeout_s": "--round-timeout",
    "join_timeout_s": "--join-timeout",
    "liveness_timeout_s": "--liveness-timeout",
    "heartbeat_interval_s": "--heartbeat-interval",
}


def flag_of(key: str) -> str:
    """The CLI flag of a key: ``strategy.select`` -> ``--krum-select``, ``client.lr`` ->
    ``--lr``, ``round_timeout_s`` -> ``--round-timeout``, ``min_clients`` -> ``--min-clients``."""
    prefix, _, name = key.rpartition(".")
    section = SECTIONS.get(prefix)
    if section is not None:
        spec = next((f for f in dataclasses.fields(section) if f.name == name), None)
        if spec is not None:
            return spec.metadata.get("flag") or "--" + name.replace("_", "-")
    return FLAG_NAMES.get(key, "--" + key.replace("_", "-"))


def check_strategy_options(st: StrategyConfig, *, prefix: str = "strategy") -> None:
    """The ``strategy.*`` keys on their own: a known name, values in range, and no option
    the chosen strategy does not read (it would be ignored without a word)."""
    require(
        st.name in STRATEGIES,
        f"{prefix}.name",
        f"must be one of {sorted(STRATEGIES)}, got {st.name!r}",
    )
    require(st.mu >= 0, f"{prefix}.mu", f"must be >= 0, got {st.mu}")
    require(
        math.isfinite(st.server_lr) and st.server_lr > 0,
        f"{prefix}.server_lr",
        f"must be a number > 0, got {st.server_lr}",
    )
    for spec in dataclasses.fields(StrategyConfig):
        value, reading = getattr(st, spec.name), readers(spec.name)
        require(
            spec.name == "name" or st.name in reading or value == spec.default,
            f"{prefix}.{spec.name}",
            f"has no effect with strategy {st.name}: it is read by "
            f"{' and '.join(reading) or 'no strategy'} only",
        )


def check_strategy_fits(
    st: StrategyConfig, *, per_round: int, secagg: str, privacy: str, prefix: str = "strategy"
) -> None:
    """The strategy against the rest of the run: robust rules need every client's model
    (no SecAgg, no central or distributed DP) and, for Krum, enough clients per round."""
    try:
        _check_robust(st, per_round=per_round, secagg=secagg, privacy=privacy)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.{exc.key}", exc.message) from None


def _check_robust(st: StrategyConfig, *, per_round: int, secagg: str, privacy: str) -> None:
    """``per_round``: the fewest clients a round is sure to sample."""
    name, f, select = st.name, st.byzantine, st.select
    require(
        0 <= st.trim_fraction < 0.5, "trim_fraction", f"must be in [0, 0.5), got {st.trim_fraction}"
    )
    require(f >= 0, "byzantine", f"must be >= 0, got {f}")
    require(select is None or select >= 1, "select", "must be >= 1")
    if name not in ROBUST_STRATEGIES:
        return
    require(
        secagg == "none",
        "name",
        f"{name} needs every client's model, secure aggregation reveals only their sum",
    )
    require(
        privacy not in ("central", "distributed"),
        "name",
        f"{name} cannot be combined with {privacy} DP, which aggregates by its own "
        "clipped and noised mean",
    )
    if name in ("krum", "multi_krum"):
        need = Krum(byzantine=f).min_results()
        require(
            per_round >= need,
            "byzantine",
            f"{name} with byzantine={f} needs more than 2f+2, i.e. at least {need} clients "
            f"per round, but a round may have only {per_round}: sample more clients per "
            "round or lower byzantine",
        )
        require(
            select is None or select <= per_round,
            "select",
            f"cannot select {select} of the {per_round} clients a round may have",
        )


def check_train(c: ClientTrainConfig, *, prefix: str = "client") -> None:
    require(c.epochs >= 1, f"{prefix}.epochs", f"must be >= 1, got {c.epochs}")
    require(c.batch_size >= 1, f"{prefix}.batch_size", f"must be >= 1, got {c.batch_size}")
    require(c.lr > 0, f"{prefix}.lr", f"must be > 0, got {c.lr}")
    require(
        c.optimizer in OPTIMIZERS,
        f"{prefix}.optimizer",
        f"must be one of {list(OPTIMIZERS)}, got {c.optimizer!r}",
    )
    require(0 <= c.momentum < 1, f"{prefix}.momentum", "must be in [0, 1)")
    require(
        c.optimizer == "sgd" or c.momentum == 0,
        f"{prefix}.momentum",
        f"has no effect with optimizer {c.optimizer}: it is read by sgd only",
    )


# ---- where the two fronts meet ---------------------------------------------------------
# The sections above are shared by construction. Every other deployment flag either is a
# Hydra key under another name (SAME_SETTING) or exists on one front only, for the reason
# given; tests/unit/config/test_settings_agree.py fails on a flag or key in neither list,
# and on a pair whose defaults differ (but for DIFFERENT_DEFAULTS, each with its reason).

#: deployment flag -> the Hydra key of the same setting
SAME_SETTING = {
    "--rounds": "rounds",
    "--seed": "seed",
    "--task": "task",
    "--partition": "partition.name",
    "--alpha": "partition.alpha",
    "--clients-per-round": "simulation.clients_per_round",
    "--min-fit-results": "simulation.min_fit_results",
    "--secagg": "secagg.name",
    "--secagg-k": "secagg.k",
    "--secagg-threshold": "secagg.threshold",
    "--secagg-clip": "secagg.clip",
    "--privacy": "privacy.name",
    "--noise-multiplier": "privacy.noise_multiplier",
    "--clip-norm": "privacy.clip_norm",
    "--delta": "privacy.delta",
    "--target-epsilon": "privacy.target_epsilon",
    "--accountant": "privacy.accountant",
    "--sampling": "privacy.sampling",
    "--publish-participants": "privacy.publish_participants",
    "--colluders": "privacy.colluders",
    "--release-site-metrics": "privacy.release_site_metrics",
    "--adaptive-clipping": "privacy.adaptive",
    "--max-epsilon": "privacy.site_max_epsilon",
    "--monitoring": "monitoring.name",
    "--positive-label": "monitoring.positive_label",
    "--psi-alert": "monitoring.psi_alert",
    "--js-alert": "monitoring.js_alert",
    "--drift-action": "monitoring.action",
    "--mlflow-uri": "mlflow_uri",
    "--mlflow-experiment": "mlflow_experiment",
}

#: a pair whose defaults differ on purpose -> why
DIFFERENT_DEFAULTS = {
    "--monitoring": "deployed, auto turns monitoring on without DP; simulated, monitoring "
    "runs on the sequential backend only, so it is off unless asked for (issue 22)",
}

_SITE = "a site's own policy or identity, set where the site runs"
_PROCESS = "how the coordinator process serves the network; a simulation has no network"

#: deployment flags with no simulation key -> why
DEPLOYMENT_ONLY = {
    "--address": _PROCESS,
    "--kit": "consortium deployments only (certificates, roles)",
    "--ca-fingerprint": "consortium deployments only (certificates, roles)",
    "--wait-for-start": "consortium deployments only (certificates, roles)",
    "--insecure": _PROCESS,
    "--data-seed": "a simulation splits its data with `seed`, as its sites are its own",
    "--min-clients": "a simulation's clients are all there: simulation.num_clients",
    "--run-dir": "a simulation's run directory is Hydra's: hydra.run.dir",
    "--round-timeout": _PROCESS,
    "--join-timeout": _PROCESS,
    "--liveness-timeout": _PROCESS,
    "--heartbeat-interval": _PROCESS,
    "--max-nodes": _PROCESS,
    "--keep-checkpoints": "a simulation keeps the run store's default (the newest 3)",
    "--max-workers": _PROCESS,
    "--metrics-port": _PROCESS,
    "--metrics-address": _PROCESS,
    "--coordinator": _PROCESS,
    "--site": _SITE,
    "--num-sites": _SITE,
    "--site-name": _SITE,
    "--max-retries": _PROCESS,
    "--retry-for": _PROCESS,
    "--require-secagg": _SITE,
    "--share-monitoring": _SITE,
    "--share-evaluation": _SITE,
    "--monitoring-min-count": _SITE + " (simulated sites: monitoring.min_count)",
    "--monitoring-max-cells": _SITE,
    "--dp-delta": _SITE,
    "--dp-public-records": _SITE,
    "--identity-key": _SITE,
    "--trusted-keys": _SITE,
    "--max-rounds": _SITE,
    "--allowed-task": _SITE,
    "--consent-file": _SITE,
    "--secagg-min-cohort": _SITE,
    "--secagg-min-degree": _SITE,
    "--secagg-max-colluders": _SITE,
    "--secagg-min-noise-multiplier": _SITE,
    "--secagg-max-l2-clip": _SITE,
}

_DATA = "the simulator's built-in data and models; a deployment's come from its --task"
_FLEET = "how the simulator runs its virtual clients"

#: Hydra keys with no deployment flag -> why
SIMULATION_ONLY = {
    **{
        f"dataset.{key}": _DATA
        for key in [
            "name",
            "alpha",
            "beta",
            "iid",
            "num_features",
            "num_classes",
            "mean_log",
            "sigma_log",
            "min_samples",
            "max_samples",
        ]
    },
    "model.name": _DATA,
    "model.hidden": _DATA,
    **{
        f"simulation.{key}": _FLEET
        for key in [
            "backend",
            "num_clients",
            "dropout_rate",
            "straggler_rate",
            "drop_stragglers",
            "device",
            "max_chunk",
            "workers",
            "ray_address",
            "threads",
        ]
    },
    "privacy.target_quantile": "adaptive clipping's tuning, fixed at Andrew et al.'s values "
    "when deployed (fedops.core.privacy.central.AdaptiveClipping)",
    "privacy.clip_learning_rate": "as privacy.target_quantile",
    "privacy.count_noise": "as privacy.target_quantile",
    "privacy.seed": "a deployed coordinator draws DP noise and sampling from the OS only",
    "secagg.min_survivors": "deployed sites set their floor themselves (--secagg-min-cohort)",
    "monitoring.bins": "deployed: the coordinator's default profile",
    "monitoring.ks_pvalue_alert": "deployed: the coordinator's default thresholds",
    "monitoring.demographic_parity_difference": "deployed: the default fairness thresholds",
    "monitoring.demographic_parity_ratio": "deployed: the default fairness thresholds",
    "monitoring.equalized_odds_difference": "deployed: the default fairness thresholds",
    "monitoring.equal_opportunity_difference": "deployed: the default fairness thresholds",
    "monitoring.group_accuracy_gap": "deployed: the default fairness thresholds",
    "monitoring.site_accuracy_gap": "deployed: the default fairness thresholds",
    "monitoring.min_count": "simulated sites' policy (deployed: --monitoring-min-count)",
}
