"""Fairness from pooled per-group counts, checked against fairlearn on the pooled raw data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score

from fedops.core.monitoring.fairness import (
    FAIRNESS_METRICS,
    FairnessThresholds,
    GroupCounts,
    confusion_counts,
    fairness_alerts,
    fairness_metrics,
    pool,
    site_accuracy_gap,
)


@st.composite
def federations(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, list[int]]:
    """Pooled labels, predictions and groups, a positive label, and cut points into sites."""
    n_classes = draw(st.integers(2, 4))
    n_groups = draw(st.integers(2, 4))
    size = draw(st.integers(1, 60))
    labels = st.lists(st.integers(0, n_classes - 1), min_size=size, max_size=size)
    y_true = np.array(draw(labels))
    y_pred = np.array(draw(labels))
    groups = np.array(draw(st.lists(st.integers(0, n_groups - 1), min_size=size, max_size=size)))
    positive = draw(st.integers(0, n_classes - 1))
    n_sites = draw(st.integers(1, 4))
    cuts = sorted(draw(st.lists(st.integers(0, size), min_size=n_sites - 1, max_size=n_sites - 1)))
    return y_true, y_pred, groups, positive, cuts


def _fairlearn(y_true, y_pred, groups, positive):
    t, p = (y_true == positive).astype(int), (y_pred == positive).astype(int)
    groups = groups.tolist()  # fairlearn squeezes a 1-element array to 0-D and rejects it
    return {
        "demographic_parity_difference": demographic_parity_difference(
            t, p, sensitive_features=groups
        ),
        "demographic_parity_ratio": demographic_parity_ratio(t, p, sensitive_features=groups),
        "equalized_odds_difference": equalized_odds_difference(t, p, sensitive_features=groups),
        "equal_opportunity_difference": equal_opportunity_difference(
            t, p, sensitive_features=groups
        ),
        "group_accuracy_gap": MetricFrame(
            metrics=accuracy_score, y_true=y_true, y_pred=y_pred, sensitive_features=groups
        ).difference(),
    }


@settings(max_examples=60, deadline=None)
@given(federations())
def test_pooled_site_counts_give_fairlearns_metrics_on_pooled_data(federation):
    y_true, y_pred, groups, positive, cuts = federation
    sites = [
        confusion_counts(t, p, g, positive_label=positive)
        for t, p, g in zip(
            np.split(y_true, cuts), np.split(y_pred, cuts), np.split(groups, cuts), strict=True
        )
    ]
    pooled = pool(sites)
    assert pooled == confusion_counts(y_true, y_pred, groups, positive_label=positive)

    ours = fairness_metrics(pooled)
    assert tuple(ours) == FAIRNESS_METRICS
    theirs = _fairlearn(y_true, y_pred, groups, positive)
    for name in FAIRNESS_METRICS:
        assert ours[name] == pytest.approx(float(theirs[name]), abs=1e-12, nan_ok=True), name


def test_hand_computed_example_split_over_two_sites():
    # group 0: tp 1, fn 1, fp 1, tn 1; group 1: tp 3, fp 1, tn 1
    y_true = np.array([1, 1, 0, 0, 1, 1, 1, 0, 0])
    y_pred = np.array([1, 0, 1, 0, 1, 1, 1, 1, 0])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    site_a = confusion_counts(y_true[:3], y_pred[:3], groups[:3])
    site_b = confusion_counts(y_true[3:], y_pred[3:], groups[3:])
    pooled = pool([site_a, site_b])
    assert pooled == {
        0: GroupCounts(n=4, tp=1, fp=1, tn=1, fn=1, correct=2),
        1: GroupCounts(n=5, tp=3, fp=1, tn=1, fn=0, correct=4),
    }
    assert (pooled[1].selection_rate, pooled[1].tpr, pooled[1].fpr) == (0.8, 1.0, 0.5)
    assert fairness_metrics(pooled) == pytest.approx(
        {
            "demographic_parity_difference": 0.3,  # 0.8 - 0.5
            "demographic_parity_ratio": 0.625,  # 0.5 / 0.8
            "equalized_odds_difference": 0.5,  # TPR gap 0.5, FPR gap 0
            "equal_opportunity_difference": 0.5,
            "group_accuracy_gap": 0.3,  # 0.8 - 0.5
        },
        abs=1e-15,
    )


def test_multiclass_accuracy_is_exact_and_rates_are_one_vs_rest():
    counts = confusion_counts([2, 0, 1, 2], [2, 1, 1, 0], [7, 7, 7, 7], positive_label=2)
    # positives (label 2): rows 0 and 3, only row 0 predicted 2; rows 1 and 2 are negatives.
    # The binary view is right on 3 of 4 rows, but only rows 0 and 2 are the exact class.
    assert counts == {7: GroupCounts(n=4, tp=1, fp=0, tn=2, fn=1, correct=2)}
    assert counts[7].accuracy == 0.5


def test_group_without_positives_has_tpr_zero_as_in_fairlearn():
    counts = {
        0: GroupCounts(n=4, tp=1, fp=0, tn=2, fn=1, correct=3),  # TPR 0.5
        1: GroupCounts(n=3, tp=0, fp=1, tn=2, fn=0, correct=2),  # no positives
    }
    assert math.isnan(counts[1].tpr)
    metrics = fairness_metrics(counts)
    assert metrics["equal_opportunity_difference"] == 0.5
    assert metrics["equalized_odds_difference"] == 0.5  # FPR gap 1/3 is smaller
    # the same data through fairlearn
    y_true, y_pred, groups = [1, 1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, 1, 1]
    assert equal_opportunity_difference(y_true, y_pred, sensitive_features=groups) == 0.5


def test_nothing_selected_gives_a_nan_ratio_and_no_groups_give_nan():
    counts = {
        0: GroupCounts(n=2, tp=0, fp=0, tn=1, fn=1, correct=1),
        1: GroupCounts(n=3, tp=0, fp=0, tn=3, fn=0, correct=3),
    }
    metrics = fairness_metrics(counts)
    assert metrics["demographic_parity_difference"] == 0.0
    assert math.isnan(metrics["demographic_parity_ratio"])
    assert all(math.isnan(v) for v in fairness_metrics({}).values())
    empty = GroupCounts(n=0, tp=0, fp=0, tn=0, fn=0, correct=0)
    assert math.isnan(empty.selection_rate) and math.isnan(empty.accuracy)
    assert fairness_metrics({**counts, 5: empty}) == pytest.approx(metrics, nan_ok=True)


def test_single_group_has_no_gap():
    metrics = fairness_metrics({3: GroupCounts(n=4, tp=1, fp=1, tn=1, fn=1, correct=2)})
    assert metrics == {
        "demographic_parity_difference": 0.0,
        "demographic_parity_ratio": 1.0,
        "equalized_odds_difference": 0.0,
        "equal_opportunity_difference": 0.0,
        "group_accuracy_gap": 0.0,
    }


def test_inputs_are_validated():
    with pytest.raises(ValueError, match="equal lengths"):
        confusion_counts([0, 1], [0, 1, 1], [0, 0])
    with pytest.raises(ValueError, match="1-D"):
        confusion_counts([[0, 1]], [[0, 1]], [[0, 0]])
    with pytest.raises(ValueError, match="groups must be integer-valued"):
        confusion_counts([0, 1], [0, 1], [0.5, 1.0])
    with pytest.raises(ValueError, match="groups must be integer-valued"):
        confusion_counts([0, 1], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="groups must be integer-valued"):
        confusion_counts([0, 1], [0, 1], [0.0, np.nan])
    with pytest.raises(ValueError, match="y_pred must be integer-valued"):
        confusion_counts([0, 1], [0.2, 0.9], [0, 0])
    with pytest.raises(ValueError, match="!= n"):
        GroupCounts(n=3, tp=1, fp=1, tn=0, fn=0, correct=0)
    with pytest.raises(ValueError, match=">= 0"):
        GroupCounts(n=0, tp=-1, fp=1, tn=0, fn=0, correct=0)
    with pytest.raises(TypeError):
        GroupCounts(n=0, tp=0, fp=0, tn=0, fn=0, correct=0) + 1  # type: ignore[operator]
    # integral floats and empty sites are fine
    assert confusion_counts([1], [1], [2.0]) == {2: GroupCounts(1, 1, 0, 0, 0, 1)}
    assert confusion_counts([], [], []) == {}


def test_site_accuracy_gap_ignores_nan():
    assert site_accuracy_gap({"a": 0.9, "b": 0.7, "c": math.nan}) == pytest.approx(0.2)
    assert math.isnan(site_accuracy_gap({"a": math.nan}))
    assert math.isnan(site_accuracy_gap({}))


def test_alerts_fire_past_thresholds_only():
    metrics = {
        "demographic_parity_difference": 0.1,  # at the threshold: no alert
        "demographic_parity_ratio": 0.75,  # under 0.8: alert
        "equalized_odds_difference": 0.2,
        "equal_opportunity_difference": math.nan,  # NaN never alerts
        "group_accuracy_gap": 0.05,
        "site_accuracy_gap": 0.16,
        "unknown": 99.0,
    }
    assert fairness_alerts(metrics, FairnessThresholds()) == [
        {"metric": "demographic_parity_ratio", "value": 0.75, "threshold": 0.8},
        {"metric": "equalized_odds_difference", "value": 0.2, "threshold": 0.1},
        {"metric": "site_accuracy_gap", "value": 0.16, "threshold": 0.15},
    ]
    relaxed = FairnessThresholds(demographic_parity_ratio=None, site_accuracy_gap=0.5)
    assert [a["metric"] for a in fairness_alerts(metrics, relaxed)] == ["equalized_odds_difference"]
    assert fairness_alerts({"demographic_parity_ratio": math.nan}, FairnessThresholds()) == []
    with pytest.raises(TypeError):
        FairnessThresholds(0.2)  # type: ignore[misc]
