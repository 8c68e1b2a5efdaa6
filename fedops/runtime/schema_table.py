"""Where the two fronts meet: every deployment flag and every Hydra key, placed.

The sections of :mod:`fedops.runtime.schema` are shared by construction: a field is a flag
and a key, or (``option(..., simulation_only=WHY)``) a key only, listed below with its
reason. Every other deployment flag either is a Hydra key under another name
(:data:`SAME_SETTING`) or exists on one front only, for the reason given;
tests/unit/config/test_settings_agree.py fails on a flag or key in neither list, and on a
pair whose defaults differ (but for :data:`DIFFERENT_DEFAULTS`, each with its reason).
"""

from __future__ import annotations

import dataclasses

from fedops.runtime.schema import SECTIONS


def _simulation_only() -> dict[str, str]:
    """The sections' keys a deployment has no flag for -> why (the fields' own reasons)."""
    return {
        f"{prefix}.{spec.name}": spec.metadata["simulation_only"]
        for prefix, section in SECTIONS.items()
        for spec in dataclasses.fields(section)
        if spec.metadata.get("simulation_only")
    }


#: deployment flag -> the Hydra key of the same setting
SAME_SETTING = {
    "--rounds": "rounds",
    "--seed": "seed",
    "--task": "task",
    "--flower-app": "flower_app",
    "--flower-initial": "flower_initial",
    "--partition": "partition.name",
    "--alpha": "partition.alpha",
    "--clients-per-round": "simulation.clients_per_round",
    "--min-fit-results": "simulation.min_fit_results",
    "--mlflow-uri": "mlflow_uri",
    "--mlflow-experiment": "mlflow_experiment",
}

#: a pair whose defaults differ on purpose -> why (the deployment sets its own in one place:
#: fedops.runtime.settings.DEPLOYED_MONITORING)
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
    "--standing": _PROCESS + " (a standing federation's site: fedops serve)",
    "--max-runs": _PROCESS + " (a standing site's: how many runs it stays for)",
    "--max-epochs": _SITE + " (caps on the run's training settings)",
    "--max-batch-size": _SITE + " (caps on the run's training settings)",
    "--max-lr": _SITE + " (caps on the run's training settings)",
    "--require-secagg": _SITE,
    "--share-monitoring": _SITE,
    "--share-evaluation": _SITE,
    "--monitoring-min-count": _SITE + " (simulated sites: monitoring.min_count)",
    "--monitoring-max-cells": _SITE,
    "--max-epsilon": _SITE + " (simulated sites: privacy.site_max_epsilon)",
    "--max-run-epsilon": _SITE + " (a standing site's per-run budget: runs are deployed)",
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
            "data",
        ]
    },
    **_simulation_only(),
}
