"""The upload's payload, read on the event loop for the intake's pool thread.

:func:`fedops.coordinator.upload._payload` is what ``transport.push`` iterates:
the chunks come in order, a stream that stalls or is cut off is refused, and
however the intake stops reading, nothing is left reading on the loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from fedops.coordinator.upload import _payload
from fedops.core.params import InvalidUpdate

WAIT_S = 10.0  # generous bound for anything that should take milliseconds


@pytest.fixture()
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT_S)
        loop.close()


class _Stream:
    """An upload's messages as gRPC's request iterator gives them, counting what was read."""

    def __init__(self, messages: list[Any], *, then: BaseException | None = None) -> None:
        self.messages = messages
        self.then = then  # raised once the messages are read (None: the stream ends)
        self.read = 0
        self.hold = threading.Event()  # set: the stream waits here after its messages
        self.closed = threading.Event()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[Any]:
        try:
            for message in self.messages:
                self.read += 1
                yield message
            if self.then is not None:
                raise self.then
            if self.hold.is_set():
                await asyncio.sleep(3600)
        finally:
            self.closed.set()


def _chunks(
    loop: asyncio.AbstractEventLoop, stream: _Stream, idle_s: float = WAIT_S
) -> Iterator[Any]:
    return _payload(loop, aiter(stream), lambda m: m, idle_s)


def _tasks_left(loop: asyncio.AbstractEventLoop) -> int:
    """Tasks on the loop besides the one asking (a read still running, were one left)."""

    async def others() -> int:
        return len(asyncio.all_tasks() - {asyncio.current_task()})

    return asyncio.run_coroutine_threadsafe(others(), loop).result(WAIT_S)


def _until(condition: Any) -> bool:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_every_chunk_arrives_in_order_and_the_stream_ends(loop):
    messages = [bytes([i]) * (i + 1) for i in range(20)]
    assert list(_chunks(loop, _Stream(messages))) == messages
    assert _until(lambda: _tasks_left(loop) == 0)


def test_a_stream_that_sends_nothing_more_is_refused_after_the_idle_limit(loop):
    stream = _Stream([b"a"])
    stream.hold.set()
    chunks = _chunks(loop, stream, idle_s=0.2)
    assert next(chunks) == b"a"
    with pytest.raises(InvalidUpdate, match=r"the upload sent nothing for 0\.2 s"):
        next(chunks)
    assert _until(stream.closed.is_set)  # the read waiting on the stream was cancelled
    assert _until(lambda: _tasks_left(loop) == 0)


class _Cut(grpc.RpcError):
    def __str__(self) -> str:
        return "peer went away"


def test_a_stream_cut_off_by_grpc_is_refused_as_cut_off_after_its_chunks(loop):
    chunks = _chunks(loop, _Stream([b"a", b"b"], then=_Cut()))
    assert next(chunks) == b"a"
    assert next(chunks) == b"b"
    with pytest.raises(InvalidUpdate, match=r"cut off before its end \(peer went away\)"):
        next(chunks)
    assert _until(lambda: _tasks_left(loop) == 0)


def test_an_unexpected_error_of_the_reader_reaches_the_intake(loop):
    chunks = _chunks(loop, _Stream([b"a"], then=ValueError("odd")))
    assert next(chunks) == b"a"
    with pytest.raises(ValueError, match="odd"):
        next(chunks)


def test_an_intake_that_stops_reading_leaves_nothing_reading_on_the_loop(loop):
    stream = _Stream([b"x"] * 1000)
    chunks = _chunks(loop, stream)
    assert next(chunks) == b"x"  # e.g. the first chunk already broke a check
    chunks.close()
    assert _until(lambda: _tasks_left(loop) == 0)
    read = stream.read
    time.sleep(0.2)
    assert stream.read == read  # nothing more is read (or held)


def test_unpack_refusals_happen_on_the_intakes_thread_in_order(loop):
    def unpack(message: Any) -> Any:
        if message == b"bad":
            raise InvalidUpdate("a second header arrived inside the payload")
        return message

    chunks = _payload(loop, aiter(_Stream([b"a", b"bad", b"c"])), unpack, WAIT_S)
    assert next(chunks) == b"a"
    with pytest.raises(InvalidUpdate, match="second header"):
        next(chunks)
