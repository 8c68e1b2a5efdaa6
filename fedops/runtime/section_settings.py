"""The ``privacy``, ``secagg`` and ``monitoring`` sections as the runtime's settings.

One function each, called by the coordinator (:mod:`fedops.coordinator.app`) and the
simulator (:mod:`fedops.simulation.engine`) alike; a key a deployment has no flag for
keeps its section default (:mod:`fedops.runtime.schema`), so both fronts run what the
same section says.
"""

from __future__ import annotations

from fedops.core.monitoring.fairness import FairnessThresholds
from fedops.core.monitoring.summary import MonitorThresholds
from fedops.core.privacy.central import AdaptiveClipping
from fedops.runtime.privacy import PrivacySettings
from fedops.runtime.round_monitor import MonitorSettings, monitoring_under_dp
from fedops.runtime.rules import sigma_of
from fedops.runtime.schema import MonitoringConfig, PrivacyConfig, SecAggConfig
from fedops.runtime.secure_fit import SecAggSettings


def privacy_settings(
    p: PrivacyConfig, a: SecAggConfig, *, min_fit_results: int
) -> PrivacySettings | None:
    """The run's DP (None without); ``min_fit_results``: the fewest updates a committed
    round holds, with SecAgg's floor the fewest noise shares distributed DP may count on."""
    if p.name == "none":
        return None
    adaptive = None
    if p.adaptive:
        adaptive = AdaptiveClipping(
            target_quantile=p.target_quantile,
            learning_rate=p.clip_learning_rate,
            count_noise=p.count_noise,
        )
    return PrivacySettings(
        noise_multiplier=sigma_of(p.noise_multiplier),
        clip_norm=p.clip_norm,
        delta=p.delta,
        target_epsilon=p.target_epsilon,
        accountant=p.accountant,
        adaptive=adaptive,
        seed=p.seed,  # None: OS entropy; a seed is reproducible and says it is not private
        mode=p.name,
        sampling=p.sampling,
        publish_participants=p.publish_participants,
        colluders=p.colluders,
        min_survivors=max(3, min_fit_results, a.min_survivors or 0),
        release_site_metrics=p.release_site_metrics,
    )


def secagg_settings(a: SecAggConfig) -> SecAggSettings | None:
    """SecAgg+ over every fit phase (None without)."""
    if a.name != "secaggplus":
        return None
    return SecAggSettings(
        degree=a.k, threshold=a.threshold, clip=a.clip, min_survivors=a.min_survivors
    )


def monitor_settings(m: MonitoringConfig, *, privacy: str) -> MonitorSettings | None:
    """Drift and fairness monitoring (None when off: ``auto`` is off under DP)."""
    if monitoring_under_dp(m.name, privacy) == "none":
        return None
    fairness = FairnessThresholds(
        **{f: getattr(m, f) for f in FairnessThresholds.__dataclass_fields__}
    )
    return MonitorSettings(
        bins=m.bins,
        positive_label=m.positive_label,
        thresholds=MonitorThresholds(
            psi=m.psi_alert, js=m.js_alert, ks_pvalue=m.ks_pvalue_alert, fairness=fairness
        ),
        action=m.action,
    )
