"""Drift and fairness monitoring in a run: what to ask sites, and what their answers mean.

The driver hands every evaluation a :class:`~fedops.core.monitoring.profile.MonitorSpec`
and passes the sites' reports here; this turns them into the round's
``sites``, ``drift``, ``drift_alerts``, ``fairness`` and ``fairness_alerts``
fields, logs each alert, and keeps the set of flagged sites for the optional
action (``exclude``: a flagged site trains no more in this run).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedops.core.monitoring.profile import MonitorSpec, input_edges
from fedops.core.monitoring.summary import MonitorThresholds, summarize
from fedops.core.params import Params
from fedops.core.results import EvaluateResult
from fedops.core.training import as_tensors
from fedops.runtime.round_plugin import EvaluationAsk, RoundContext, RoundPlugin
from fedops.tasks.contract import Task
from fedops.tasks.monitor import split_groups, window_of

log = logging.getLogger("fedops.monitoring")

ACTIONS = ("none", "exclude")


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorSettings:
    """The ``monitoring`` config: bins, the favourable class, thresholds, action."""

    bins: int = 10
    positive_label: int = 1
    thresholds: MonitorThresholds = field(default_factory=MonitorThresholds)
    action: str = "none"

    def __post_init__(self) -> None:
        if self.bins < 2:
            raise ValueError(f"bins must be >= 2, got {self.bins}")
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {self.action!r}")


def monitor_spec(settings: MonitorSettings, task: Task | None, params: Params) -> MonitorSpec:
    """Bins from the coordinator's held-out data, when the task has some.

    Without held-out data there are no shared input bins, so sites monitor
    the model's outputs (class probabilities on fixed bins); the number of
    classes is then the length of the model's last bias vector.
    """
    edges: dict[str, np.ndarray] = {}
    num_classes = 0
    if task is not None and task.load_server_data is not None:
        data, _ = split_groups(as_tensors(task.load_server_data()))
        window = window_of(data)
        edges = input_edges(window.x, settings.bins)
        num_classes = int(window.y.max()) + 1 if len(window.y) else 0
    vectors = [a for a in params.values() if np.ndim(a) == 1]
    if vectors:
        num_classes = max(num_classes, len(vectors[-1]))
    return MonitorSpec(
        edges=edges, num_classes=max(num_classes, 2), positive_label=settings.positive_label
    )


#: said once per run where monitoring runs beside DP (README: "Privacy guarantees")
OUTSIDE_DP = (
    "monitoring is on beside differential privacy: the sites' drift histograms and per-group "
    "confusion counts are released un-noised, outside the DP guarantee"
)


def monitoring_under_dp(mode: str, privacy: str) -> str:
    """``auto`` as ``default`` without DP and ``none`` under it; warns when both are on."""
    if mode == "auto":
        mode = "none" if privacy != "none" else "default"
        if privacy != "none":
            log.info(
                "monitoring is off under DP (its statistics are not noised); "
                "--monitoring default / monitoring=default turns it on"
            )
    if mode != "none" and privacy != "none":
        log.warning("%s", OUTSIDE_DP)
    return mode


class RoundMonitor(RoundPlugin):
    """Summarises each round's site reports; remembers flagged sites."""

    def __init__(
        self,
        settings: MonitorSettings,
        spec: MonitorSpec,
        on_alert: Callable[[dict[str, Any]], None] = lambda alert: None,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.on_alert = on_alert
        self.flagged: set[str] = set()

    def excluded(self, site: str) -> bool:
        return self.settings.action == "exclude" and site in self.flagged

    def eligible(self, ctx: RoundContext, server_round: int, nodes: list[str]) -> list[str]:
        """Under ``action=exclude`` flagged sites train no more."""
        return [n for n in nodes if not self.excluded(ctx.site_names(n))]

    def evaluation(self, ask: EvaluationAsk) -> EvaluationAsk:
        return dataclasses.replace(ask, monitor=self.spec)

    def metrics(
        self,
        ctx: RoundContext,
        server_round: int,
        params: Params,
        evaluated: Sequence[EvaluateResult] | None,
    ) -> Mapping[str, Any]:
        if evaluated is None:
            return {}
        return self.summarize(server_round, evaluated, ctx.site_names)

    def summarize(
        self,
        server_round: int,
        results: Sequence[EvaluateResult],
        site_names: Callable[[str], str],
    ) -> dict[str, Any]:
        by_site = {site_names(r.node_id): r for r in results}
        out: dict[str, Any] = {"sites": _site_metrics(by_site)}
        reports = {s: r.report for s, r in by_site.items() if r.report is not None}
        accuracy = {
            s: float(r.metrics["accuracy"]) for s, r in by_site.items() if "accuracy" in r.metrics
        }
        # a site's fairness counts weigh at most the examples it says it evaluated
        examples = {s: r.num_examples for s, r in by_site.items()}
        out |= summarize(reports, accuracy, self.settings.thresholds, examples)
        self._raise(server_round, out)
        return out

    def _raise(self, server_round: int, fields: Mapping[str, Any]) -> None:
        per_site: dict[str, list[dict[str, Any]]] = {}
        for alert in fields.get("drift_alerts", []):
            per_site.setdefault(alert["site"], []).append(alert)
        for site, alerts in per_site.items():
            worst = max(alerts, key=lambda a: a["value"])
            log.warning(
                "round %d: drift alert at %s: %d feature statistics over threshold "
                "(largest: %s %s = %.3g)",
                server_round,
                site,
                len(alerts),
                worst["statistic"],
                worst["feature"],
                worst["value"],
            )
            self.flagged.add(site)
        for alert in fields.get("fairness_alerts", []):
            log.warning(
                "round %d: fairness alert: %s = %.3g (threshold %.3g)",
                server_round,
                alert["metric"],
                alert["value"],
                alert["threshold"],
            )
        for alert in [*fields.get("drift_alerts", []), *fields.get("fairness_alerts", [])]:
            self.on_alert({"round": server_round, **alert})


def _site_metrics(by_site: Mapping[str, EvaluateResult]) -> dict[str, dict[str, float]]:
    out = {}
    for site, r in sorted(by_site.items()):
        row = {k: float(r.metrics[k]) for k in ("accuracy", "loss") if k in r.metrics}
        if all(math.isfinite(v) for v in row.values()):
            out[site] = {**row, "num_examples": r.num_examples}
    return out
