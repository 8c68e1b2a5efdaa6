"""The standing federation's run queue: order, resume after a kill, stops, limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedops.runtime import run_queue
from fedops.runtime.run_queue import QueueError, RunQueue, parse_run_name


def test_runs_are_served_oldest_first_and_a_running_one_resumes_before_any(tmp_path: Path):
    queue = RunQueue(tmp_path)
    first = queue.submit("task: digits\n", task="digits", by="root")
    second = queue.submit("task: digits-mlp\n", task="digits-mlp", by="admin")
    assert (first.id, second.id) == ("run-0001", "run-0002")
    assert queue.next_run() == first
    queue.started(first.seq, "abc")
    queue.close()
    # a serve process killed here comes back to the same file: run-0001 is still running
    again = RunQueue(tmp_path)
    resumed = again.next_run()
    assert resumed is not None and (resumed.id, resumed.state, resumed.run_id) == (
        "run-0001",
        "running",
        "abc",
    )
    again.finished(first.seq, "completed")
    following = again.next_run()
    assert following is not None and following.id == "run-0002"
    again.finished(second.seq, "failed", "join timeout")
    assert again.next_run() is None
    assert [(r.id, r.state, r.message) for r in again.runs()] == [
        ("run-0001", "completed", ""),
        ("run-0002", "failed", "join timeout"),
    ]


def test_a_stop_cancels_a_queued_run_and_asks_a_running_one(tmp_path: Path):
    queue = RunQueue(tmp_path)
    running = queue.submit("a", task="digits", by="root")
    waiting = queue.submit("b", task="digits", by="root")
    queue.started(running.seq, "r1")
    assert queue.stop(waiting.seq, "not needed").state == "cancelled"
    asked = queue.stop(running.seq, "admin: enough")
    assert (asked.state, asked.stop_requested) == ("running", "admin: enough")
    queue.finished(running.seq, "stopped", "admin: enough")
    with pytest.raises(QueueError, match="already stopped"):
        queue.stop(running.seq, "again")
    with pytest.raises(QueueError, match="no run run-0009"):
        queue.stop(9, "unknown")


def test_the_queue_is_bounded_in_runs_and_in_bytes(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(run_queue, "MAX_QUEUED", 2)
    queue = RunQueue(tmp_path)
    queue.submit("a", task="t", by="x")
    queue.submit("b", task="t", by="x")
    with pytest.raises(QueueError, match="2 runs are already queued"):
        queue.submit("c", task="t", by="x")
    with pytest.raises(QueueError, match="exceed"):
        queue.submit("x" * (run_queue.MAX_SPEC_BYTES + 1), task="t", by="x")
    with pytest.raises(ValueError, match="not a final state"):
        queue.finished(1, "running")


@pytest.mark.parametrize(
    "name",
    [
        "run-",
        "run-x",
        "job-0001",
        "../run-0001",
        "run-1234567890",
        "run-²",
        "run-\u0660\u0660\u0660\u0661",
    ],
)
def test_only_queue_names_are_runs(name: str):
    with pytest.raises(QueueError, match="not a run of this queue"):
        parse_run_name(name)
    assert parse_run_name("run-0042") == 42
