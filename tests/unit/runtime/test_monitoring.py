"""Drift and fairness monitoring in a run (:mod:`fedops.runtime.round_monitor`).

Under test: the ``monitoring`` settings' validation; ``monitoring_under_dp``
(``auto`` is off under DP, and monitoring beside DP is said to be outside the
guarantee); ``monitor_spec`` (input bins from the coordinator's held-out data
at the configured count, else output monitoring sized by the model's last
bias); and :class:`RoundMonitor`, which turns the sites' evaluations into the
round's ``sites``/``drift``/``fairness`` fields, flags drifting sites (excluded
only under ``action=exclude``) and hands every alert to ``on_alert``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pytest
from torch import nn

from fedops.core.monitoring.drift import FeatureDrift
from fedops.core.monitoring.fairness import GroupCounts
from fedops.core.monitoring.profile import SiteReport
from fedops.core.monitoring.summary import MonitorThresholds
from fedops.core.results import EvaluateResult
from fedops.runtime.round_monitor import (
    OUTSIDE_DP,
    MonitorSettings,
    RoundMonitor,
    monitor_spec,
    monitoring_under_dp,
)
from fedops.tasks.contract import Task

NAMES = {"n1": "bank-a", "n2": "bank-b", "n3": "bank-c"}


def _drift(feature: str, psi: float, js: float = 0.0) -> FeatureDrift:
    level = "significant" if psi > 0.25 else "none"
    return FeatureDrift(feature=feature, psi=psi, level=level, js=js, ks=0.1, ks_pvalue=0.5)


def _result(node: str, report: SiteReport | None = None, **metrics: float) -> EvaluateResult:
    return EvaluateResult(node_id=node, num_examples=10, metrics=metrics, report=report)


# -- settings -----------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    s = MonitorSettings()
    assert (s.bins, s.positive_label, s.action) == (10, 1, "none")


@pytest.mark.parametrize("bins", [1, 0, -5])
def test_fewer_than_two_bins_are_refused(bins: int) -> None:
    with pytest.raises(ValueError, match=f"bins must be >= 2, got {bins}"):
        MonitorSettings(bins=bins)


def test_an_unknown_action_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"action must be one of \('none', 'exclude'\), got 'drop'"
    ):
        MonitorSettings(action="drop")


# -- monitoring beside DP -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "privacy", "expected", "warned"),
    [
        ("auto", "none", "default", False),
        ("auto", "central", "none", False),  # off under DP: not warned, only said
        ("default", "none", "default", False),
        ("none", "central", "none", False),
        ("default", "central", "default", True),
        ("default", "local", "default", True),
    ],
)
def test_auto_is_off_under_dp_and_monitoring_beside_dp_is_warned_about(
    caplog: pytest.LogCaptureFixture, mode: str, privacy: str, expected: str, warned: bool
) -> None:
    with caplog.at_level(logging.INFO, logger="fedops.monitoring"):
        assert monitoring_under_dp(mode, privacy) == expected
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ([OUTSIDE_DP] if warned else [])


def test_auto_under_dp_says_how_to_turn_monitoring_on(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fedops.monitoring"):
        monitoring_under_dp("auto", "central")
    assert any("--monitoring default" in r.getMessage() for r in caplog.records)


# -- what the sites are asked -------------------------------------------------------------------


def test_without_held_out_data_sites_monitor_outputs_sized_by_the_last_bias() -> None:
    params = {
        "hidden.weight": np.zeros((8, 4)),
        "hidden.bias": np.zeros(8),
        "out.weight": np.zeros((3, 8)),
        "out.bias": np.zeros(3),
    }
    spec = monitor_spec(MonitorSettings(positive_label=2), None, params)
    assert dict(spec.edges) == {}
    assert spec.num_classes == 3
    assert spec.positive_label == 2


def test_without_a_bias_vector_two_classes_are_assumed() -> None:
    spec = monitor_spec(MonitorSettings(), None, {"w": np.zeros((1, 4))})
    assert spec.num_classes == 2 and dict(spec.edges) == {}


def _server_task(x: np.ndarray, y: np.ndarray) -> Task:
    return Task(
        name="held-out",
        build_model=lambda: nn.Linear(2, 3),
        load_data=lambda site, num_sites: ((), ()),
        load_server_data=lambda: (x, y),
    )


def test_held_out_data_gives_quantile_input_bins_at_the_configured_count() -> None:
    x = np.stack([np.arange(0, 40, 2), np.arange(1, 41, 2)], axis=1).astype(np.float32)
    y = np.array([0, 1, 2] * 6 + [0, 1])
    spec = monitor_spec(MonitorSettings(bins=4), _server_task(x, y), {"b": np.zeros(3)})
    assert sorted(spec.edges) == ["x0", "x1"]
    # quartiles of 0, 2, ..., 38 (linear interpolation), open at both ends
    np.testing.assert_allclose(spec.edges["x0"], [-np.inf, 9.5, 19.0, 28.5, np.inf])
    np.testing.assert_allclose(spec.edges["x1"], [-np.inf, 10.5, 20.0, 29.5, np.inf])
    assert spec.num_classes == 3


def test_the_class_count_is_the_larger_of_the_labels_and_the_model_outputs() -> None:
    x = np.zeros((6, 2), np.float32)
    y = np.array([0, 1, 4, 0, 1, 4])  # labels up to 4: five classes
    assert monitor_spec(MonitorSettings(), _server_task(x, y), {"b": np.zeros(3)}).num_classes == 5
    y = np.array([0, 1, 0, 1, 0, 1])
    assert monitor_spec(MonitorSettings(), _server_task(x, y), {"b": np.zeros(7)}).num_classes == 7


# -- a round's reports --------------------------------------------------------------------------


def test_site_metrics_are_named_sorted_and_sites_with_nan_are_left_out() -> None:
    monitor = RoundMonitor(MonitorSettings(), spec=monitor_spec(MonitorSettings(), None, {}))
    out = monitor.summarize(
        1,
        [
            _result("n2", accuracy=0.5, loss=1.0, extra=3.0),
            _result("n1", accuracy=0.75),
            _result("n3", accuracy=math.nan, loss=0.1),
        ],
        NAMES.__getitem__,
    )
    assert out["sites"] == {
        "bank-a": {"accuracy": 0.75, "num_examples": 10},
        "bank-b": {"accuracy": 0.5, "loss": 1.0, "num_examples": 10},
    }
    assert list(out["sites"]) == ["bank-a", "bank-b"]
    assert out["drift"] == {} and out["drift_alerts"] == []
    # bank-c's NaN accuracy is ignored; 0.75 - 0.5 is past the 0.15 default
    assert out["fairness"] == {"site_accuracy_gap": 0.25}
    assert out["fairness_alerts"] == [
        {"metric": "site_accuracy_gap", "value": 0.25, "threshold": 0.15}
    ]


def test_a_drifting_site_is_flagged_and_every_alert_reaches_on_alert() -> None:
    seen: list[dict[str, Any]] = []
    monitor = RoundMonitor(
        MonitorSettings(), spec=monitor_spec(MonitorSettings(), None, {}), on_alert=seen.append
    )
    drifting = SiteReport(drift=(_drift("x0", 0.4), _drift("x1", 0.05, js=0.3)))
    calm = SiteReport(drift=(_drift("x0", 0.01),))
    out = monitor.summarize(
        4,
        [_result("n1", drifting, accuracy=0.8), _result("n2", calm, accuracy=0.8)],
        NAMES.__getitem__,
    )
    assert out["drift_alerts"] == [
        {
            "site": "bank-a",
            "feature": "x0",
            "statistic": "psi",
            "value": 0.4,
            "level": "significant",
        },
        {
            "site": "bank-a",
            "feature": "x1",
            "statistic": "js",
            "value": 0.3,
            "level": "significant",
        },
    ]
    assert out["drift"]["bank-a"]["psi"] == 0.4 and out["drift"]["bank-a"]["psi_feature"] == "x0"
    assert out["drift"]["bank-b"]["psi"] == 0.01
    assert monitor.flagged == {"bank-a"}
    assert seen == [{"round": 4, **alert} for alert in out["drift_alerts"]]
    assert "fairness_alerts" in out and out["fairness_alerts"] == []  # equal accuracies
    # without action=exclude a flagged site keeps training
    assert monitor.excluded("bank-a") is False


def test_under_exclude_only_flagged_sites_are_excluded_and_they_stay_so() -> None:
    settings = MonitorSettings(action="exclude")
    monitor = RoundMonitor(settings, spec=monitor_spec(settings, None, {}))
    monitor.summarize(1, [_result("n1", SiteReport(drift=(_drift("x0", 0.9),)))], NAMES.__getitem__)
    # a later calm round does not lift the flag
    monitor.summarize(2, [_result("n1", SiteReport(drift=(_drift("x0", 0.0),)))], NAMES.__getitem__)
    assert monitor.excluded("bank-a") is True
    assert monitor.excluded("bank-b") is False


def test_thresholds_come_from_the_settings() -> None:
    settings = MonitorSettings(thresholds=MonitorThresholds(psi=0.5, js=0.5))
    monitor = RoundMonitor(settings, spec=monitor_spec(settings, None, {}))
    out = monitor.summarize(
        1, [_result("n1", SiteReport(drift=(_drift("x0", 0.4, js=0.3),)))], NAMES.__getitem__
    )
    assert out["drift_alerts"] == [] and monitor.flagged == set()


def test_fairness_alerts_reach_on_alert_but_flag_no_site() -> None:
    seen: list[dict[str, Any]] = []
    monitor = RoundMonitor(
        MonitorSettings(), spec=monitor_spec(MonitorSettings(), None, {}), on_alert=seen.append
    )
    # group 0 selected 8 of 10, group 1 2 of 10: a demographic parity difference of 0.6
    a = {0: GroupCounts(n=10, tp=8, fp=0, tn=2, fn=0, correct=10)}
    b = {1: GroupCounts(n=10, tp=2, fp=0, tn=8, fn=0, correct=10)}
    out = monitor.summarize(
        2,
        [_result("n1", SiteReport(fairness=a)), _result("n2", SiteReport(fairness=b))],
        NAMES.__getitem__,
    )
    assert out["fairness"]["demographic_parity_difference"] == pytest.approx(0.6)
    metrics = [alert["metric"] for alert in out["fairness_alerts"]]
    assert "demographic_parity_difference" in metrics
    assert [s["metric"] for s in seen] == metrics and all(s["round"] == 2 for s in seen)
    assert monitor.flagged == set()
