"""Parked long-polls: woken exactly for their node, never lost, never holding a thread."""

from __future__ import annotations

import asyncio
import threading
import time

from fedops.coordinator.aio import ParkedPolls


def _run(coroutine):
    return asyncio.run(coroutine)


def test_a_poll_with_nothing_to_take_answers_none_when_its_time_is_up():
    async def main():
        parked = ParkedPolls(asyncio.get_running_loop())
        return await parked.wait("n1", 0.05, lambda: None)

    assert _run(main()) is None


def test_a_wake_from_another_thread_answers_the_parked_poll_at_once():
    board: dict[str, str] = {}

    async def main():
        parked = ParkedPolls(asyncio.get_running_loop())

        def post():
            time.sleep(0.2)
            board["n1"] = "task-1"
            parked.wake(["n1"])

        threading.Thread(target=post).start()
        started = time.monotonic()
        answer = await parked.wait("n1", 60.0, lambda: board.get("n1"))
        return answer, time.monotonic() - started

    answer, elapsed = _run(main())
    assert answer == "task-1"
    assert elapsed < 30  # woken, not timed out (the timeout is 60 s)


def test_waking_other_nodes_does_not_answer_or_re_ask_this_poll():
    asked = {"n1": 0}

    def ready():
        asked["n1"] += 1
        return None

    async def main():
        parked = ParkedPolls(asyncio.get_running_loop())
        poll = asyncio.create_task(parked.wait("n1", 0.5, ready))
        await asyncio.sleep(0.05)
        for _ in range(20):
            parked.wake(["n2", "n3"])
        await asyncio.sleep(0.05)
        before_timeout = asked["n1"]
        return before_timeout, await poll

    before_timeout, answer = _run(main())
    assert before_timeout == 1  # asked once when parked; wakes for others did not re-ask
    assert answer is None


def test_a_task_posted_while_the_poll_is_being_asked_is_not_lost():
    """The race a condition variable guards: posted after the check, before the wait."""
    board: dict[str, str] = {}
    posted = threading.Event()

    async def main():
        parked = ParkedPolls(asyncio.get_running_loop())

        def ready():
            if not posted.is_set():  # the post lands between this check and the wait
                board["n1"] = "task-1"
                parked.wake(["n1"])
                posted.set()
                return None
            return board.get("n1")

        started = time.monotonic()
        answer = await parked.wait("n1", 60.0, ready)
        return answer, time.monotonic() - started

    answer, elapsed = _run(main())
    assert answer == "task-1" and elapsed < 30


def test_one_post_to_a_thousand_parked_polls_wakes_each_once():
    nodes = [f"n{i}" for i in range(1000)]
    board: dict[str, str] = {}
    asked = dict.fromkeys(nodes, 0)

    async def main():
        parked = ParkedPolls(asyncio.get_running_loop())

        def ready(node):
            asked[node] += 1
            return board.get(node)

        polls = [asyncio.create_task(parked.wait(n, 60.0, lambda n=n: ready(n))) for n in nodes]
        await asyncio.sleep(0.1)
        threads_while_parked = threading.active_count()
        board.update({n: f"task-{n}" for n in nodes})
        parked.wake(None)  # everyone (as at shutdown)
        return await asyncio.wait_for(asyncio.gather(*polls), 30), threads_while_parked

    answers, threads_while_parked = _run(main())
    assert answers == [f"task-{n}" for n in nodes]
    assert set(asked.values()) == {2}  # asked when parked, and once more when woken
    assert threads_while_parked < 100  # a thousand parked polls hold no threads
