"""The coordinator's view of one round's monitoring: per-site drift, pooled numbers, alerts.

Sites send counts and their own drift statistics; here they become the
``drift``, ``drift_alerts``, ``fairness`` and ``fairness_alerts`` fields of a
round's metrics line. Fairness is computed once, on counts summed over sites,
which is what makes it equal to the same metric on the pooled data.

Pooled fairness is only as honest as the sites: a site's counts are its own word, and
the larger its counts the more it moves the pooled numbers. Given each site's evaluated
``examples`` (also its claim, but the one its evaluation is counted by), no site's
fairness counts may exceed it: larger ones are scaled down to it (:func:`capped`), so a
site claiming ``n = 2**39`` rows in its groups outweighs the others only by claiming as
many evaluated examples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedops.core.monitoring.drift import (
    JS_ALERT,
    PSI_SIGNIFICANT,
    FeatureDrift,
    drift_report,
    pooled_many,
    psi_level,
)
from fedops.core.monitoring.fairness import (
    FairnessThresholds,
    GroupCounts,
    fairness_alerts,
    fairness_metrics,
    pool,
    site_accuracy_gap,
)
from fedops.core.monitoring.profile import SiteReport


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorThresholds:
    """When drift and fairness numbers become alerts (the ``monitoring`` config)."""

    psi: float = PSI_SIGNIFICANT
    js: float = JS_ALERT
    ks_pvalue: float = 0.0  # KS is reported; it alerts only when this is set above 0
    fairness: FairnessThresholds = field(default_factory=FairnessThresholds)

    def __post_init__(self) -> None:
        for name in ("psi", "js"):
            if not getattr(self, name) > 0:
                raise ValueError(f"the {name} alert threshold must be > 0")
        if not 0 <= self.ks_pvalue < 1:
            raise ValueError(f"ks_pvalue must be in [0, 1), got {self.ks_pvalue}")


def _largest(drift: Sequence[FeatureDrift], statistic: str) -> tuple[float, str]:
    """The largest value and its feature (the first of equals, as ``max`` picks)."""
    values = [getattr(d, statistic) for d in drift]
    best = max(values)
    return float(best), drift[values.index(best)].feature


def drift_summary(drift: Sequence[FeatureDrift]) -> dict[str, Any]:
    """The largest PSI, JS and KS of one site (and their features), plus PSI per feature."""
    if not drift:
        return {}
    out: dict[str, Any] = {}
    for statistic in ("psi", "js", "ks"):
        out[statistic], out[f"{statistic}_feature"] = _largest(drift, statistic)
    out["by_feature"] = {d.feature: d.psi for d in drift}
    return out


def drift_alerts(
    site: str, drift: Sequence[FeatureDrift], thresholds: MonitorThresholds
) -> list[dict[str, Any]]:
    """One alert per (feature, statistic) over its threshold."""
    alerts = []
    for d in drift:
        if d.psi > thresholds.psi:
            alerts.append(_alert(site, d.feature, "psi", d.psi, psi_level(d.psi)))
        if d.js > thresholds.js:
            alerts.append(_alert(site, d.feature, "js", d.js, "significant"))
        if d.ks_pvalue < thresholds.ks_pvalue:
            alerts.append(_alert(site, d.feature, "ks_pvalue", d.ks_pvalue, "significant"))
    return alerts


def _alert(site: str, feature: str, statistic: str, value: float, level: str) -> dict[str, Any]:
    return {
        "site": site,
        "feature": feature,
        "statistic": statistic,
        "value": value,
        "level": level,
    }


def pooled_drift(reports: Sequence[SiteReport]) -> list[FeatureDrift]:
    """The federation's drift: statistics of the sites' summed histograms."""
    with_counts = [r for r in reports if r.reference]
    if not with_counts:
        return []
    names = [n for n in with_counts[0].reference if all(n in r.reference for r in with_counts)]
    ref = pooled_many([r.reference for r in with_counts], names)
    if all(r.current is r.reference for r in with_counts):  # one window (batched, no drift)
        cur = ref
    else:
        cur = pooled_many([r.current for r in with_counts], names)
    return drift_report(names, ref, cur)


class _PerDrift:
    """:func:`drift_summary` and :func:`drift_alerts` of each site, computed once per drift
    value: the batched simulation gives every site whose data did not move the same
    (immutable) tuple, a thousand sites in a round. Each site still gets its own dicts."""

    def __init__(self, thresholds: MonitorThresholds) -> None:
        self.thresholds = thresholds
        self._summaries: dict[int, dict[str, Any]] = {}
        self._alerting: dict[int, bool] = {}

    def summary(self, drift: Sequence[FeatureDrift]) -> dict[str, Any]:
        known = self._summaries.get(id(drift))
        if known is None:
            known = self._summaries[id(drift)] = drift_summary(drift)
        return {**known, "by_feature": dict(known["by_feature"])}

    def alerts(self, site: str, drift: Sequence[FeatureDrift]) -> list[dict[str, Any]]:
        if self._alerting.get(id(drift), True):
            alerts = drift_alerts(site, drift, self.thresholds)
            self._alerting[id(drift)] = bool(alerts)
            return alerts
        return []


def capped(groups: Mapping[int, GroupCounts], limit: int) -> Mapping[int, GroupCounts]:
    """A site's fairness counts, scaled down (each cell rounded down) to at most ``limit``
    rows in all when they claim more: a site weighs no more than the examples it evaluated."""
    total = sum(c.n for c in groups.values())
    if total <= limit:
        return groups
    out = {}
    for group, c in groups.items():
        tp, fp, tn, fn = (cell * limit // total for cell in (c.tp, c.fp, c.tn, c.fn))
        n = tp + fp + tn + fn
        out[group] = GroupCounts(
            n=n, tp=tp, fp=fp, tn=tn, fn=fn, correct=min(c.correct * limit // total, n)
        )
    return out


def summarize(
    reports: Mapping[str, SiteReport],
    site_accuracy: Mapping[str, float],
    thresholds: MonitorThresholds,
    examples: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The monitoring fields of one round's metrics line; ``examples``: each site's evaluated
    examples, which caps its fairness counts (:func:`capped`)."""
    per_site = _PerDrift(thresholds)
    out: dict[str, Any] = {
        "drift": {
            site: per_site.summary(r.drift) for site, r in sorted(reports.items()) if r.drift
        },
        "drift_alerts": [
            alert for site, r in sorted(reports.items()) for alert in per_site.alerts(site, r.drift)
        ],
    }
    pooled_stats = pooled_drift(list(reports.values()))
    if pooled_stats:
        out["drift_pooled"] = {k: v for k, v in drift_summary(pooled_stats).items()}
    counts = pool(
        [
            r.fairness if examples is None else capped(r.fairness, max(0, examples.get(s, 0)))
            for s, r in reports.items()
            if r.fairness
        ]
    )
    fairness: dict[str, float] = fairness_metrics(counts) if counts else {}
    gap = site_accuracy_gap(site_accuracy)
    if not math.isnan(gap):
        fairness["site_accuracy_gap"] = gap
    if fairness:
        out["fairness"] = fairness
        out["fairness_alerts"] = fairness_alerts(fairness, thresholds.fairness)
    return out
