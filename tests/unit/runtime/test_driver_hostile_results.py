"""The driver against results that pass every intake check yet would spoil the run.

A site's update of float32-max values claiming 2**40 examples: the aggregate
overflows, and the driver must not commit it (the round aborts, the model and the
strategy's state stay, the run goes on). A robust strategy reports the median
evaluation across sites, which no site's claimed count moves.
"""

from __future__ import annotations

import numpy as np
from answering_transport import AnsweringTransport

from fedops.core.params import digest
from fedops.core.strategies import FedAvg
from fedops.core.strategies.fedavgm import FedAvgM
from fedops.core.strategies.robust import Median
from fedops.runtime.driver import DriverConfig, RoundDriver
from fedops.runtime.store import RunStore

BIG = float(np.finfo(np.float32).max)
HUGE = 1 << 40


def _transport(fit, evals) -> AnsweringTransport:
    """``evals[node] -> (accuracy, num_examples)``, each with a loss of 1."""
    return AnsweringTransport(
        fit, {n: ({"accuracy": acc, "loss": 1.0}, count) for n, (acc, count) in evals.items()}
    )


def _run(tmp_path, transport, strategy, rounds=2):
    store = RunStore(tmp_path / "run")
    initial = {"w": np.zeros(3, dtype=np.float32), "b": np.ones(2, dtype=np.float32)}
    store.save_round(0, initial, {})
    driver = RoundDriver(
        transport=transport,
        strategy=strategy,
        config=DriverConfig(rounds=rounds, min_clients=1, round_timeout_s=5.0),
        store=store,
    )
    return initial, driver.run(initial), store


HONEST_EVALS = {"a": (0.8, 10), "b": (0.9, 10), "evil": (0.0, HUGE)}


def test_a_non_finite_aggregate_is_never_committed_and_the_run_goes_on(tmp_path):
    # finite updates, yet FedAvg with a server step of 2 lands past float32's range
    fit = {"a": (1.0, 10), "b": (1.0, 10), "evil": (BIG, HUGE)}
    initial, final, store = _run(tmp_path, _transport(fit, HONEST_EVALS), FedAvg(server_lr=2.0))
    assert digest(final) == digest(initial)
    for server_round, metrics in zip((1, 2), store.round_metrics(), strict=True):
        assert metrics["round"] == server_round
        assert "not finite" in metrics["round_aborted"]
        assert digest(store.load_round(server_round)) == digest(initial)


def test_a_refused_aggregate_leaves_the_strategys_state_as_it_was(tmp_path):
    strategy = FedAvgM(server_lr=2.0, momentum=0.9)
    before = strategy.state()
    fit = {"a": (1.0, 10), "b": (1.0, 10), "evil": (BIG, HUGE)}
    initial, final, store = _run(tmp_path, _transport(fit, HONEST_EVALS), strategy, rounds=1)
    assert "not finite" in store.round_metrics()[0]["round_aborted"]
    assert digest(final) == digest(initial)
    after = strategy.state()  # the momentum must not carry the overflow into later rounds
    assert sorted(after) == sorted(before)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value)


def test_a_robust_strategy_reports_the_median_evaluation(tmp_path):
    fit = {"a": (1.0, 10), "b": (1.0, 10), "evil": (1.0, 10)}
    _, _, store = _run(tmp_path, _transport(fit, HONEST_EVALS), Median(), rounds=1)
    assert store.round_metrics()[0]["eval_accuracy"] == 0.8
