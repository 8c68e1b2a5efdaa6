"""A site's text in the coordinator's records, and uploads that cost CPU for nothing (red team
2026-12-07, F5 and F6), without a network.

F5: a decline's reason, and a refused call's node id, reached the operator log raw: a newline
and a terminal escape forged a log line (twice: the intake's line and the driver's). F6: an
upload of empty data messages cost the coordinator a CPU-minute before its rate check
refused it, and went on after its node was dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.coordinator.result_intake import (
    MESSAGE_SLACK,
    MIN_MESSAGE_BYTES,
    WITHDRAWN,
    Reject,
    _Withdrawn,
    _within,
    most_messages,
)
from fedops.core.params import InvalidUpdate, specs_of, total_bytes
from fedops.core.rounds import Phase, ResultRejected
from fedops.runtime.transport import Instruction
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import PROTOCOL_VERSION, codec

FORGED = "ok\n2026-12-07 23:59:59,000 INFO fedops.coordinator: FORGED-LINE\x1b[2K\r"
PARAMS = {"w": np.zeros(4096, np.float32)}  # 16 KiB


def _clean(text: str) -> bool:
    return "\n" not in text and "\r" not in text and "\x1b" not in text


class Site:
    """A transport with one node given a fit task, and what the transport recorded."""

    def __init__(self) -> None:
        self.rejections: list[tuple[int, str, str, str]] = []
        self.audit: list[tuple[str, dict[str, object]]] = []
        self.transport = GrpcTransport(
            run_id="r1", audit=lambda event, payload: self.audit.append((event, dict(payload)))
        )
        self.transport.on_rejection = lambda *row: self.rejections.append(row)
        self.node = self.register()
        self.transport.dispatch(1, [self.node.node_id], Instruction(phase=Phase.FIT, params=PARAMS))
        task = self.transport.poll(
            pb.PullTaskRequest(node_id=self.node.node_id, token=self.node.token)
        )
        assert task is not None
        self.task = task

    def register(self) -> pb.RegisterResponse:
        return self.transport.register(
            pb.RegisterRequest(protocol_version=PROTOCOL_VERSION, site_name="mallory")
        )

    def header(self, **fields: object) -> pb.ResultHeader:
        specs = specs_of(PARAMS)
        header = pb.ResultHeader(
            node_id=self.node.node_id, token=self.node.token, run_id="r1", round=1,
            task_id=self.task.task_id, kind=self.task.kind, num_examples=1,
            tensors=codec.specs_to_proto(specs), total_bytes=total_bytes(specs),
        )  # fmt: skip
        for key, value in fields.items():
            setattr(header, key, value)
        return header

    def events(self) -> list[object]:
        out = []
        while (event := self.transport.next_event(0)) is not None:
            out.append(event)
        return out


def test_a_declined_reason_forges_no_log_line(caplog: pytest.LogCaptureFixture):
    site = Site()
    with caplog.at_level(logging.INFO, logger="fedops"):
        reply = site.transport.push(site.header(declined=FORGED), iter(()))
    assert not reply.accepted
    (event,) = site.events()
    assert isinstance(event, ResultRejected) and _clean(event.reason)  # the driver logs it
    assert "FORGED-LINE" in event.reason and "\\n2026-12-07" in event.reason
    ((_, node, code, reason),) = site.rejections  # the store's row and the audit entry
    assert (node, code) == (site.node.node_id, "DECLINED") and reason == event.reason
    logged = [r.getMessage() for r in caplog.records if "FORGED" in r.getMessage()]
    assert logged and all(_clean(line) for line in logged)


def test_an_honest_decline_reads_as_it_was_sent():
    site = Site()
    site.transport.push(site.header(declined="consent is withdrawn"), iter(()))
    (event,) = site.events()
    assert isinstance(event, ResultRejected)
    assert event.reason == "the client declined the task: consent is withdrawn"


def test_a_refused_node_id_forges_no_log_line(caplog: pytest.LogCaptureFixture):
    site = Site()
    with caplog.at_level(logging.INFO, logger="fedops"), pytest.raises(Reject) as refused:
        site.transport.push(site.header(node_id="n\nFORGED\x1b[2K"), iter(()))
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    ((_, node, _, reason),) = site.rejections
    assert _clean(node) and _clean(reason) and "FORGED" in node
    logged = [r.getMessage() for r in caplog.records if "FORGED" in r.getMessage()]
    assert logged and all(_clean(line) for line in logged)


# -- the pace of an upload ------------------------------------------------------------------
def test_an_empty_payload_message_is_refused_at_the_next():
    read = []

    def empties() -> Iterator[bytes]:
        for i in range(100_000):
            read.append(i)
            yield b""

    with pytest.raises(InvalidUpdate, match="payload message 1 of the upload is empty"):
        list(_within(empties(), budget_s=3600.0, declared=1 << 20))
    assert len(read) == 2


def test_an_empty_last_message_leaves_the_payload_short_not_refused_here():
    """The payload's own check then says what is wrong ("payload truncated", or "carries no
    payload" for an evaluation): nothing was flooded."""
    assert list(_within(iter([b"ab", b""]), budget_s=60.0, declared=4)) == [b"ab", b""]
    assert list(_within(iter([b""]), budget_s=60.0, declared=4)) == [b""]


