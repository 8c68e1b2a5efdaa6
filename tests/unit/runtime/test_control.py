"""An admin's start and stop of a run (:mod:`fedops.runtime.control`).

Under test: the states a run goes through, that ``start`` and ``stop`` say
whether they changed anything, that :meth:`RunControl.before_round` refuses
to begin a round once a stop was asked for (with who-and-why in the message)
or when nobody started the run in time, and that a stop asked for before the
start releases a driver waiting for that start instead of leaving it waiting.
"""

from __future__ import annotations

import threading

import pytest

from fedops.runtime.control import RunControl, RunStopped


def test_a_run_started_at_once_is_running_and_lets_rounds_begin() -> None:
    control = RunControl(rounds_planned=5)
    assert control.state == "running"
    assert control.rounds_planned == 5
    assert control.round == 0 and control.finished is False
    control.before_round(1, timeout_s=0)  # no wait, no stop: returns


def test_a_run_waiting_for_start_says_so_and_start_reports_the_change() -> None:
    control = RunControl(rounds_planned=3, started=False)
    assert control.state == "waiting_for_start"
    assert control.start() is True
    assert control.state == "running"
    assert control.start() is False  # already started
    control.before_round(1, timeout_s=0)


def test_start_on_a_run_started_at_once_changes_nothing() -> None:
    assert RunControl(rounds_planned=1).start() is False


def test_nobody_starting_the_run_in_time_stops_it_with_the_wait_in_the_message() -> None:
    control = RunControl(rounds_planned=3, started=False)
    with pytest.raises(RunStopped) as info:
        control.before_round(1, timeout_s=0)
    assert str(info.value) == "no admin started the run within 0 s"
    assert control.state == "waiting_for_start"  # a timeout is not a stop


def test_a_stop_lands_before_the_next_round_and_names_the_reason() -> None:
    control = RunControl(rounds_planned=10)
    control.before_round(1, timeout_s=0)
    control.committed(1)
    assert control.stop("alice: wrong learning rate") is True
    assert control.state == "stopping"
    with pytest.raises(RunStopped) as info:
        control.before_round(2, timeout_s=0)
    assert str(info.value) == "stopped before round 2 by an admin: alice: wrong learning rate"
    assert control.round == 1  # the committed round stays as it was


def test_the_first_stop_reason_is_kept_and_a_second_stop_reports_no_change() -> None:
    control = RunControl(rounds_planned=10)
    assert control.stop("first") is True
    assert control.stop("second") is False
    with pytest.raises(RunStopped, match=r"by an admin: first$"):
        control.before_round(4, timeout_s=0)


def test_a_stop_before_the_start_releases_the_wait_for_the_start() -> None:
    """With ``timeout_s=0`` a still-unset start event would say "no admin started": the
    stop's reason in the message shows that the stop itself ended the wait."""
    control = RunControl(rounds_planned=3, started=False)
    assert control.stop("cancelled by bob") is True
    assert control.state == "stopping"
    with pytest.raises(RunStopped, match=r"^stopped before round 1 by an admin: cancelled by bob$"):
        control.before_round(1, timeout_s=0)


def test_finished_is_the_last_state_whatever_came_before() -> None:
    control = RunControl(rounds_planned=2, started=False)
    control.stop("late")
    control.finished = True
    assert control.state == "finished"


def test_committed_records_the_last_round() -> None:
    control = RunControl(rounds_planned=3)
    for r in (1, 2, 3):
        control.committed(r)
    assert control.round == 3


def test_a_driver_waiting_for_the_start_goes_on_once_an_admin_starts_it() -> None:
    control = RunControl(rounds_planned=3, started=False)
    outcome: list[str] = []
    entered = threading.Event()

    def driver() -> None:
        entered.set()
        try:
            control.before_round(1, timeout_s=60)
            outcome.append("began")
        except RunStopped as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=driver, daemon=True)
    thread.start()
    assert entered.wait(30)
    assert control.start() is True
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert outcome == ["began"]


def test_of_many_concurrent_stops_exactly_one_is_the_stop() -> None:
    control = RunControl(rounds_planned=3)
    barrier = threading.Barrier(8)
    results: list[bool] = []
    lock = threading.Lock()

    def stopper(i: int) -> None:
        barrier.wait(timeout=30)
        got = control.stop(f"admin {i}")
        with lock:
            results.append(got)

    threads = [threading.Thread(target=stopper, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [False] * 7 + [True]
    with pytest.raises(RunStopped, match=r"by an admin: admin \d$"):
        control.before_round(1, timeout_s=0)
