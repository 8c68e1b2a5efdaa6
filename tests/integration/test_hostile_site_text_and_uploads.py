"""An enrolled site's hostile text and uploads against a real coordinator on 127.0.0.1 (red
team 2026-12-07, F5 and F6), the site speaking through the protobuf stubs.

F5: a decline whose reason holds a newline, a forged log line and terminal escapes reached
the operator log raw, twice (the intake's line and the driver's). F6: an upload of empty
data messages cost the coordinator a CPU-minute before the rate check refused it, a flood
of one-byte messages was accepted, and an upload went on after its node was dropped.
Outcomes and reasons only, never timings: the reasons name the message that was refused.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
from procs import Procs, query

from fedops.coordinator.aio import LoopServer
from fedops.coordinator.grpc_server import SERVICE, build_server
from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.coordinator.result_intake import WITHDRAWN, most_messages
from fedops.core.params import specs_of, total_bytes
from fedops.core.rounds import NodeDropped, Phase
from fedops.runtime.audit.log_file import LOG_NAME
from fedops.runtime.transport import Instruction
from fedops.v1 import fedops_pb2 as pb
from fedops.v1 import fedops_pb2_grpc as pb_grpc
from fedops.wire import PROTOCOL_VERSION, codec, framing

pytestmark = pytest.mark.slow  # real gRPC servers or processes: the slow lane

Code = grpc.StatusCode
CALL_S = 30.0  # a call's deadline: generous, these are loopback calls
FORGED = "ok\n2026-12-07 23:59:59,000 INFO fedops.coordinator: FORGED-LINE\x1b[2K\r"


def _clean(text: str) -> bool:
    return not any(c in text for c in "\n\r\x1b")


def _raw(data: bytes) -> bytes:
    return data


def test_a_forged_decline_reason_forges_no_line_in_the_logs(procs: Procs, tmp_path: Path):
    run = tmp_path / "run"
    coord, port = procs.coordinator(
        "coordinator", run, task="digits", rounds=1, min_clients=1, round_timeout=30
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.CoordinatorStub(channel)
    try:
        me = stub.Register(
            pb.RegisterRequest(
                protocol_version=PROTOCOL_VERSION, site_name="mallory", num_train_examples=10
            ),
            timeout=CALL_S,
        )
        declined = 0
        for _ in range(200):  # every task it is given: the fit, then the evaluation
            poll = pb.PullTaskRequest(node_id=me.node_id, token=me.token, wait_ms=500)
            task = stub.PullTask(poll, timeout=CALL_S)
            if task.kind == pb.TASK_KIND_SHUTDOWN:
                break
            if task.kind == pb.TASK_KIND_WAIT:
                continue
            header = pb.ResultHeader(
                node_id=me.node_id, token=me.token, run_id=me.run_id, round=task.round,
                task_id=task.task_id, kind=task.kind, declined=FORGED,
            )  # fmt: skip
            reply = stub.PushResult(iter([pb.PushResultRequest(header=header)]), timeout=CALL_S)
            assert reply.message == "noted: task declined"
            declined += 1
        assert declined >= 1
    finally:
        channel.close()
    procs.wait(coord, 120, "coordinator")
    log = procs.log("coordinator")
    assert "FORGED-LINE" in log
    for line in log.splitlines():  # every line is the coordinator's own
        assert "\x1b" not in line and "\r" not in line, line
        assert not line.startswith("2026-12-07 23:59:59,000"), line
    # the intake's line and the driver's, each with the reason escaped
    assert sum("FORGED-LINE" in line and "\\n2026-12-07" in line for line in log.splitlines()) >= 2
    audited = [json.loads(line) for line in (run / LOG_NAME).read_text().splitlines()]
    reasons = [e["payload"]["reason"] for e in audited if e["event"] == "update_rejected"]
    assert reasons and all(_clean(r) and "FORGED-LINE" in r for r in reasons)
    stored = query(run, "SELECT reason FROM rejections WHERE code = 'DECLINED'")
    assert stored and all(_clean(r) for (r,) in stored)


# -- uploads ----------------------------------------------------------------------------------
PARAMS = {"w": np.zeros(64 * 1024 // 4, np.float32)}  # 64 KiB: at most 1 + slack messages


@dataclass
class Coordinator:
    """A coordinator's transport and server on loopback, as ``fedops coordinator`` builds them."""

    liveness_timeout_s: float = 3600.0
    refused: list[tuple[int, str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.transport = GrpcTransport(run_id="r1", liveness_timeout_s=self.liveness_timeout_s)
        self.transport.on_rejection = lambda *row: self.refused.append(row)
        self.server: LoopServer = build_server(self.transport, max_workers=4)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.CoordinatorStub(self.channel)

    def close(self) -> None:
        self.transport.close(grace_s=0)
        self.server.stop(grace=0).wait(5)
        self.channel.close()

    def site_with_a_fit_task(self) -> tuple[pb.RegisterResponse, bytes]:
        """An enrolled site given a fit task: its node and its upload's header message."""
        me = self.stub.Register(
            pb.RegisterRequest(protocol_version=PROTOCOL_VERSION, site_name="mallory"),
            timeout=CALL_S,
        )
        self.transport.dispatch(1, [me.node_id], Instruction(phase=Phase.FIT, params=PARAMS))
        poll = pb.PullTaskRequest(node_id=me.node_id, token=me.token, wait_ms=0)
        task = self.stub.PullTask(poll, timeout=CALL_S)
        assert task.kind == pb.TASK_KIND_FIT
        specs = specs_of(PARAMS)
        header = pb.ResultHeader(
            node_id=me.node_id, token=me.token, run_id="r1", round=1, task_id=task.task_id,
            kind=task.kind, num_examples=1, tensors=codec.specs_to_proto(specs),
            total_bytes=total_bytes(specs),
        )  # fmt: skip
        return me, pb.PushResultRequest(header=header).SerializeToString()

    def push(self, messages: Iterator[bytes]) -> grpc.RpcError:
        push = self.channel.stream_unary(
            f"/{SERVICE}/PushResult", request_serializer=_raw, response_deserializer=_raw
        )
        with pytest.raises(grpc.RpcError) as refused:
            push(messages, timeout=CALL_S)
        return refused.value


@pytest.fixture
def coordinator() -> Iterator[Coordinator]:
    coord = Coordinator()
    try:
        yield coord
    finally:
        coord.close()


def test_an_upload_of_empty_messages_is_refused_at_its_first(coordinator: Coordinator):
    """Before: 877,000 empty messages in a minute, all read, until the rate check's grace."""
    _, header = coordinator.site_with_a_fit_task()
    sent = [0]

    def empties() -> Iterator[bytes]:
        yield header
        for _ in range(200_000):
            sent[0] += 1
            yield framing.frame_data(b"")

    error = coordinator.push(empties())
    assert error.code() == Code.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "payload message 1 of the upload is empty" in error.details()  # type: ignore[attr-defined]
    assert sent[0] < 200_000  # the stream was cut, not run to its end
    assert coordinator.refused[-1][2] == "INVALID_ARGUMENT"


def test_a_flood_of_one_byte_messages_is_cut_at_its_message_budget(coordinator: Coordinator):
    """Before: 65,536 one-byte messages made a 64 KiB update, and it was accepted."""
    _, header = coordinator.site_with_a_fit_task()
    size = total_bytes(specs_of(PARAMS))
    sent = [0]

    def bytes_one_by_one() -> Iterator[bytes]:
        yield header
        for _ in range(size):
            sent[0] += 1
            yield framing.frame_data(b"\0")

    error = coordinator.push(bytes_one_by_one())
    assert error.code() == Code.INVALID_ARGUMENT  # type: ignore[attr-defined]
    most = most_messages(size)
    assert f"more than {most} payload messages for {size} bytes" in error.details()  # type: ignore[attr-defined]
    assert sent[0] < size


def test_the_upload_of_a_dropped_node_is_refused_at_its_next_message(tmp_path: Path):
    """Before: the upload went on after its node was dropped and its task withdrawn."""
    coord = Coordinator(liveness_timeout_s=1.0)
    go, release = threading.Event(), threading.Event()
    try:
        me, header = coord.site_with_a_fit_task()

        def upload() -> Iterator[bytes]:
            yield header
            yield framing.frame_data(b"\0" * 1024)
            go.wait(CALL_S)  # until its node is dropped
            yield framing.frame_data(b"\0" * 1024)
            release.wait(CALL_S)  # and sends nothing more until the test ends

        outcome: list[grpc.RpcError] = []
        caller = threading.Thread(target=lambda: outcome.append(coord.push(upload())))
        caller.start()
        dropped = False
        for _ in range(200):  # the driver's loop: silent nodes are dropped as it waits
            event = coord.transport.next_event(0.1)
            if isinstance(event, NodeDropped) and event.node_id == me.node_id:
                dropped = True
                break
        assert dropped, "the silent node was never dropped"
        go.set()
        caller.join(CALL_S)
        (error,) = outcome
        assert error.code() == Code.FAILED_PRECONDITION  # type: ignore[attr-defined]
        assert error.details() == WITHDRAWN  # type: ignore[attr-defined]
    finally:
        go.set()
        release.set()
        coord.close()
