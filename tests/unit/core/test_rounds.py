"""Unit tests for fedops.core.rounds: client sampling and the round state machine."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.results import EvaluateResult, FitResult
from fedops.core.rounds import (
    NodeDropped,
    Outcome,
    Phase,
    ResultArrived,
    ResultRejected,
    RoundTracker,
    sample_clients,
)

# --- sample_clients ---------------------------------------------------------------------------


def test_sample_clients_returns_all_sorted_when_count_is_none_or_large():
    nodes = ["c", "a", "b"]
    assert sample_clients(nodes, None, seed=0, server_round=1) == ["a", "b", "c"]
    assert sample_clients(nodes, 3, seed=0, server_round=1) == ["a", "b", "c"]
    assert sample_clients(nodes, 10, seed=0, server_round=1) == ["a", "b", "c"]


def test_sample_clients_zero_picks_nobody():
    assert sample_clients(["a", "b"], 0, seed=0, server_round=1) == []


def test_sample_clients_varies_across_rounds():
    nodes = [f"site-{i}" for i in range(10)]
    picks = {tuple(sample_clients(nodes, 3, seed=7, server_round=r)) for r in range(1, 21)}
    assert len(picks) > 1


@settings(max_examples=150, deadline=None)
@given(
    nodes=st.lists(
        st.text(alphabet="abcxyz-019", min_size=1, max_size=6), min_size=0, max_size=15, unique=True
    ),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    server_round=st.integers(0, 10_000),
)
def test_sample_clients_deterministic_and_independent_of_input_order(
    nodes, data, seed, server_round
):
    count = data.draw(st.none() | st.integers(0, len(nodes) + 2), label="count")
    shuffled = data.draw(st.permutations(nodes), label="shuffled")
    picked = sample_clients(nodes, count, seed=seed, server_round=server_round)
    assert picked == sample_clients(shuffled, count, seed=seed, server_round=server_round)
    assert picked == sample_clients(nodes, count, seed=seed, server_round=server_round)
    expected_len = len(nodes) if count is None else min(count, len(nodes))
    assert len(picked) == expected_len
    assert len(set(picked)) == len(picked)
    assert set(picked) <= set(nodes)
    assert picked == sorted(picked)


# --- RoundTracker -----------------------------------------------------------------------------


def _fit(node: str, n: int = 5) -> FitResult:
    return FitResult(node_id=node, params={"w": np.zeros(1)}, num_examples=n)


def _tracker() -> RoundTracker:
    return RoundTracker(server_round=3, phase=Phase.FIT, tasks={"a": "t-a", "b": "t-b", "c": "t-c"})


def test_new_tracker_has_everyone_pending():
    tr = _tracker()
    assert tr.pending == ["a", "b", "c"]
    assert not tr.done
    assert tr.results == []


def test_tracker_records_ok_rejected_and_dropped():
    tr = _tracker()
    result = _fit("a")
    assert tr.apply(ResultArrived(node_id="a", task_id="t-a", result=result))
    assert tr.apply(ResultRejected(node_id="b", task_id="t-b", reason="NaN in w"))
    assert tr.apply(NodeDropped(node_id="c", reason="heartbeat lost"))
    assert tr.outcomes == {"a": Outcome.OK, "b": Outcome.REJECTED, "c": Outcome.DROPPED}
    assert tr.reasons == {"b": "NaN in w", "c": "heartbeat lost"}
    assert tr.results == [result]
    assert tr.done


def test_tracker_ignores_unknown_nodes():
    tr = _tracker()
    assert not tr.apply(ResultArrived(node_id="zz", task_id="t-a", result=_fit("zz")))
    assert not tr.apply(NodeDropped(node_id="zz", reason="gone"))
    assert tr.pending == ["a", "b", "c"]
    assert tr.results == []
    assert tr.reasons == {}


def test_tracker_ignores_wrong_task_ids():
    tr = _tracker()
    assert not tr.apply(ResultArrived(node_id="a", task_id="t-b", result=_fit("a")))
    assert not tr.apply(ResultRejected(node_id="b", task_id="old-task", reason="late"))
    assert tr.outcomes["a"] is Outcome.PENDING
    assert tr.outcomes["b"] is Outcome.PENDING
    assert tr.results == []


def test_tracker_ignores_duplicates_and_events_after_an_outcome():
    tr = _tracker()
    first = _fit("a", 5)
    assert tr.apply(ResultArrived(node_id="a", task_id="t-a", result=first))
    assert not tr.apply(ResultArrived(node_id="a", task_id="t-a", result=_fit("a", 99)))
    assert not tr.apply(ResultRejected(node_id="a", task_id="t-a", reason="x"))
    assert not tr.apply(NodeDropped(node_id="a", reason="x"))
    assert tr.outcomes["a"] is Outcome.OK
    assert tr.results == [first]
    assert "a" not in tr.reasons


def test_expire_marks_only_pending_nodes_timed_out():
    tr = _tracker()
    tr.apply(ResultArrived(node_id="a", task_id="t-a", result=_fit("a")))
    tr.apply(NodeDropped(node_id="b", reason="bye"))
    tr.expire()
    assert tr.outcomes == {"a": Outcome.OK, "b": Outcome.DROPPED, "c": Outcome.TIMED_OUT}
    assert tr.reasons["c"] == "no result before the round deadline"
    assert tr.reasons["b"] == "bye"
    assert tr.done
    # a late answer after the deadline is not for us any more
    assert not tr.apply(ResultArrived(node_id="c", task_id="t-c", result=_fit("c")))
    assert len(tr.results) == 1


def test_tracker_with_no_tasks_is_done_immediately():
    tr = RoundTracker(server_round=1, phase=Phase.EVALUATE, tasks={})
    assert tr.done


def test_evaluate_results_are_collected():
    tr = RoundTracker(server_round=1, phase=Phase.EVALUATE, tasks={"a": "e-a"})
    res = EvaluateResult(node_id="a", num_examples=3, metrics={"accuracy": 1.0})
    assert tr.apply(ResultArrived(node_id="a", task_id="e-a", result=res))
    assert tr.results == [res]


def test_outcome_and_phase_string_values():
    assert str(Outcome.TIMED_OUT) == "timed_out"
    assert str(Phase.FIT) == "fit"
