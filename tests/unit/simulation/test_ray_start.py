"""Starting a local Ray instance: a failed start-up is cleaned up and tried once more, and
a second failure is one clear error (no Ray cluster is started here: a stand-in ``ray``)."""

from __future__ import annotations

import logging
import os
from typing import Any, ClassVar

import pytest

from fedops.simulation.ray_backend import (
    ACTORS_SAID_S,
    ACTORS_UP_S,
    SLOW_START,
    START_TRIES,
    RayStartError,
    _stop_failed_node,
    await_actors,
    start_local_ray,
)

TIMED_OUT = "The current node timed out during startup. This could happen because ..."


class FakeRay:
    """``ray.init`` failing its first ``failures`` calls as Ray's start-up timeout does."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[str] = []

    def init(self, **kwargs: Any) -> None:
        self.calls.append(f"init num_cpus={kwargs['num_cpus']}")
        if self.failures:
            self.failures -= 1
            raise Exception(TIMED_OUT)  # what Ray 2.x raises: a bare Exception

    def shutdown(self) -> None:
        self.calls.append("shutdown")


@pytest.fixture(autouse=True)
def _own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SLOW_START:  # start_local_ray sets them; monkeypatch puts them back
        monkeypatch.delenv(name, raising=False)


def test_a_start_up_timeout_is_tried_once_more(caplog: pytest.LogCaptureFixture) -> None:
    ray = FakeRay(failures=1)
    with caplog.at_level(logging.WARNING, logger="fedops.simulate"):
        start_local_ray(ray, 3)
    assert ray.calls == ["init num_cpus=3", "shutdown", "init num_cpus=3"]
    assert "did not start (Exception: The current node timed out" in caplog.text


def test_the_last_failure_is_one_clear_error() -> None:
    ray = FakeRay(failures=START_TRIES)
    with pytest.raises(RayStartError, match="did not start in 2 tries") as raised:
        start_local_ray(ray, 2)
    message = str(raised.value)
    assert "\n" not in message and "timed out during startup" in message
    assert "simulation.backend=process" in message
    assert ray.calls.count("shutdown") == START_TRIES
    assert isinstance(raised.value.__cause__, Exception)  # Ray's own error, for error.log


def test_start_up_deadlines_are_raised_unless_the_user_set_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    own = "RAY_worker_register_timeout_seconds"
    monkeypatch.setenv(own, "300")
    start_local_ray(FakeRay(failures=0), 1)
    assert {name: os.environ[name] for name in SLOW_START} == {**SLOW_START, own: "300"}
    assert set(SLOW_START.values()) == {"120"}


def test_a_failed_nodes_processes_are_stopped() -> None:
    node: Any = pytest.importorskip("ray._private.node", reason="Ray is not installed").Node

    class FailingNode(node):  # type: ignore[misc]
        """A node whose start-up fails after it started processes (as Ray's does)."""

        stopped: ClassVar[list[dict[str, bool]]] = []

        def __init__(self) -> None:
            raise Exception(TIMED_OUT)

        def kill_all_processes(self, **how: bool) -> None:
            FailingNode.stopped.append(how)

    with pytest.raises(Exception, match="timed out during startup") as raised:
        FailingNode()
    _stop_failed_node(raised.value.__traceback__)
    assert FailingNode.stopped == [{"check_alive": False, "allow_graceful": False, "wait": True}]
    _stop_failed_node(None)  # no traceback: nothing to stop, no error


class SlowActors:
    """``ray.wait`` over actors' first calls: the next ``ready_per_call`` of them are up."""

    def __init__(self, ready_per_call: list[int]) -> None:
        self.ready_per_call = ready_per_call
        self.timeouts: list[float] = []

    def wait(self, refs: list[Any], *, num_returns: int, timeout: float) -> tuple[list, list]:
        assert num_returns == len(refs)
        self.timeouts.append(timeout)
        ready = self.ready_per_call.pop(0)
        return refs[:ready], refs[ready:]


@pytest.mark.parametrize(
    ("ready_per_call", "said", "warned"),
    [([3], False, False), ([1, 2], True, False), ([1, 1], True, True)],
)
def test_a_run_says_when_it_waits_for_its_actors_and_when_it_gives_up(
    caplog: pytest.LogCaptureFixture, ready_per_call: list[int], said: bool, warned: bool
) -> None:
    ray = SlowActors(ready_per_call)
    with caplog.at_level(logging.INFO, logger="fedops.simulate"):
        await_actors(ray, ["a", "b", "c"])
    assert ray.timeouts == [ACTORS_SAID_S, ACTORS_UP_S - ACTORS_SAID_S][: len(ray.timeouts)]
    assert ("waiting for 2 of 3 Ray actor(s) to start" in caplog.text) is said
    assert ("1 of 3 Ray actor(s) not started after 180 s" in caplog.text) is warned