def test_a_flood_of_tiny_messages_is_cut_at_its_message_budget():
    declared = 4 * MIN_MESSAGE_BYTES
    most = most_messages(declared)
    assert most == 4 + MESSAGE_SLACK
    read = []

    def bytes_one_by_one() -> Iterator[bytes]:
        for i in range(declared):
            read.append(i)
            yield b"x"

    with pytest.raises(InvalidUpdate, match=f"more than {most} payload messages for {declared}"):
        list(_within(bytes_one_by_one(), budget_s=3600.0, declared=declared))
    assert len(read) == most + 1


@pytest.mark.parametrize("chunk", [codec.DEFAULT_CHUNK_BYTES, MIN_MESSAGE_BYTES, 1])
def test_an_honest_chunking_is_within_the_budget(chunk: int):
    """An agent's 2 MiB chunks, a 64 KiB one, and a small payload cut anyhow (the fuzz
    suite's control cuts 112 bytes into up to nine pieces)."""
    for declared in (1, 112, 1000, 5 << 20, 300 << 20):
        if chunk == 1 and declared > MESSAGE_SLACK:
            continue
        assert -(-declared // chunk) <= most_messages(declared)
    payload = [b"x" * 5] * 9  # nine pieces
    assert list(_within(iter(payload), budget_s=60.0, declared=45)) == payload


def test_an_upload_whose_task_is_withdrawn_is_stopped_at_its_next_message():
    wanted = [True]
    read = []

    def chunks() -> Iterator[bytes]:
        for i in range(1000):
            read.append(i)
            if i == 2:
                wanted[0] = False  # the node was dropped while it sent
            yield b"x" * 16

    with pytest.raises(_Withdrawn):
        list(_within(chunks(), budget_s=60.0, declared=16_000, wanted=lambda: wanted[0]))
    assert len(read) == 3


def test_a_node_replaced_mid_upload_is_refused_without_reading_the_rest():
    site = Site()
    payload = b"".join(codec.iter_chunks(PARAMS, 1024))
    sent = []
    replaced = threading.Event()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(payload), 1024):
            sent.append(i)
            if len(sent) == 2:
                site.register()  # the site registers again: its old node's task is gone
                replaced.set()
            yield payload[i : i + 1024]

    with pytest.raises(Reject) as refused:
        site.transport.push(site.header(), chunks())
    assert replaced.is_set()
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.reason == WITHDRAWN
    assert len(sent) == 2  # refused at the message it was replaced in, not at the end (16)
    assert [e for e in site.events() if isinstance(e, ResultRejected)] == []
