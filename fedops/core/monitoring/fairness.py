"""Group fairness of a federated model, from per-group confusion counts a site may share.

Each site counts, on its own test split and per sensitive group, how many
examples the model selected (predicted positive) and how it fared against the
true label; only these counts leave the site. Every metric below is a function
of the counts, so the coordinator sums them over sites (:func:`pool`) and gets
exactly the numbers fairlearn would compute on the pooled raw data, which
nobody holds.

The binary view used for selection rates, TPR and FPR treats ``positive_label``
as positive and every other class as negative (one-vs-rest for multiclass
tasks); accuracy is exact multiclass accuracy.

Metrics (all "between groups", as fairlearn's defaults):

* ``demographic_parity_difference``: max - min selection rate ``P(ŷ=+ | A=a)``.
* ``demographic_parity_ratio``: min / max selection rate; below 0.8 fails the
  four-fifths rule.
* ``equalized_odds_difference``: the larger of the TPR gap and the FPR gap
  (fairlearn's ``agg="worst_case"``).
* ``equal_opportunity_difference``: the TPR gap.
* ``group_accuracy_gap``: max - min accuracy.

Conventions, matching fairlearn 0.15 (checked against it in the tests):

* A group with no positives has TPR **0**, not undefined, and a group with no
  negatives has FPR 0: fairlearn takes the rates from scikit-learn's
  ``confusion_matrix(normalize="true")``, which turns 0/0 into 0. Such a group
  therefore counts in the TPR (FPR) gap as if the model had missed every
  positive (flagged no negative). This is a fairlearn quirk, kept so that the
  numbers agree with it; :attr:`GroupCounts.tpr` and :attr:`GroupCounts.fpr`
  themselves return NaN for an empty denominator.
* ``demographic_parity_ratio`` is NaN when no group has any selection (0/0).
* Groups with ``n == 0`` are ignored (fairlearn never sees them); with no
  groups at all every metric is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import ArrayLike, NDArray

FAIRNESS_METRICS = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equal_opportunity_difference",
    "group_accuracy_gap",
)


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


@dataclass(frozen=True, slots=True)
class GroupCounts:
    """Confusion counts of one sensitive group (binary view) and its multiclass hit count."""

    n: int
    tp: int
    fp: int
    tn: int
    fn: int
    #: examples with ``y_pred == y_true`` (exact multiclass accuracy)
    correct: int

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"GroupCounts.{f.name} must be an int, got {value!r}")
            if value < 0:
                raise ValueError(f"GroupCounts.{f.name} must be >= 0, got {value}")
        if self.tp + self.fp + self.tn + self.fn != self.n:
            raise ValueError(
                f"GroupCounts: tp + fp + tn + fn = "
                f"{self.tp + self.fp + self.tn + self.fn} != n = {self.n}"
            )
        if self.correct > self.n:
            raise ValueError(f"GroupCounts: correct = {self.correct} > n = {self.n}")

    def __add__(self, other: object) -> GroupCounts:
        if not isinstance(other, GroupCounts):
            return NotImplemented
        return GroupCounts(
            n=self.n + other.n,
            tp=self.tp + other.tp,
            fp=self.fp + other.fp,
            tn=self.tn + other.tn,
            fn=self.fn + other.fn,
            correct=self.correct + other.correct,
        )

    @property
    def selection_rate(self) -> float:
        """``(tp + fp) / n``: the share predicted positive (NaN if the group is empty)."""
        return _rate(self.tp + self.fp, self.n)

    @property
    def tpr(self) -> float:
        """``tp / (tp + fn)``; NaN without positives (fairness metrics use 0 then, as fairlearn)."""
        return _rate(self.tp, self.tp + self.fn)

    @property
    def fpr(self) -> float:
        """``fp / (fp + tn)``; NaN without negatives (fairness metrics use 0 then, as fairlearn)."""
        return _rate(self.fp, self.fp + self.tn)

    @property
    def accuracy(self) -> float:
        """``correct / n`` (NaN if the group is empty)."""
        return _rate(self.correct, self.n)


def _integer_array(values: ArrayLike, name: str) -> NDArray[np.int64]:
    """``values`` as a 1-D int64 array, or a ValueError saying why it cannot be one."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be integer-valued, got non-finite values")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must be integer-valued, got non-integral floats")
        return arr.astype(np.int64)
    raise ValueError(f"{name} must be integer-valued, got dtype {arr.dtype}")


