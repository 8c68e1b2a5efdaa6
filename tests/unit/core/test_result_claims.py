"""What a site claims in a result: the checks in :mod:`fedops.core.results`."""

from __future__ import annotations

import math

import pytest

from fedops.core.params import InvalidUpdate
from fedops.core.results import EvaluateResult, check_reported, median_metrics


@pytest.mark.parametrize("accuracy", [1e300, 1.0000001, -0.5])
def test_an_evaluation_accuracy_outside_zero_one_is_refused(accuracy):
    with pytest.raises(InvalidUpdate, match=r"'accuracy' is .*in \[0, 1\]"):
        check_reported(num_examples=5, metrics={"accuracy": accuracy}, training=False)


def test_an_accuracy_in_range_and_other_metrics_pass():
    for accuracy in (0.0, 0.5, 1.0):
        check_reported(num_examples=5, metrics={"accuracy": accuracy, "loss": 7.0}, training=False)
    check_reported(num_examples=5, metrics={"loss": -1e300}, training=False)
    with pytest.raises(InvalidUpdate, match="not finite"):
        check_reported(num_examples=5, metrics={"accuracy": math.inf}, training=False)


def test_median_metrics_ignore_claimed_counts():
    results = [
        EvaluateResult(node_id="a", num_examples=1, metrics={"accuracy": 0.9, "loss": 1.0}),
        EvaluateResult(node_id="b", num_examples=2, metrics={"accuracy": 0.7}),
        EvaluateResult(node_id="c", num_examples=1 << 40, metrics={"accuracy": 0.0}),
        EvaluateResult(node_id="d", num_examples=0, metrics={"accuracy": 0.1}),  # none seen
    ]
    assert median_metrics(results) == {"accuracy": 0.7}
    assert median_metrics([]) == {}
