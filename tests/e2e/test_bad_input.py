"""Hostile and broken updates against a real coordinator process, with honest sites beside.

A third "site" speaks the protocol by hand through the generated stub and
sends, one after another: garbage bytes, a forged token, NaN parameters,
non-finite metrics, wrong shapes, a replayed and a stale result, more bytes
than it declared, a message over the chunk limit, and finally vanishes. Every
one must be refused with the right status and a reason, and every round must
complete with the two honest sites.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import grpc
import numpy as np
import pytest
from procs import Procs, metrics, query

from fedops.coordinator.grpc_server import MAX_CHUNK_MESSAGE_BYTES
from fedops.core.params import specs_of, total_bytes
from fedops.v1 import fedops_pb2 as pb
from fedops.v1 import fedops_pb2_grpc as pb_grpc
from fedops.wire import PROTOCOL_VERSION, codec

pytestmark = pytest.mark.slow


class Mallory:
    """A hand-driven client that can send anything."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        )
        self.stub = pb_grpc.CoordinatorStub(self.channel)
        reply = self.stub.Register(
            pb.RegisterRequest(
                protocol_version=PROTOCOL_VERSION, site_name="mallory", num_train_examples=100
            ),
            timeout=30,
            wait_for_ready=True,
        )
        self.node_id, self.token, self.run_id = reply.node_id, reply.token, reply.run_id

    def pull(self, kind: int, timeout: float = 90) -> pb.Task:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.stub.PullTask(
                pb.PullTaskRequest(node_id=self.node_id, token=self.token, wait_ms=2000), timeout=20
            )
            if task.kind == kind:
                return task
            assert task.kind == pb.TASK_KIND_WAIT, task
        raise AssertionError(f"no task of kind {kind} within {timeout} s")

    def fetch(self, task: pb.Task) -> dict[str, np.ndarray]:
        stream = self.stub.FetchModel(
            pb.FetchModelRequest(node_id=self.node_id, token=self.token, task_id=task.task_id),
            timeout=30,
        )
        header = next(stream).header
        asm = codec.Assembler(codec.specs_from_proto(header.tensors), max_bytes=1 << 30)
        for chunk in stream:
            asm.add(chunk.data)
        return {k: v.copy() for k, v in asm.finish().items()}

    def header(self, task: pb.Task, params: dict[str, np.ndarray], **overrides) -> pb.ResultHeader:
        specs = specs_of(params)
        fields = dict(
            node_id=self.node_id,
            token=self.token,
            run_id=self.run_id,
            round=task.round,
            task_id=task.task_id,
            kind=task.kind,
            num_examples=100,
            metrics={"loss": 1.0, "accuracy": 0.5},
            tensors=codec.specs_to_proto(specs),
            total_bytes=total_bytes(specs),
        )
        fields.update(overrides)
        return pb.ResultHeader(**fields)

    def push(self, header: pb.ResultHeader, chunks: Iterable[bytes] = ()):
        def messages():
            yield pb.PushResultRequest(header=header)
            for chunk in chunks:
                yield pb.PushResultRequest(data=chunk)

        return self.refusal(lambda: self.stub.PushResult(messages(), timeout=30))

    @staticmethod
    def refusal(call) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as info:
            call()
        return info.value.code(), info.value.details()