def confusion_counts(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike,
    *,
    positive_label: int = 1,
) -> dict[int, GroupCounts]:
    """Per-group :class:`GroupCounts` of one site's predictions, keyed by group id (sorted).

    ``y_true``, ``y_pred`` (integer class labels) and ``groups`` (integer group
    ids) are 1-D and of equal length. Only groups that occur are returned.
    """
    t = _integer_array(y_true, "y_true")
    p = _integer_array(y_pred, "y_pred")
    g = _integer_array(groups, "groups")
    if not len(t) == len(p) == len(g):
        raise ValueError(
            f"y_true, y_pred and groups must have equal lengths, "
            f"got {len(t)}, {len(p)} and {len(g)}"
        )
    ids, index = np.unique(g, return_inverse=True)
    k = len(ids)
    actual, predicted = t == positive_label, p == positive_label

    def count(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
        return np.bincount(index[mask], minlength=k).astype(np.int64)

    n = np.bincount(index, minlength=k)
    tp = count(actual & predicted)
    fp = count(~actual & predicted)
    tn = count(~actual & ~predicted)
    fn = count(actual & ~predicted)
    correct = count(t == p)
    return {
        int(ids[i]): GroupCounts(
            n=int(n[i]),
            tp=int(tp[i]),
            fp=int(fp[i]),
            tn=int(tn[i]),
            fn=int(fn[i]),
            correct=int(correct[i]),
        )
        for i in range(k)
    }


def pool(per_site: Sequence[Mapping[int, GroupCounts]]) -> dict[int, GroupCounts]:
    """The federation's counts: each group's counts summed over the sites (sorted by group id)."""
    total: dict[int, GroupCounts] = {}
    for site in per_site:
        for group, counts in site.items():
            total[group] = total[group] + counts if group in total else counts
    return dict(sorted(total.items()))


def _gap(values: Sequence[float]) -> float:
    return max(values) - min(values) if values else math.nan


def _ratio(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    low, high = min(values), max(values)
    # 0/0 (nobody selected anywhere) is NaN, as in fairlearn (pandas float division)
    return low / high if high else math.nan


def fairness_metrics(counts: Mapping[int, GroupCounts]) -> dict[str, float]:
    """The :data:`FAIRNESS_METRICS` of pooled (or one site's) per-group counts.

    Equal to fairlearn's between-groups metrics on the raw data; see the module
    docstring for the conventions (TPR/FPR of 0 for a group without positives /
    negatives, NaN ratio when nothing is selected, empty groups ignored).
    """
    present = [c for c in counts.values() if c.n > 0]
    selection = [c.selection_rate for c in present]
    # fairlearn (through scikit-learn's normalised confusion matrix) maps 0/0 rates to 0
    tpr = [c.tp / (c.tp + c.fn) if c.tp + c.fn else 0.0 for c in present]
    fpr = [c.fp / (c.fp + c.tn) if c.fp + c.tn else 0.0 for c in present]
    accuracy = [c.accuracy for c in present]
    tpr_gap, fpr_gap = _gap(tpr), _gap(fpr)
    return {
        "demographic_parity_difference": _gap(selection),
        "demographic_parity_ratio": _ratio(selection),
        "equalized_odds_difference": max(tpr_gap, fpr_gap) if present else math.nan,
        "equal_opportunity_difference": tpr_gap,
        "group_accuracy_gap": _gap(accuracy),
    }


def site_accuracy_gap(accuracies: Mapping[str, float]) -> float:
    """Max - min of the sites' accuracies, NaN ones ignored (NaN if none is left)."""
    return _gap([a for a in accuracies.values() if not math.isnan(a)])


@dataclass(frozen=True, slots=True, kw_only=True)
class FairnessThresholds:
    """Alert thresholds per metric name; ``None`` switches that metric's alert off.

    Every metric alerts when it exceeds its threshold, except
    ``demographic_parity_ratio``, which alerts when it falls below it (0.8: the
    four-fifths rule).
    """

    demographic_parity_difference: float | None = 0.1
    demographic_parity_ratio: float | None = 0.8
    equalized_odds_difference: float | None = 0.1
    equal_opportunity_difference: float | None = 0.1
    group_accuracy_gap: float | None = 0.1
    site_accuracy_gap: float | None = 0.15


#: metrics whose alert fires when the value is *below* the threshold
_LOWER_IS_WORSE = frozenset({"demographic_parity_ratio"})


def fairness_alerts(
    metrics: Mapping[str, float], thresholds: FairnessThresholds
) -> list[dict[str, object]]:
    """One ``{"metric", "value", "threshold"}`` per metric past its threshold.

    Listed in the order of :class:`FairnessThresholds`' fields; metrics without a
    threshold (or with ``None``) and NaN values never alert.
    """
    alerts: list[dict[str, object]] = []
    for f in fields(thresholds):
        threshold: float | None = getattr(thresholds, f.name)
        value = metrics.get(f.name)
        if threshold is None or value is None or math.isnan(value):
            continue
        breached = value < threshold if f.name in _LOWER_IS_WORSE else value > threshold
        if breached:
            alerts.append({"metric": f.name, "value": float(value), "threshold": float(threshold)})
    return alerts
