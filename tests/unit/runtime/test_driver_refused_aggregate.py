"""The driver turns a strategy's refusal to aggregate into an aborted round.

``trimmed_mean`` configured for 10 clients a round, but only 3 answer (dropouts):
the rule would trim nothing, so one site's float32-max update would be the model.
The strategy raises :class:`~fedops.core.results.AggregationRefused`; the round
aborts with that reason, the model stays, and the run goes on (red team B8).
"""

from __future__ import annotations

import numpy as np
from answering_transport import AnsweringTransport

from fedops.core.params import digest
from fedops.core.strategies.robust import Krum, TrimmedMean
from fedops.runtime.driver import DriverConfig, RoundDriver
from fedops.runtime.store import RunStore

BIG = float(np.finfo(np.float32).max)


def _transport(fit: dict[str, float]) -> AnsweringTransport:
    """A fit with ``fit[node]`` in every tensor (100 examples each); evaluations of loss 1."""
    return AnsweringTransport(
        {n: (value, 100) for n, value in fit.items()}, {n: ({"loss": 1.0}, 10) for n in fit}
    )


def _run(tmp_path, strategy, rounds=2):
    store = RunStore(tmp_path / "run")
    initial = {"w": np.zeros(3, dtype=np.float32)}
    store.save_round(0, initial, {})
    driver = RoundDriver(
        transport=_transport({"a": 0.1, "b": 0.2, "evil": BIG}),
        strategy=strategy,
        config=DriverConfig(rounds=rounds, min_clients=1, round_timeout_s=5.0),
        store=store,
    )
    return initial, driver.run(initial), store


def test_a_round_too_small_to_trim_aborts_and_the_model_stays(tmp_path):
    initial, final, store = _run(tmp_path, TrimmedMean(beta=0.1))
    assert digest(final) == digest(initial)
    rows = store.round_metrics()
    assert [m["round"] for m in rows] == [1, 2]  # the run goes on
    for server_round, metrics in enumerate(rows, 1):
        assert "trim_fraction=0.1" in metrics["round_aborted"]
        assert "at least 10 results" in metrics["round_aborted"]
        assert digest(store.load_round(server_round)) == digest(initial)


def test_krum_short_of_results_aborts_the_round_rather_than_the_run(tmp_path):
    initial, final, store = _run(tmp_path, Krum(byzantine=1), rounds=1)
    assert digest(final) == digest(initial)
    assert "needs n > 2f + 2" in store.round_metrics()[0]["round_aborted"]
