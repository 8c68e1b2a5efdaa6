"""Under a robust strategy the round's ``train_loss`` is the median across sites.

Red team B10: with ``strategy=median`` the metrics line's ``train_loss`` was still the
mean weighted by each site's claimed ``num_examples``; one site claiming 2**40
examples and a loss of 1e300 set it (0.3 -> inf). Evaluation metrics were already
the unweighted median (:func:`~fedops.core.results.median_metrics`).
"""

from __future__ import annotations

import numpy as np
import pytest

from fedops.core.results import FitResult, check_reported
from fedops.core.strategies import FedAvg, Krum, Median, MultiKrum, TrimmedMean
from fedops.core.strategies.hooks import fit_metrics

PARAMS = {"w": np.zeros(2, np.float32)}
HONEST = [
    FitResult(node_id=f"h{i}", params=PARAMS, num_examples=500, metrics={"train_loss": 0.3})
    for i in range(9)
]
LIAR = FitResult(node_id="e", params=PARAMS, num_examples=1 << 40, metrics={"train_loss": 1e300})


@pytest.mark.parametrize(
    "strategy", [Median(), TrimmedMean(beta=0.1), Krum(byzantine=1), MultiKrum(byzantine=1)]
)
def test_one_site_claiming_many_examples_does_not_set_train_loss(strategy):
    check_reported(num_examples=LIAR.num_examples, metrics=LIAR.metrics, training=True)
    assert fit_metrics(strategy, 1, HONEST) == {"train_loss": 0.3}
    assert fit_metrics(strategy, 1, [*HONEST, LIAR]) == {"train_loss": 0.3}


def test_fedavg_still_weighs_by_the_claimed_counts():
    mixed = [
        *HONEST[:1],
        FitResult(node_id="b", params=PARAMS, num_examples=1500, metrics={"train_loss": 0.7}),
    ]
    assert fit_metrics(FedAvg(), 1, mixed)["train_loss"] == pytest.approx(0.6)


def test_no_train_loss_reported_means_none_in_the_line():
    quiet = [FitResult(node_id="q", params=PARAMS, num_examples=1)]
    assert fit_metrics(Median(), 1, quiet) == {}
