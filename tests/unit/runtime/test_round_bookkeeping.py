"""The round's per-client bookkeeping, sped up without changing what it produces:
the collector's hold (gc_pause), the audit entry's participants, config groups, and the
participants table's rows."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedops.core.audit import json_values
from fedops.core.results import FitResult
from fedops.core.rounds import NodeDropped, Phase, ResultArrived, ResultRejected, RoundTracker
from fedops.runtime.audit.run_trail import _participant_rows
from fedops.runtime.driver import participants_of
from fedops.runtime.gc_pause import gc_paused
from fedops.runtime.store import Participant
from fedops.runtime.transport import Instruction


@pytest.fixture
def gc_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_gc_is_held_inside_and_back_on_after(gc_on: None) -> None:
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # nested: the outer hold keeps it off
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_gc_is_back_on_after_an_exception(gc_on: None) -> None:
    with pytest.raises(KeyError), gc_paused():
        raise KeyError("x")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off(gc_on: None) -> None:
    gc.disable()
    with gc_paused():
        pass
    assert not gc.isenabled()


def test_concurrent_holds_turn_it_back_on_once_the_last_leaves(gc_on: None) -> None:
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with gc_paused():
            inside.set()
            leave.wait(5)

    worker = threading.Thread(target=hold)
    worker.start()
    inside.wait(5)
    with gc_paused():
        pass
    assert not gc.isenabled()  # the worker still holds it
    leave.set()
    worker.join(5)
    assert gc.isenabled()


def _row(**fields: object) -> Participant:
    base: dict[str, object] = dict(phase="fit", node_id="site-0", site="a", outcome="ok")
    return Participant(**(base | fields))  # type: ignore[arg-type]


def _as_json_values(ps: list[Participant]) -> object:
    return json_values(
        [{"node_id": p.node_id, "site": p.site, "phase": p.phase, "outcome": p.outcome} for p in ps]
    )


def test_participant_rows_are_what_json_values_makes() -> None:
    ps = [_row(node_id=f"site-{i}", outcome="dropped" if i % 3 else "ok") for i in range(50)]
    assert _participant_rows(ps) == _as_json_values(ps)
    assert _participant_rows([]) == []


def test_a_field_that_is_not_a_str_still_goes_through_json_values() -> None:
    ps = [_row(), _row(site=Path("/sites/b"))]
    rows = _participant_rows(ps)
    assert rows == _as_json_values(ps)
    assert rows[1]["site"] == "/sites/b"


def test_one_config_for_all_is_one_group_in_the_nodes_order() -> None:
    plain = Instruction(phase=Phase.FIT, params={}, config={"lr": 0.1})
    assert plain.config_groups(["b", "a", "c"]) == [(["b", "a", "c"], {"lr": 0.1})]
    assert plain.config_groups([]) == []


def test_participants_of_names_each_outcome_once_per_node() -> None:
    tracker = RoundTracker(
        server_round=3, phase=Phase.FIT, tasks={"a": "ta", "b": "tb", "c": "tc", "d": "td"}
    )
    tracker.apply(ResultArrived(node_id="a", task_id="ta", result=_fit("a", 7)))
    tracker.apply(ResultRejected(node_id="b", task_id="tb", reason="NaN"))
    tracker.apply(NodeDropped(node_id="c", reason="gone"))
    tracker.expire()
    rows = participants_of(tracker, lambda node: f"site {node}")
    assert rows == [
        Participant(phase="fit", node_id="a", site="site a", outcome="ok", num_examples=7),
        Participant(phase="fit", node_id="b", site="site b", outcome="rejected", reason="NaN"),
        Participant(phase="fit", node_id="c", site="site c", outcome="dropped", reason="gone"),
        Participant(
            phase="fit",
            node_id="d",
            site="site d",
            outcome="timed_out",
            reason="no result before the round deadline",
        ),
    ]
    assert all(type(getattr(r, f)) is str for r in rows for f in ("phase", "outcome"))


def _fit(node: str, n: int) -> FitResult:
    return FitResult(node_id=node, params={}, num_examples=n)