def test_bad_updates_are_refused_with_reasons_and_rounds_go_on(procs: Procs, tmp_path: Path):
    run_dir = tmp_path / "run"
    coord, port = procs.coordinator(
        "coordinator",
        run_dir,
        task="digits",
        rounds=4,
        min_clients=3,
        round_timeout=60,
        liveness_timeout=5,
        join_timeout=60,
    )
    honest = [procs.client(f"site{i}", port, i, 2) for i in range(2)]
    m = Mallory(port)
    refusals: list[tuple[grpc.StatusCode, str]] = []

    # Round 1, fit: garbage bytes, a forged token, then NaN parameters.
    fit1 = m.pull(pb.TASK_KIND_FIT)
    params = m.fetch(fit1)
    raw = m.channel.stream_unary(
        "/fedops.v1.Coordinator/PushResult", response_deserializer=pb.PushResultResponse.FromString
    )
    refusals.append(m.refusal(lambda: raw(iter([b"\x0a\xff\xff\xff\xff\x0f"]), timeout=30)))
    refusals.append(m.push(m.header(fit1, params, token="forged")))
    nan = {k: v.copy() for k, v in params.items()}
    next(iter(nan.values())).flat[3] = np.nan
    refusals.append(m.push(m.header(fit1, nan), codec.iter_chunks(nan)))
    # Round 1, evaluate: non-finite metrics.
    ev1 = m.pull(pb.TASK_KIND_EVALUATE)
    refusals.append(m.push(m.header(ev1, {}, metrics={"loss": float("inf")})))

    # Round 2, fit: wrong shape. Evaluate: a replay, a stale task, then a payload it must not have.
    fit2 = m.pull(pb.TASK_KIND_FIT)
    params = m.fetch(fit2)
    name = next(iter(params))
    wrong = {**params, name: params[name][:-1]}
    refusals.append(m.push(m.header(fit2, wrong), codec.iter_chunks(wrong)))
    ev2 = m.pull(pb.TASK_KIND_EVALUATE)
    refusals.append(m.push(m.header(fit1, params), codec.iter_chunks(params)))
    refusals.append(m.push(m.header(ev2, {}, task_id="made-up", round=1)))
    refusals.append(m.push(m.header(ev2, params), codec.iter_chunks(params)))

    # Round 3, fit: more bytes than declared. Evaluate: one message over the chunk limit.
    fit3 = m.pull(pb.TASK_KIND_FIT)
    params = m.fetch(fit3)
    refusals.append(
        m.push(m.header(fit3, params), iter([*codec.iter_chunks(params), b"\0" * 1024]))
    )
    ev3 = m.pull(pb.TASK_KIND_EVALUATE)
    # past fedops' chunk limit, within gRPC's (which cuts a larger message before any handler)
    refusals.append(m.push(m.header(ev3, {}), iter([b"\0" * (MAX_CHUNK_MESSAGE_BYTES + 1024)])))
    # ...and then Mallory vanishes: round 4 must not wait for her.
    m.channel.close()

    assert procs.wait(coord, 120, "coordinator") == 0, procs.log("coordinator")
    for i, client in enumerate(honest):
        assert procs.wait(client, 30, f"site{i}") == 0

    expected = [
        (grpc.StatusCode.INVALID_ARGUMENT, "malformed PushResultRequest"),
        (grpc.StatusCode.UNAUTHENTICATED, "wrong token"),
        (grpc.StatusCode.INVALID_ARGUMENT, "non-finite values (NaN/Inf)"),
        (grpc.StatusCode.INVALID_ARGUMENT, "not finite"),
        (grpc.StatusCode.INVALID_ARGUMENT, f"tensor {name!r} has shape"),
        (grpc.StatusCode.ALREADY_EXISTS, "replayed result"),
        (grpc.StatusCode.FAILED_PRECONDITION, "stale result"),
        (grpc.StatusCode.INVALID_ARGUMENT, "carries no payload"),
        (grpc.StatusCode.INVALID_ARGUMENT, "exceeds its declared size"),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            f"exceeds the {MAX_CHUNK_MESSAGE_BYTES}-byte chunk limit",
        ),
    ]
    for (code, details), (want_code, want_text) in zip(refusals, expected, strict=True):
        assert code == want_code, (details, want_code)
        assert want_text in details, (details, want_text)

    rows = metrics(run_dir)
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    assert all(r["num_clients"] == 2 for r in rows), rows
    assert all(r["num_eval_clients"] == 2 for r in rows), rows
    assert rows[-1]["eval_accuracy"] > 0.8
    # The coordinator recorded everything it refused.
    reasons = [r for (r,) in query(run_dir, "SELECT reason FROM rejections")]
    for _, text in expected:
        assert any(text in r for r in reasons), (text, reasons)
    outcomes = query(
        run_dir,
        "SELECT round, phase, outcome FROM participants "
        "WHERE site = 'mallory' ORDER BY round, phase",
    )
    assert outcomes == [
        (1, "evaluate", "rejected"),
        (1, "fit", "rejected"),
        (2, "evaluate", "rejected"),
        (2, "fit", "rejected"),
        (3, "evaluate", "rejected"),
        (3, "fit", "rejected"),
        (4, "fit", "dropped"),  # she vanished; the round went on without her
    ]
