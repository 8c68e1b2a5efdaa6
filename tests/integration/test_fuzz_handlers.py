"""Hostile input against the coordinator's real gRPC handlers, with two honest nodes beside.

A real server (``build_server`` + ``GrpcTransport`` on 127.0.0.1) is driven
like the round driver drives it: two honest nodes register, and tests
dispatch FIT and EVALUATE tasks (with a monitoring request) to them directly.
Then hypothesis sends arbitrary and mutated bytes to every RPC, and
structured mutations of honest ``PushResult`` streams: forged and borrowed
credentials, stale and foreign task ids, out-of-range counts, non-finite
metrics, wrong tensor specs, inconsistent declared sizes, cut and padded
payloads, second headers, oversized chunks, tampered monitoring reports,
replays. For every call:

* the answer is a gRPC status of the expected family with a non-empty reason
  (never UNKNOWN/INTERNAL, never a hang: every call has a deadline);
* a refusal that answers the node's current task closes it (one
  ``ResultRejected`` event), any other refusal leaves it open, and no hostile
  call ever produces a ``ResultArrived``;
* the audit chain gains only ``update_rejected`` entries (the rejection,
  recorded as the coordinator app records it), and still verifies;
* an honest call afterwards still works, and the dispatched model and the
  stored checkpoint are untouched.

The bugs this fuzzing found (now fixed) keep their tests at the end of the file.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from fedops.coordinator.grpc_server import MAX_CHUNK_MESSAGE_BYTES, SERVICE, build_server
from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.core.monitoring.drift import drift_report
from fedops.core.monitoring.profile import MonitorSpec, SiteReport, Window, input_edges, site_report
from fedops.core.params import (
    ALLOWED_DTYPES,
    InvalidUpdate,
    Params,
    TensorSpec,
    digest,
    specs_of,
    total_bytes,
)
from fedops.core.results import MAX_NUM_EXAMPLES, EvaluateResult, FitResult, StageResult
from fedops.core.rounds import Event, Phase, ResultArrived, ResultRejected
from fedops.core.secagg.messages import (
    ConsistencyRequest,
    MaskedInput,
    MaskRequest,
    SurvivorSignature,
)
from fedops.core.secagg.quantize import Quantizer
from fedops.core.secagg.update import Encoding
from fedops.reporting.audit.compliance import verify_log_file
from fedops.runtime.records import RecordSettings, RunRecords
from fedops.runtime.transport import Instruction, StageRequest
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import PROTOCOL_VERSION, codec, framing, monitoring
from fedops.wire.secagg import MASKED_TENSOR

pytestmark = pytest.mark.slow  # real gRPC servers or processes: the slow lane

#: every call's deadline: a handler that hangs fails the test instead of stalling it
TIMEOUT_S = 15.0
Code = grpc.StatusCode
#: statuses that mean the server broke, not that it refused
BROKEN = {Code.UNKNOWN, Code.INTERNAL, Code.DEADLINE_EXCEEDED, Code.UNAVAILABLE, Code.CANCELLED}
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)

# -- the model, the monitoring request and a real report -------------------------------------
PARAMS: Params = {
    "dense.weight": np.arange(12, dtype=np.float32).reshape(4, 3) / 10,
    "dense.bias": np.linspace(-1, 1, 4, dtype=np.float32),
    "scale": np.array(0.5, dtype=np.float64),
    "counts": np.arange(5, dtype=np.int64),
}
PARAMS_DIGEST = digest(PARAMS)
TRAINED: Params = {
    k: np.asarray(v + 0.25 if v.dtype.kind == "f" else v, dtype=v.dtype).copy()
    for k, v in PARAMS.items()
}
TRAINED_DIGEST = digest(TRAINED)
SPECS = specs_of(PARAMS)
SPEC = MonitorSpec(
    edges=input_edges(np.random.default_rng(99).normal(size=(300, 3)), bins=6),
    num_classes=2,
    positive_label=1,
)


def _probs(x: np.ndarray) -> np.ndarray:
    logits = np.stack([np.zeros(len(x)), x[:, 0] - 0.5 * x[:, 1]], axis=1).astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _window(seed: int, n: int, shift: float = 0.0, groups: bool = False) -> Window:
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, 3)) + np.array([0.0, 0.0, shift])).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-x[:, 0]))).astype(np.int64)
    return Window(x=x, y=y, groups=rng.integers(0, 3, n) if groups else None)


REPORT: SiteReport = site_report(
    SPEC,
    _probs,
    reference=_window(1, 200),
    current=_window(2, 150, shift=1.5),
    test=_window(3, 100, groups=True),
)
REPORT_BYTES = monitoring.report_to_proto(REPORT).SerializeToString()


def _report_proto() -> pb.SiteReport:
    return pb.SiteReport.FromString(REPORT_BYTES)


def _raw(data: bytes) -> bytes:
    return data


@dataclass(frozen=True)
class Node:
    node_id: str
    token: str


@dataclass(frozen=True)
class Reply:
    code: grpc.StatusCode
    details: str
    body: Any = None


@dataclass(frozen=True)
class Expect:
    """What a hostile push must get: a status, a piece of its reason, and whether it
    answers (and so closes) the node's current task."""

    code: grpc.StatusCode
    text: str
    closes: bool


@dataclass(repr=False)
class Harness:
    """A coordinator serving on loopback, driven by hand like the round driver drives it."""

    root: Path
    run_id: str = ""
    rejections: list[tuple[int, str, str, str]] = field(default_factory=list)
    round: int = 0
    flooding: bool = False
    recorded: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.run_dir = self.root / "run"
        self.records = RunRecords.open(  # as fedops.coordinator.app opens them
            RecordSettings(run_dir=self.run_dir, config={"test": "fuzz-handlers"}, fsync=False)
        )
        self.run_id, self.store, self.audit = (
            self.records.run_id,
            self.records.store,
            self.records.audit,
        )
        self.store.save_round(0, PARAMS, {})

        def on_rejection(server_round: int, node: str, code: str, reason: str) -> None:
            # as fedops.coordinator.app wires it: the run store and the audit trail
            self.records.write_rejection(server_round, node, code, reason)
            with self.recorded:
                self.rejections.append((server_round, node, code, reason))
                self.recorded.notify_all()

        self.transport = GrpcTransport(
            run_id=self.run_id,
            heartbeat_interval_s=1.0,
            liveness_timeout_s=3600.0,  # hypothesis runs long; nobody is dropped for silence
            on_rejection=on_rejection,
            audit=self.audit.record,
        )
        self.server = build_server(self.transport, max_workers=16)
        port = self.server.add_insecure_port("127.0.0.1:0")  # the kernel's pick, at bind time
        assert port != 0
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._unary = {
            m: self.channel.unary_unary(
                f"/{SERVICE}/{m}", request_serializer=_raw, response_deserializer=_raw
            )
            for m in ("Register", "PullTask", "Heartbeat")
        }
        self._fetch = self.channel.unary_stream(
            f"/{SERVICE}/FetchModel", request_serializer=_raw, response_deserializer=_raw
        )
        self._push = self.channel.stream_unary(
            f"/{SERVICE}/PushResult", request_serializer=_raw, response_deserializer=_raw
        )
        self.nodes = [self.register(f"honest-{i}") for i in range(2)]
        self._audit_offset = 0

    def wait_rejections(self, count: int) -> None:
        """Until ``count`` rejections are recorded (a task is closed just before its
        refusal is written down)."""
        with self.recorded:
            done = self.recorded.wait_for(lambda: len(self.rejections) >= count, TIMEOUT_S)
        assert done, f"{len(self.rejections)} rejections recorded, expected {count}"

    def close(self) -> None:
        self.transport.close(grace_s=0)
        self.server.stop(grace=0).wait(5)
        self.channel.close()
        self.audit.close()
        self.store.close()

    # -- raw calls (bytes in, bytes out: invalid protobuf reaches the server) ----------------
    def call(self, method: str, request: bytes) -> Reply:
        try:
            return Reply(Code.OK, "", self._unary[method](request, timeout=TIMEOUT_S))
        except grpc.RpcError as exc:
            return Reply(exc.code(), exc.details() or "")

    def fetch(self, request: bytes) -> Reply:
        try:
            return Reply(Code.OK, "", list(self._fetch(request, timeout=TIMEOUT_S)))
        except grpc.RpcError as exc:
            return Reply(exc.code(), exc.details() or "")

    def push(self, messages: Iterable[bytes]) -> Reply:
        try:
            body = self._push(iter(list(messages)), timeout=TIMEOUT_S)
            return Reply(Code.OK, "", pb.PushResultResponse.FromString(body))
        except grpc.RpcError as exc:
            return Reply(exc.code(), exc.details() or "")

    # -- an honest node's calls ----------------------------------------------------------------
    def register(self, site: str) -> Node:
        request = pb.RegisterRequest(
            protocol_version=PROTOCOL_VERSION, site_name=site, num_train_examples=100
        )
        reply = self.call("Register", request.SerializeToString())
        assert reply.code == Code.OK, reply
        response = pb.RegisterResponse.FromString(reply.body)
        return Node(response.node_id, response.token)

    def pull(self, node: Node, wait_ms: int = 2000) -> pb.Task:
        request = pb.PullTaskRequest(node_id=node.node_id, token=node.token, wait_ms=wait_ms)
        reply = self.call("PullTask", request.SerializeToString())
        assert reply.code == Code.OK, reply
        return pb.Task.FromString(reply.body)

    def download(self, node: Node, task: pb.Task) -> Params:
        request = pb.FetchModelRequest(node_id=node.node_id, token=node.token, task_id=task.task_id)
        reply = self.fetch(request.SerializeToString())
        assert reply.code == Code.OK, reply
        chunks = [pb.ModelChunk.FromString(m) for m in reply.body]
        header = chunks[0].header
        assert header.model_digest == task.model_digest
        asm = codec.Assembler(codec.specs_from_proto(header.tensors), max_bytes=1 << 20)
        for chunk in chunks[1:]:
            asm.add(chunk.data)
        return {k: v.copy() for k, v in asm.finish().items()}

    # -- the driver's side -----------------------------------------------------------------------
    def dispatch(
        self, phase: Phase, nodes: Sequence[Node] | None = None, **kwargs: Any
    ) -> dict[str, pb.Task]:
        """A new round's tasks, dispatched and pulled by each node (as an agent would)."""
        nodes = list(self.nodes if nodes is None else nodes)
        self.round += 1
        if phase is Phase.EVALUATE:
            kwargs.setdefault("monitor", SPEC)
        instruction = Instruction(phase=phase, params=PARAMS, config={"lr": 0.1}, **kwargs)
        ids = self.transport.dispatch(self.round, [n.node_id for n in nodes], instruction)
        tasks = {}
        for node in nodes:
            task = self.pull(node)
            assert task.task_id == ids[node.node_id], (task, ids)
            tasks[node.node_id] = task
        return tasks

    def events(self) -> list[Event]:
        out = []
        while (event := self.transport.next_event(0)) is not None:
            out.append(event)
        return out

    def new_audit(self) -> list[dict[str, Any]]:
        """Audit entries written since the last call (less the flood's, while one runs)."""
        data = (self.run_dir / "audit.jsonl").read_bytes()
        new, self._audit_offset = data[self._audit_offset :], len(data)
        entries = [json.loads(line) for line in new.splitlines() if line]
        if self.flooding:
            honest = {n.node_id for n in self.nodes}
            entries = [
                e
                for e in entries
                if e["event"] != "update_rejected" or e["payload"]["node_id"] in honest
            ]
        return entries

    def verify_audit(self) -> None:
        result = verify_log_file(self.run_dir, public_key_pem=self.audit.public_pem)
        assert result.ok, result.reason
        assert result.actor == "coordinator"

    # -- honest results -------------------------------------------------------------------------
    def header(self, node: Node, task: pb.Task, **fields: Any) -> pb.ResultHeader:
        base: dict[str, Any] = dict(
            node_id=node.node_id,
            token=node.token,
            run_id=self.run_id,
            round=task.round,
            task_id=task.task_id,
            kind=task.kind,
        )
        if task.kind in (pb.TASK_KIND_FIT, pb.TASK_KIND_SEND_INITIAL):
            base.update(
                num_examples=100,
                metrics={"loss": 0.5, "accuracy": 0.75},
                tensors=codec.specs_to_proto(specs_of(TRAINED)),
                total_bytes=total_bytes(specs_of(TRAINED)),
            )
        elif task.kind == pb.TASK_KIND_EVALUATE:
            base.update(num_examples=40, metrics={"loss": 0.6, "accuracy": 0.7})
            if task.HasField("monitor"):
                base["report"] = _report_proto()
        base.update(fields)
        return pb.ResultHeader(**base)

    def honest_messages(
        self, node: Node, task: pb.Task, *, chunk_bytes: int = 16, **fields: Any
    ) -> list[bytes]:
        header = self.header(node, task, **fields)
        out = [pb.PushResultRequest(header=header).SerializeToString()]
        if task.kind in (pb.TASK_KIND_FIT, pb.TASK_KIND_SEND_INITIAL):
            out += list(codec.iter_chunks(TRAINED, chunk_bytes, framed=True))
        return out

    def expect_accepted(self, node: Node, task: pb.Task, messages: list[bytes]) -> None:
        """An honest push: accepted, one ResultArrived with exactly what was sent."""
        reply = self.push(messages)
        assert reply.code == Code.OK and reply.body.accepted, reply
        (event,) = self.events()
        assert isinstance(event, ResultArrived), event
        assert (event.node_id, event.task_id) == (node.node_id, task.task_id)
        audit = self.new_audit()
        if task.kind == pb.TASK_KIND_FIT:
            assert isinstance(event.result, FitResult)
            assert digest(event.result.params) == TRAINED_DIGEST
            assert [e["event"] for e in audit] == ["update_received"]
            assert audit[0]["payload"]["digest"] == TRAINED_DIGEST
        elif task.kind == pb.TASK_KIND_EVALUATE:
            assert isinstance(event.result, EvaluateResult)
            assert audit == []
        assert not any(e["event"] == "update_rejected" for e in audit)

    def honest_round(self) -> None:
        """Both nodes: pull a FIT, download, push; pull an EVALUATE, push with a report."""
        self.events(), self.new_audit()
        tasks = self.dispatch(Phase.FIT)
        assert [e["event"] for e in self.new_audit()] == ["model_sent"]
        for node in self.nodes:
            task = tasks[node.node_id]
            assert task.kind == pb.TASK_KIND_FIT and task.model_digest == PARAMS_DIGEST
            assert digest(self.download(node, task)) == PARAMS_DIGEST
            self.expect_accepted(node, task, self.honest_messages(node, task))
        tasks = self.dispatch(Phase.EVALUATE)
        self.new_audit()
        for node in self.nodes:
            task = tasks[node.node_id]
            assert task.kind == pb.TASK_KIND_EVALUATE and task.HasField("monitor")
            spec = monitoring.spec_from_proto(task.monitor)
            assert list(spec.edges) == list(SPEC.edges) and spec.num_classes == SPEC.num_classes
            self.expect_accepted(node, task, self.honest_messages(node, task))

    def check_untouched(self) -> None:
        """The dispatched model, the stored checkpoint and the audit chain are intact."""
        assert digest(PARAMS) == PARAMS_DIGEST
        assert self.store.last_round() == 0
        assert digest(self.store.load_round(0)) == PARAMS_DIGEST
        self.verify_audit()


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory):
    h = Harness(tmp_path_factory.mktemp("fuzz-handlers"))
    h.honest_round()
    yield h
    h.close()


@pytest.fixture
def batch(coord: Harness):
    """Run a batch of hostile calls, then check that honest nodes still get through."""
    coord.events(), coord.new_audit()
    yield coord
    assert coord.events() == []
    coord.new_audit()
    coord.honest_round()
    coord.check_untouched()


def _check_refusal(reply: Reply) -> None:
    assert reply.code not in BROKEN, reply
    if reply.code != Code.OK:
        assert reply.details.strip(), reply


def _check_only_rejections(h: Harness, before: int, *, allow: Sequence[str] = ()) -> None:
    """The audit entries a hostile call added: its rejections (and ``allow``), nothing else."""
    entries = h.new_audit()
    events = [e["event"] for e in entries]
    assert set(events) <= {"update_rejected", *allow}, events
    rejected = [e for e in entries if e["event"] == "update_rejected"]
    assert len(rejected) == len(h.rejections) - before, (events, h.rejections[before:])
    for entry, (server_round, node, code, _) in zip(rejected, h.rejections[before:], strict=True):
        assert entry["payload"]["code"] == code
        assert entry["payload"]["round"] == server_round
        assert entry["payload"]["node_id"] == node


#: ``batch`` is function-scoped on purpose: its checks run once after all of a test's examples
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=HEALTH)

# =============================================================================================
# 1. arbitrary bytes for every RPC
# =============================================================================================
UNARY_REPLY = {
    "Register": pb.RegisterResponse,
    "PullTask": pb.Task,
    "Heartbeat": pb.HeartbeatResponse,
}


@SETTINGS
@given(method=st.sampled_from(sorted(UNARY_REPLY)), data=st.binary(max_size=300))
def test_arbitrary_bytes_to_unary_calls_get_a_status(batch: Harness, method: str, data: bytes):
    h, before = batch, len(batch.rejections)
    reply = h.call(method, data)
    _check_refusal(reply)
    if reply.code == Code.OK:  # a well-formed request: the reply must be well-formed too
        UNARY_REPLY[method].FromString(reply.body)
        if method == "Heartbeat":
            assert not pb.HeartbeatResponse.FromString(reply.body).known
    else:
        assert reply.code in {
            Code.INVALID_ARGUMENT,
            Code.UNAUTHENTICATED,
            Code.FAILED_PRECONDITION,
        }, reply
        assert len(h.rejections) == before + 1, "every refusal is recorded"
    assert h.events() == []
    _check_only_rejections(h, before, allow=("node_joined",) if reply.code == Code.OK else ())


@SETTINGS
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_to_fetch_model_get_a_status(batch: Harness, data: bytes):
    h, before = batch, len(batch.rejections)
    reply = h.fetch(data)
    _check_refusal(reply)
    assert reply.code in {Code.INVALID_ARGUMENT, Code.UNAUTHENTICATED}, reply
    assert h.events() == []
    _check_only_rejections(h, before)


@SETTINGS
@given(messages=st.lists(st.binary(max_size=200), max_size=4))
def test_arbitrary_push_streams_get_a_status(batch: Harness, messages: list[bytes]):
    h, before = batch, len(batch.rejections)
    reply = h.push(messages)
    _check_refusal(reply)
    assert reply.code in {Code.INVALID_ARGUMENT, Code.UNAUTHENTICATED}, reply
    assert len(h.rejections) == before + 1, "every refusal is recorded"
    assert h.events() == []
    _check_only_rejections(h, before)


# -- byte-level mutations of honest requests ---------------------------------------------------
Edit = tuple[str, int, int, bytes]
#: an edit script, drawn independently of the bytes it edits (which differ per round)
EDITS: st.SearchStrategy[list[Edit]] = st.lists(
    st.tuples(
        st.sampled_from(["flip", "cut", "insert", "truncate", "dup"]),
        st.integers(0, 1 << 16),
        st.integers(1, 255),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)


def _edit(data: bytes, edits: list[Edit]) -> bytes:
    """``data`` with a few bytes flipped, cut, inserted, duplicated, or cut off."""
    out = bytearray(data)
    for op, pos, arg, insert in edits:
        i = pos % (len(out) + 1)
        if op == "flip" and i < len(out):
            out[i] ^= arg
        elif op == "cut":
            del out[i : i + 1 + arg % 8]
        elif op == "insert":
            out[i:i] = insert
        elif op == "truncate":
            del out[i:]
        elif op == "dup":
            out[i:i] = out[i : i + 1 + arg % 16]
    return bytes(out)


UNARY_METHODS = ["PullTask", "Heartbeat", "FetchModel", "Register"]


@SETTINGS
@given(method=st.sampled_from(UNARY_METHODS), edits=EDITS)
def test_mutated_honest_unary_requests(batch: Harness, method: str, edits: list[Edit]):
    h = batch
    node = h.nodes[0]
    tasks = h.dispatch(Phase.FIT, [node])
    task = tasks[node.node_id]
    h.new_audit()
    honest = {
        "PullTask": pb.PullTaskRequest(node_id=node.node_id, token=node.token),
        "Heartbeat": pb.HeartbeatRequest(node_id=node.node_id, token=node.token),
        "FetchModel": pb.FetchModelRequest(
            node_id=node.node_id, token=node.token, task_id=task.task_id
        ),
        "Register": pb.RegisterRequest(
            protocol_version=PROTOCOL_VERSION, site_name="m", num_train_examples=3
        ),
    }[method].SerializeToString()
    request = _edit(honest, edits)
    before = len(h.rejections)
    reply = h.fetch(request) if method == "FetchModel" else h.call(method, request)
    _check_refusal(reply)
    assert h.events() == []
    _check_only_rejections(h, before, allow=("node_joined",) if reply.code == Code.OK else ())
    # whatever it was, the honest node's task is still open
    h.expect_accepted(node, task, h.honest_messages(node, task))


#: the header fields that tie an upload to its node and task, and describe its payload
IDENTITY = ("node_id", "token", "run_id", "round", "task_id", "kind", "tensors", "total_bytes")


def _expected_params(header: pb.ResultHeader, messages: list[bytes]) -> Params | None:
    """The oracle for a mutated upload, from protobuf's own parser and numpy (not fedops'
    codec): the params the upload now carries, or None where it must be refused (a chunk
    that is no ``data`` message, a payload of another size, a non-finite float)."""
    data = []
    for message in messages[1:]:
        try:
            part = pb.PushResultRequest.FromString(message)
        except DecodeError:
            return None
        if part.WhichOneof("part") != "data":
            return None
        data.append(part.data)
    payload = b"".join(data)
    if len(payload) != header.total_bytes:
        return None
    params, offset = {}, 0
    for spec in header.tensors:
        dtype = np.dtype(spec.dtype)
        count = int(np.prod(spec.shape, dtype=np.int64))
        array = np.frombuffer(payload, dtype=dtype, count=count, offset=offset)
        params[spec.name] = array.reshape(tuple(spec.shape))
        offset += count * dtype.itemsize
        if dtype.kind == "f" and not np.all(np.isfinite(array)):
            return None
    return params


@SETTINGS
@given(which=st.integers(0, 1 << 8), edits=EDITS)
def test_mutated_honest_push_streams(batch: Harness, which: int, edits: list[Edit]):
    """Bytes of an honest upload mutated; the outcome is decided before the call.

    A payload chunk: accepted exactly when protobuf still reads every chunk as data, the
    payload keeps its declared size and every float stays finite, and then the result holds
    exactly the mutated values (uploads carry no digest: integrity is TLS's); else refused.
    The header: refused when it no longer parses or its identity fields changed, accepted
    when the edit left it as it was; other header changes are the structured mutations'
    (section 2), each with its own decided outcome.
    """
    h = batch
    node = h.nodes[0]
    task = h.dispatch(Phase.FIT, [node])[node.node_id]
    h.new_audit()
    messages = h.honest_messages(node, task, chunk_bytes=24)
    honest_header = pb.PushResultRequest.FromString(messages[0]).header
    i = 0 if which % 4 == 0 else 1 + which % (len(messages) - 1)  # the header a quarter of times
    messages[i] = _edit(messages[i], edits)
    if i == 0:
        try:
            first = pb.PushResultRequest.FromString(messages[0])
        except DecodeError:
            first = None
        if first is None or first.WhichOneof("part") != "header":
            accept = False
        else:
            header = first.header
            assume(header == honest_header or any(
                getattr(header, f) != getattr(honest_header, f) for f in IDENTITY
            ))  # fmt: skip
            accept = header == honest_header
        expected = TRAINED if accept else None
    else:
        expected = _expected_params(honest_header, messages)
    before = len(h.rejections)
    reply = h.push(messages)
    _check_refusal(reply)
    events = h.events()
    event("header" if i == 0 else "chunk", "accepted" if expected is not None else "refused")
    if expected is not None:
        assert reply.code == Code.OK and reply.body.accepted, reply
        (arrived,) = events
        assert isinstance(arrived, ResultArrived) and isinstance(arrived.result, FitResult)
        assert digest(arrived.result.params) == digest(expected)
        assert [e["event"] for e in h.new_audit()] == ["update_received"]
        return
    assert not (reply.code == Code.OK and reply.body.accepted), reply
    assert not any(isinstance(e, ResultArrived) for e in events), events
    assert len(events) <= 1
    _check_only_rejections(h, before)
    if events:  # the refusal answered the task: it is closed
        assert isinstance(events[0], ResultRejected) and events[0].node_id == node.node_id
        assert h.push(h.honest_messages(node, task)).code == Code.ALREADY_EXISTS
        h.new_audit()
    else:
        h.expect_accepted(node, task, h.honest_messages(node, task))


# =============================================================================================
# 2. structured mutations of an honest upload
# =============================================================================================
@dataclass(frozen=True, repr=False)
class Ctx:
    h: Harness
    me: Node
    other: Node
    task: pb.Task
    other_task: pb.Task


Mutation = Callable[[Ctx], tuple[list[bytes], Expect]]


def _hdr(header: pb.ResultHeader) -> bytes:
    return pb.PushResultRequest(header=header).SerializeToString()


def _payload(params: Params = TRAINED) -> bytes:
    return b"".join(codec.iter_chunks(params, 1 << 20))


def _framed(payload: bytes, cuts: Sequence[int] = ()) -> list[bytes]:
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(payload)}), len(payload)]
    return [framing.frame_data(payload[a:b]) for a, b in itertools.pairwise(bounds)]


def _header_mutation(make: Callable[[Ctx], dict[str, Any]], expect: Expect) -> Mutation:
    def apply(c: Ctx) -> tuple[list[bytes], Expect]:
        header = c.h.header(c.me, c.task)
        for key, value in make(c).items():
            if key == "metrics":
                header.ClearField(key)
                header.metrics.update(value)
            elif key == "tensors":
                del header.tensors[:]
                header.tensors.extend(value)
            else:
                setattr(header, key, value)
        return [_hdr(header), *_framed(_payload(), [40, 41, 90])], expect

    return apply


def _rejected(text: str) -> Expect:
    return Expect(Code.INVALID_ARGUMENT, text, closes=True)


TEXT = st.text(max_size=40)


def _other_text(value: str, pick: str) -> str:
    return pick if pick != value else pick + "x"


IDENTITY_MUTATIONS: st.SearchStrategy[tuple[str, Mutation]] = st.one_of(
    TEXT.map(
        lambda t: (
            "forged token",
            _header_mutation(
                lambda c: {"token": _other_text(c.me.token, t)},
                Expect(Code.UNAUTHENTICATED, "wrong token", closes=False),
            ),
        )
    ),
    st.just(
        (
            "impersonation: the other node's id, own token",
            _header_mutation(
                lambda c: {"node_id": c.other.node_id},
                Expect(Code.UNAUTHENTICATED, "wrong token", closes=False),
            ),
        )
    ),
    st.just(
        (
            "impersonation: own id, the other node's token",
            _header_mutation(
                lambda c: {"token": c.other.token},
                Expect(Code.UNAUTHENTICATED, "wrong token", closes=False),
            ),
        )
    ),
    st.just(
        (
            "the other node's task",
            _header_mutation(
                lambda c: {"task_id": c.other_task.task_id},
                Expect(Code.FAILED_PRECONDITION, "stale result", closes=False),
            ),
        )
    ),
    TEXT.map(
        lambda t: (
            "an unknown task id",
            _header_mutation(
                lambda c: {"task_id": "made-up-" + t},
                Expect(Code.FAILED_PRECONDITION, "stale result", closes=False),
            ),
        )
    ),
    TEXT.map(
        lambda t: (
            "another run",
            _header_mutation(
                lambda c: {"run_id": _other_text(c.h.run_id, t)},
                Expect(Code.FAILED_PRECONDITION, "this coordinator runs", closes=False),
            ),
        )
    ),
    INT64.map(
        lambda r: (
            "another round",
            _header_mutation(
                lambda c: {"round": r if r != c.task.round else r - 1},
                Expect(Code.FAILED_PRECONDITION, "result declares round", closes=False),
            ),
        )
    ),
    st.integers(-(2**31), 2**31 - 1)
    .filter(lambda k: k != pb.TASK_KIND_FIT)
    .map(
        lambda k: (
            "another kind",
            _header_mutation(
                lambda c: {"kind": k},
                Expect(Code.FAILED_PRECONDITION, "result declares round", closes=False),
            ),
        )
    ),
)


def _spec_change(draw: st.DrawFn) -> tuple[list[pb.TensorSpec], str]:
    specs = codec.specs_to_proto(SPECS)
    i = draw(st.integers(0, len(specs) - 1))
    what = draw(st.sampled_from(["dtype", "shape", "name", "drop", "extra", "swap"]))
    if what == "dtype":
        current = specs[i].dtype
        dtype = draw(st.one_of(st.sampled_from(sorted(ALLOWED_DTYPES - {current})), TEXT))
        specs[i].dtype = dtype if dtype != current else dtype + "x"
        text = "dtype"
    elif what == "shape":
        shape = draw(st.lists(INT64, max_size=6).filter(lambda s: s != list(specs[i].shape)))
        del specs[i].shape[:]
        specs[i].shape.extend(shape)
        if any(d < 0 for d in shape):
            text = "negative dimension"
        elif math.prod(max(d, 1) for d in shape) > codec.MAX_ELEMENTS:
            text = "declares more than"  # refused for its size before its shape is compared
        else:
            text = "has shape"
    elif what == "name":
        specs[i].name = _other_text(specs[i].name, draw(TEXT))
        text = "tensor name"
    elif what == "drop":
        del specs[i]
        text = "wrong number of tensors"
    elif what == "extra":
        specs.insert(i, pb.TensorSpec(name=draw(TEXT), dtype="float32", shape=[2]))
        text = "wrong number of tensors"
    else:  # two tensors in the wrong order
        j = (i + 1) % len(specs)
        a, b = pb.TensorSpec(), pb.TensorSpec()
        a.CopyFrom(specs[j])
        b.CopyFrom(specs[i])
        specs[i], specs[j] = a, b
        text = "tensor name"
    return specs, text


@st.composite
def _content_mutation(draw: st.DrawFn) -> tuple[str, Mutation]:
    """Mutations past authentication and the task check: each rejects the update."""
    kind = draw(
        st.sampled_from(
            [
                "num_examples",
                "metrics",
                "specs",
                "total_bytes",
                "truncated",
                "extra bytes",
                "second header",
                "malformed chunk",
                "nan payload",
                "empty payload",
            ]
        )
    )
    payload = _payload()
    cuts = draw(st.lists(st.integers(1, len(payload) - 1), max_size=4))
    if kind == "num_examples":
        n = draw(
            st.one_of(
                st.integers(min_value=-(2**63), max_value=0),
                st.integers(min_value=MAX_NUM_EXAMPLES + 1, max_value=2**63 - 1),
            )
        )
        return kind, _header_mutation(lambda c: {"num_examples": n}, _rejected("num_ex"))
    if kind == "metrics":
        metrics = draw(st.dictionaries(TEXT, st.floats(), max_size=4))
        bad = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        metrics[draw(TEXT)] = bad
        return kind, _header_mutation(lambda c: {"metrics": metrics}, _rejected("not finite"))
    if kind == "specs":
        specs, text = _spec_change(draw)
        return f"specs ({text})", _header_mutation(lambda c: {"tensors": specs}, _rejected(text))
    if kind == "total_bytes":
        n = draw(INT64.filter(lambda v: v != len(payload)))
        return kind, _header_mutation(lambda c: {"total_bytes": n}, _rejected("total_bytes"))

    def body(make: Callable[[], list[bytes]], text: str) -> Mutation:
        def apply(c: Ctx) -> tuple[list[bytes], Expect]:
            return [_hdr(c.h.header(c.me, c.task)), *make()], _rejected(text)

        return apply

    if kind == "truncated":
        keep = draw(st.integers(0, len(payload) - 1))
        return kind, body(lambda: _framed(payload[:keep], cuts), "payload truncated")
    if kind == "empty payload":
        return kind, body(list, "payload truncated")
    if kind == "extra bytes":
        extra = draw(st.binary(min_size=1, max_size=64))
        alone = draw(st.booleans())
        if alone:
            return kind, body(
                lambda: [*_framed(payload, cuts), framing.frame_data(extra)], "exceeds its declared"
            )
        return kind, body(lambda: _framed(payload + extra, cuts), "exceeds its declared")
    if kind == "second header":
        at = draw(st.integers(0, len(cuts) + 1))

        def second(c: Ctx) -> tuple[list[bytes], Expect]:
            chunks = _framed(payload, cuts)
            header = _hdr(c.h.header(c.me, c.task))
            chunks.insert(min(at, len(chunks)), header)
            return [header, *chunks], _rejected("a second header")

        return kind, second
    if kind == "malformed chunk":
        garbage = draw(st.sampled_from([b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05ab", b"\xff"]))
        at = draw(st.integers(0, len(cuts) + 1))

        def malformed() -> list[bytes]:
            chunks = _framed(payload, cuts)
            chunks.insert(min(at, len(chunks)), garbage)
            return chunks

        return kind, body(malformed, "malformed PushResultRequest")
    # NaN or inf somewhere in a float tensor
    name = draw(st.sampled_from([k for k, v in TRAINED.items() if v.dtype.kind == "f"]))
    bad = {k: v.copy() for k, v in TRAINED.items()}
    bad[name].flat[draw(st.integers(0, bad[name].size - 1))] = draw(
        st.sampled_from([np.nan, np.inf, -np.inf])
    )
    return kind, body(lambda: _framed(_payload(bad), cuts), "non-finite values")


def _no_header(name: str, make: Callable[[Ctx], list[bytes]], text: str) -> tuple[str, Mutation]:
    return name, lambda c: (make(c), Expect(Code.INVALID_ARGUMENT, text, closes=False))


FRAMING_MUTATIONS = st.sampled_from(
    [
        _no_header("empty stream", lambda c: [], "ResultHeader"),
        _no_header("empty message", lambda c: [b""], "ResultHeader"),
        _no_header("data first", lambda c: _framed(_payload()), "ResultHeader"),
        _no_header(
            "data, then the header",
            lambda c: [*_framed(_payload()), _hdr(c.h.header(c.me, c.task))],
            "ResultHeader",
        ),
        _no_header("malformed first message", lambda c: [b"\x0a\xff\xff\xff\xff\x0f"], "malformed"),
        _no_header(
            "a header cut short",
            lambda c: [_hdr(c.h.header(c.me, c.task))[:-3], *_framed(_payload())],
            "malformed",
        ),
    ]
)


@st.composite
def _declined(draw: st.DrawFn) -> tuple[str, Mutation]:
    text = draw(st.one_of(st.text(min_size=1, max_size=200), st.just("d" * 1_000_000)))

    def apply(c: Ctx) -> tuple[list[bytes], Expect]:
        header = c.h.header(c.me, c.task, declined=text)
        return [_hdr(header), *_framed(_payload())], Expect(Code.OK, "declined", closes=True)

    return "declined", apply


def _run_mutation(h: Harness, name: str, mutation: Mutation, phase: Phase = Phase.FIT) -> None:
    """Dispatch a round to both nodes; node 0 sends the mutation; check the aftermath."""
    me, other = h.nodes
    tasks = h.dispatch(phase)
    c = Ctx(h, me, other, tasks[me.node_id], tasks[other.node_id])
    messages, expect = mutation(c)
    h.new_audit()
    before = len(h.rejections)
    reply = h.push(messages)
    _check_refusal(reply)
    assert reply.code == expect.code, (name, reply, expect)
    events = h.events()
    if expect.code == Code.OK:
        assert not reply.body.accepted and expect.text in reply.body.message, (name, reply)
        (_, node, code, reason) = h.rejections[-1]
        assert (node, code) == (me.node_id, "DECLINED") and len(reason) < 1000, (name, reason)
    else:
        assert expect.text in reply.details, (name, reply.details, expect)
        assert h.rejections[-1][2] == expect.code.name
        assert expect.text in h.rejections[-1][3]
    assert len(h.rejections) == before + 1, (name, h.rejections[before:])
    _check_only_rejections(h, before)
    if expect.closes:
        assert len(events) == 1, (name, events)
        (event,) = events
        assert isinstance(event, ResultRejected), (name, event)
        assert (event.node_id, event.task_id) == (me.node_id, c.task.task_id)
        # closed: the honest answer now comes too late
        late = h.push(h.honest_messages(me, c.task))
        assert late.code == Code.ALREADY_EXISTS and "replayed" in late.details, late
        assert h.events() == []
        h.new_audit()
    else:
        assert events == [], (name, events)
        h.expect_accepted(me, c.task, h.honest_messages(me, c.task))
    # the other node's task was never touched
    h.expect_accepted(other, c.other_task, h.honest_messages(other, c.other_task))


@SETTINGS
@given(case=IDENTITY_MUTATIONS)
def test_forged_foreign_and_stale_headers_are_refused(batch: Harness, case):
    _run_mutation(batch, *case)


@SETTINGS
@given(case=_content_mutation())
def test_bad_contents_reject_the_update(batch: Harness, case):
    _run_mutation(batch, *case)


@settings(max_examples=20, deadline=None, suppress_health_check=HEALTH)
@given(case=st.one_of(FRAMING_MUTATIONS, _declined()))
def test_headerless_streams_and_declines(batch: Harness, case):
    _run_mutation(batch, *case)


@SETTINGS
@given(cuts=st.lists(st.integers(1, len(_payload()) - 1), max_size=8))
def test_any_chunking_of_an_honest_upload_is_accepted(batch: Harness, cuts: list[int]):
    """The control: the checks refuse contents, never an unusual chunk boundary."""
    h = batch
    node = h.nodes[0]
    task = h.dispatch(Phase.FIT, [node])[node.node_id]
    h.new_audit()
    header = _hdr(h.header(node, task))
    h.expect_accepted(node, task, [header, *_framed(_payload(), cuts)])


def test_a_chunk_over_the_limit(batch: Harness):
    big = framing.frame_data(b"\0" * (MAX_CHUNK_MESSAGE_BYTES + 1))
    text = f"exceeds the {MAX_CHUNK_MESSAGE_BYTES}-byte chunk limit"
    # inside the payload: the update is rejected
    _run_mutation(
        batch,
        "chunk over the limit",
        lambda c: ([_hdr(c.h.header(c.me, c.task)), big], _rejected(text)),
    )
    # as the first message: refused before anything is attributable
    _run_mutation(
        batch,
        "first message over the limit",
        lambda c: ([big], Expect(Code.INVALID_ARGUMENT, text, closes=False)),
    )


def _next_event(h: Harness) -> Event:
    """The event a handler still running after its call ended produces (a condition: the
    transport's queue, waited on; never a sleep)."""
    event = h.transport.next_event(TIMEOUT_S)
    assert event is not None, f"no event within {TIMEOUT_S} s"
    return event


def _push_over_grpc_limit(h: Harness) -> tuple[Node, pb.Task, Reply, Event]:
    """An upload whose third message is over gRPC's own 64 MiB limit: gRPC cuts the call."""
    me = h.nodes[0]
    task = h.dispatch(Phase.FIT, [me])[me.node_id]
    h.new_audit()
    huge = framing.frame_data(b"\0" * (64 * 1024 * 1024 + 16))
    reply = h.push([_hdr(h.header(me, task)), *_framed(_payload()[:30]), huge])
    assert reply.code == Code.RESOURCE_EXHAUSTED and reply.details, reply
    return me, task, reply, _next_event(h)


def _cut_off(h: Harness, task: pb.Task, event: Event, before: int) -> None:
    """Decided: a cut upload closes its task with one recorded INVALID_ARGUMENT rejection
    (gRPC's error or the short payload, whichever check sees the cut first)."""
    assert isinstance(event, ResultRejected) and event.task_id == task.task_id, event
    h.wait_rejections(before + 1)
    assert len(h.rejections) == before + 1, "the refusal is recorded once"
    code, reason = h.rejections[-1][2:4]
    assert code == "INVALID_ARGUMENT" and ("cut off" in reason or "truncated" in reason), reason


def test_a_message_over_grpc_limit_is_never_taken_as_a_result(batch: Harness):
    h = batch
    before = len(h.rejections)
    me, task, _, event = _push_over_grpc_limit(h)
    _cut_off(h, task, event, before)
    _check_only_rejections(h, before)
    assert h.push(h.honest_messages(me, task)).code == Code.ALREADY_EXISTS  # closed
    h.new_audit()


def test_a_cancelled_upload_is_never_taken_as_a_result(batch: Harness, monkeypatch):
    """The client vanishes mid-upload, once the coordinator is reading its payload: the
    partial payload must not become a result, and the task is closed with the reason."""
    h = batch
    me = h.nodes[0]
    task = h.dispatch(Phase.FIT, [me])[me.node_id]
    h.new_audit()
    reading, release = threading.Event(), threading.Event()
    push = h.transport.push

    def push_noting_the_first_chunk(header: Any, chunks: Any) -> Any:
        def noted() -> Iterator[Any]:
            for chunk in chunks:
                reading.set()  # the coordinator holds the header and a payload chunk
                yield chunk

        return push(header, noted())

    monkeypatch.setattr(h.transport, "push", push_noting_the_first_chunk)

    def messages():
        yield _hdr(h.header(me, task))
        yield from _framed(_payload()[:40])
        release.wait(TIMEOUT_S)

    before = len(h.rejections)
    future = h._push.future(messages(), timeout=TIMEOUT_S)
    assert reading.wait(TIMEOUT_S), "the coordinator never read the payload"
    future.cancel()
    release.set()
    _cut_off(h, task, _next_event(h), before)
    assert h.push(h.honest_messages(me, task)).code == Code.ALREADY_EXISTS  # closed
    h.new_audit()


# =============================================================================================
# 3. evaluation results and monitoring reports
# =============================================================================================
@st.composite
def _mutated_report(draw: st.DrawFn) -> pb.SiteReport:
    msg = _report_proto()
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(
                [
                    "count",
                    "bins",
                    "rename",
                    "drop histogram",
                    "drift value",
                    "drift feature",
                    "drop drift",
                    "fairness value",
                    "fairness group",
                    "rescale",
                ]
            )
        )
        hs = msg.histograms
        if op == "count" and hs:
            h = hs[draw(st.integers(0, len(hs) - 1))]
            counts = draw(st.sampled_from([h.reference, h.current]))
            if counts:
                counts[draw(st.integers(0, len(counts) - 1))] = draw(INT64)
        elif op == "bins" and hs:
            h = hs[draw(st.integers(0, len(hs) - 1))]
            counts = draw(st.sampled_from([h.reference, h.current]))
            if draw(st.booleans()) or not counts:
                counts.append(draw(st.integers(0, 10)))
            else:
                del counts[-1]
        elif op == "rename" and hs:
            hs[draw(st.integers(0, len(hs) - 1))].name = draw(TEXT)
        elif op == "drop histogram" and hs:
            del hs[draw(st.integers(0, len(hs) - 1))]
        elif op in ("drift value", "drift feature", "drop drift") and msg.drift:
            i = draw(st.integers(0, len(msg.drift) - 1))
            if op == "drift value":
                stat = draw(st.sampled_from(["psi", "js", "ks", "ks_pvalue"]))
                setattr(msg.drift[i], stat, draw(st.floats()))
            elif op == "drift feature":
                msg.drift[i].feature = draw(TEXT)
            else:
                del msg.drift[i]
        elif op == "fairness value" and msg.fairness:
            g = msg.fairness[draw(st.integers(0, len(msg.fairness) - 1))]
            cell = draw(st.sampled_from(["group", "n", "tp", "fp", "tn", "fn", "correct"]))
            setattr(g, cell, draw(INT64))
        elif op == "fairness group":
            cells = draw(st.lists(st.integers(0, 50), min_size=4, max_size=4))
            msg.fairness.add(
                group=draw(INT64),
                n=sum(cells),
                tp=cells[0],
                fp=cells[1],
                tn=cells[2],
                fn=cells[3],
                correct=draw(st.integers(0, sum(cells))),
            )
        elif op == "rescale":
            # consistent counts and statistics: a different, valid report
            k = draw(st.integers(2, 1000))
            names = [h.name for h in hs]
            ref = [np.asarray(h.reference, np.int64) * k for h in hs]
            cur = [np.asarray(h.current, np.int64) for h in hs]
            plausible = all(
                r.shape == c.shape and c.sum() > 0 and 0 < r.sum() <= 10**9
                for r, c in zip(ref, cur, strict=True)
            ) and all(0 <= v <= 10**6 for h in hs for v in [*h.reference, *h.current])
            if names and plausible:
                for h, r in zip(hs, ref, strict=True):
                    del h.reference[:]
                    h.reference.extend(r.tolist())
                del msg.drift[:]
                for d in drift_report(names, ref, cur):
                    msg.drift.add(
                        feature=d.feature, psi=d.psi, js=d.js, ks=d.ks, ks_pvalue=d.ks_pvalue
                    )
    return msg


@SETTINGS
@given(report=_mutated_report())
def test_tampered_monitoring_reports(batch: Harness, report: pb.SiteReport):
    """The server's verdict on a report is the codec's, and a refusal closes the task."""
    try:
        monitoring.report_from_proto(report, SPEC)
        expect = Expect(Code.OK, "accepted", closes=True)
    except InvalidUpdate as exc:
        expect = _rejected(f"update rejected: {exc}")
    event("accepted" if expect.code == Code.OK else "refused")

    def apply(c: Ctx) -> tuple[list[bytes], Expect]:
        return [_hdr(c.h.header(c.me, c.task, report=report))], expect

    if expect.code == Code.OK:
        h = batch
        me = h.nodes[0]
        task = h.dispatch(Phase.EVALUATE, [me])[me.node_id]
        h.new_audit()
        h.expect_accepted(me, task, apply(Ctx(h, me, me, task, task))[0])
        return
    _run_mutation(batch, "tampered report", apply, Phase.EVALUATE)


EVAL_MUTATIONS = [
    ("a payload", lambda c: _framed(_payload()), "carries no payload"),
    ("NaN metric", {"metrics": {"loss": math.nan}}, "not finite"),
    ("negative examples", {"num_examples": -1}, "num_examples"),
    ("a report nobody asked for", "unasked", "no task asked for"),
]


@pytest.mark.parametrize("name, change, text", EVAL_MUTATIONS, ids=[m[0] for m in EVAL_MUTATIONS])
def test_bad_evaluation_results(batch: Harness, name: str, change: Any, text: str):
    def apply(c: Ctx) -> tuple[list[bytes], Expect]:
        if callable(change):
            return [_hdr(c.h.header(c.me, c.task)), *change(c)], _rejected(text)
        if change == "unasked":  # an evaluation dispatched without a monitoring request
            return [_hdr(c.h.header(c.me, c.task, report=_report_proto()))], _rejected(text)
        return [_hdr(c.h.header(c.me, c.task, **change))], _rejected(text)

    if change == "unasked":
        h = batch
        me, other = h.nodes
        tasks = h.dispatch(Phase.EVALUATE, monitor=None)
        c = Ctx(h, me, other, tasks[me.node_id], tasks[other.node_id])
        assert not c.task.HasField("monitor")
        messages, expect = apply(c)
        h.new_audit()
        reply = h.push(messages)
        assert reply.code == expect.code and text in reply.details, reply
        (event,) = h.events()
        assert isinstance(event, ResultRejected)
        h.new_audit()
        h.expect_accepted(other, c.other_task, h.honest_messages(other, c.other_task))
        return
    _run_mutation(batch, name, apply, Phase.EVALUATE)


# =============================================================================================
# 4. replays, stale rounds and impersonation across calls
# =============================================================================================
def test_replays_and_stale_rounds(batch: Harness):
    h = batch
    me, other = h.nodes
    fit = h.dispatch(Phase.FIT)
    accepted = h.honest_messages(me, fit[me.node_id])
    h.new_audit()
    h.expect_accepted(me, fit[me.node_id], accepted)

    def refused(messages: list[bytes], code: grpc.StatusCode, text: str) -> None:
        before = len(h.rejections)
        reply = h.push(messages)
        assert reply.code == code and text in reply.details, reply
        assert h.events() == []
        _check_only_rejections(h, before)

    # the same bytes again: a replay
    refused(accepted, Code.ALREADY_EXISTS, "replayed result")
    # the other node presents my accepted result as its own: its token does not match my id
    stolen = pb.ResultHeader.FromString(
        pb.PushResultRequest.FromString(accepted[0]).header.SerializeToString()
    )
    stolen.token = other.token
    refused([_hdr(stolen), *accepted[1:]], Code.UNAUTHENTICATED, "wrong token")
    # ... or under its own name: that task id was answered (by someone else)
    stolen.node_id = other.node_id
    refused([_hdr(stolen), *accepted[1:]], Code.ALREADY_EXISTS, "replayed result")

    # the other node sat on its round-r task; a new round supersedes it
    stale = h.honest_messages(other, fit[other.node_id])
    ev = h.dispatch(Phase.EVALUATE)
    h.new_audit()
    refused(stale, Code.FAILED_PRECONDITION, "stale result")
    # and the accepted replay stays a replay in the new round
    refused(accepted, Code.ALREADY_EXISTS, "replayed result")
    # a FIT-shaped result for the EVALUATE task id: kind mismatch
    wrong_kind = h.header(other, fit[other.node_id], task_id=ev[other.node_id].task_id)
    wrong_kind.round = ev[other.node_id].round
    refused([_hdr(wrong_kind), *stale[1:]], Code.FAILED_PRECONDITION, "kind")
    # the current tasks are still open for their honest answers
    for node in h.nodes:
        h.expect_accepted(node, ev[node.node_id], h.honest_messages(node, ev[node.node_id]))
    # and replaying those is refused too
    refused(h.honest_messages(other, ev[other.node_id]), Code.ALREADY_EXISTS, "replayed")


def test_impersonation_on_pull_and_fetch(batch: Harness):
    h = batch
    me, other = h.nodes
    h.round += 1
    ids = h.transport.dispatch(
        h.round, [other.node_id], Instruction(phase=Phase.FIT, params=PARAMS)
    )
    h.new_audit()
    before = len(h.rejections)

    def req(message: Any) -> bytes:
        return message.SerializeToString()

    # my token with the other node's id: not the other node
    reply = h.call("PullTask", req(pb.PullTaskRequest(node_id=other.node_id, token=me.token)))
    assert reply.code == Code.UNAUTHENTICATED and "wrong token" in reply.details, reply
    reply = h.fetch(
        req(pb.FetchModelRequest(node_id=other.node_id, token=me.token, task_id=ids[other.node_id]))
    )
    assert reply.code == Code.UNAUTHENTICATED, reply
    # my own credentials, the other node's task: not my task
    reply = h.fetch(
        req(pb.FetchModelRequest(node_id=me.node_id, token=me.token, task_id=ids[other.node_id]))
    )
    assert reply.code == Code.FAILED_PRECONDITION and "not this node's" in reply.details, reply
    reply = h.call("Heartbeat", req(pb.HeartbeatRequest(node_id=other.node_id, token=me.token)))
    assert reply.code == Code.OK and not pb.HeartbeatResponse.FromString(reply.body).known
    assert len(h.rejections) == before + 3
    _check_only_rejections(h, before)
    # the other node's task was not handed out to the impostor
    task = h.pull(other, wait_ms=0)
    assert task.task_id == ids[other.node_id] and task.kind == pb.TASK_KIND_FIT
    assert digest(h.download(other, task)) == PARAMS_DIGEST
    h.new_audit()
    h.expect_accepted(other, task, h.honest_messages(other, task))


def test_a_flood_of_garbage_does_not_disturb_honest_rounds(batch: Harness):
    """Hostile calls on four threads while two honest rounds run beside them."""
    h = batch
    stop = threading.Event()
    codes: list[grpc.StatusCode] = []

    def flood(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            data = rng.randbytes(rng.randint(0, 200))
            method = rng.choice(["Register", "PullTask", "Heartbeat", "FetchModel", "PushResult"])
            if method == "FetchModel":
                reply = h.fetch(data)
            elif method == "PushResult":
                reply = h.push([data, rng.randbytes(rng.randint(0, 50))])
            else:
                reply = h.call(method, data)
            codes.append(reply.code)

    threads = [threading.Thread(target=flood, args=(i,), daemon=True) for i in range(4)]
    h.flooding = True
    try:
        for t in threads:
            t.start()
        for _ in range(2):
            h.honest_round()
        # on a loaded machine the rounds can end before the flood got going: let it reach
        # its count (bounded), so the count below never fails for the scheduler's sake
        deadline = time.monotonic() + TIMEOUT_S
        while len(codes) <= 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(TIMEOUT_S)
        h.flooding = False
    h.new_audit()
    assert len(codes) > 20 and not set(codes) & BROKEN, set(codes)


# =============================================================================================
# 5. secure aggregation: the masked-input and consistency stages
# =============================================================================================
MASK_LENGTH = sum(int(v.size) for v in PARAMS.values()) + 1


def _masked_case(c: Ctx, **fields: Any) -> list[bytes]:
    vector = np.arange(MASK_LENGTH, dtype=np.uint32)
    payload = fields.pop("payload", {MASKED_TENSOR: vector})
    specs = specs_of(payload)
    header = c.h.header(
        c.me,
        c.task,
        secagg=pb.SecAggReply(masked=pb.SecAggMasked(complaints=[2])),
        tensors=codec.specs_to_proto(specs),
        total_bytes=total_bytes(specs),
        num_examples=10,
        metrics={"loss": 0.1},
    )
    for key, value in fields.items():
        if key == "secagg":
            header.secagg.CopyFrom(value)
        elif key == "metrics":
            header.metrics.clear()
            header.metrics.update(value)
        else:
            setattr(header, key, value)
    return [_hdr(header), *codec.iter_chunks(payload, 64, framed=True)]


SECAGG_MUTATIONS = [
    (
        "float32 instead of uint32",
        {"payload": {MASKED_TENSOR: np.zeros(MASK_LENGTH, np.float32)}},
        "dtype",
    ),
    ("wrong length", {"payload": {MASKED_TENSOR: np.zeros(MASK_LENGTH + 1, np.uint32)}}, "shape"),
    ("wrong name", {"payload": {"plain": np.zeros(MASK_LENGTH, np.uint32)}}, "tensor name"),
    (
        "keys reply with the vector",
        {"secagg": pb.SecAggReply(keys=pb.SecAggPublicKeys(index=1))},
        "carries no arrays",
    ),
    ("no stage", {"secagg": pb.SecAggReply()}, "carries no arrays"),
    (
        "signature reply with the vector",
        {"secagg": pb.SecAggReply(signature=pb.SecAggSurvivorSignature(signature=b"s" * 64))},
        "carries no arrays",
    ),
    ("NaN metric", {"metrics": {"loss": math.nan}}, "not finite"),
]


@pytest.mark.parametrize(
    "name, fields, text", SECAGG_MUTATIONS, ids=[m[0] for m in SECAGG_MUTATIONS]
)
def test_bad_masked_inputs(batch: Harness, name: str, fields: dict[str, Any], text: str):
    h = batch
    me, other = h.nodes
    h.round += 1
    encoding = Encoding(quantizer=Quantizer(clip=1.0, levels=1000), max_weight=1000)
    stage = StageRequest(
        messages={n.node_id: MaskRequest(shares=(), encoding=encoding) for n in h.nodes},
        result_specs=(TensorSpec(name=MASKED_TENSOR, dtype="uint32", shape=(MASK_LENGTH,)),),
    )
    h.transport.dispatch(
        h.round,
        [n.node_id for n in h.nodes],
        Instruction(phase=Phase.SECAGG_MASKED, params=PARAMS, stage=stage),
    )
    tasks = {n.node_id: h.pull(n) for n in h.nodes}
    c = Ctx(h, me, other, tasks[me.node_id], tasks[other.node_id])
    assert c.task.kind == pb.TASK_KIND_SECAGG and c.task.secagg.WhichOneof("stage") == "mask"
    h.new_audit()
    before = len(h.rejections)
    reply = h.push(_masked_case(c, **dict(fields)))
    assert reply.code == Code.INVALID_ARGUMENT and text in reply.details, (name, reply)
    (event,) = h.events()
    assert isinstance(event, ResultRejected) and event.node_id == me.node_id
    _check_only_rejections(h, before)
    # the honest masked input of the other node goes through, digested in the audit log
    reply = h.push(_masked_case(Ctx(h, other, me, c.other_task, c.task)))
    assert reply.code == Code.OK and reply.body.accepted, reply
    (event,) = h.events()
    assert isinstance(event, ResultArrived) and isinstance(event.result, StageResult)
    assert isinstance(event.result.reply, MaskedInput)
    assert event.result.reply.complaints == (2,)
    audit = h.new_audit()
    assert [(e["event"], e["payload"]["phase"]) for e in audit] == [
        ("update_received", str(Phase.SECAGG_MASKED))
    ]


def _signature_case(c: Ctx, signature: bytes, payload: Params | None = None) -> list[bytes]:
    payload = payload or {}
    specs = specs_of(payload)
    header = c.h.header(
        c.me,
        c.task,
        secagg=pb.SecAggReply(signature=pb.SecAggSurvivorSignature(signature=signature)),
        tensors=codec.specs_to_proto(specs),
        total_bytes=total_bytes(specs),
    )
    return [_hdr(header), *codec.iter_chunks(payload, 64, framed=True)]


SIGNATURE_MUTATIONS = [
    ("oversized signature", b"s" * 1025, None, "at most 1024 bytes"),
    # the stage expects no tensors: refused before the reply is even decoded
    (
        "with a vector",
        b"s" * 64,
        {MASKED_TENSOR: np.zeros(4, np.uint32)},
        "wrong number of tensors",
    ),
]


@pytest.mark.parametrize(
    "name, signature, payload, text", SIGNATURE_MUTATIONS, ids=[m[0] for m in SIGNATURE_MUTATIONS]
)
def test_bad_survivor_signatures(
    batch: Harness, name: str, signature: bytes, payload: Params | None, text: str
):
    h = batch
    me, other = h.nodes
    h.round += 1
    stage = StageRequest(
        messages={n.node_id: ConsistencyRequest(survivors=(1, 2)) for n in h.nodes}
    )
    h.transport.dispatch(
        h.round,
        [n.node_id for n in h.nodes],
        Instruction(phase=Phase.SECAGG_CONSISTENCY, params=PARAMS, stage=stage),
    )
    tasks = {n.node_id: h.pull(n) for n in h.nodes}
    c = Ctx(h, me, other, tasks[me.node_id], tasks[other.node_id])
    assert c.task.kind == pb.TASK_KIND_SECAGG
    assert c.task.secagg.WhichOneof("stage") == "consistency"
    assert list(c.task.secagg.consistency.survivors) == [1, 2]
    h.new_audit()
    before = len(h.rejections)
    reply = h.push(_signature_case(c, signature, payload))
    assert reply.code == Code.INVALID_ARGUMENT and text in reply.details, (name, reply)
    (event,) = h.events()
    assert isinstance(event, ResultRejected) and event.node_id == me.node_id
    _check_only_rejections(h, before)
    # the honest signature of the other node goes through
    honest = Ctx(h, other, me, c.other_task, c.task)
    reply = h.push(_signature_case(honest, b"\x07" * 64))
    assert reply.code == Code.OK and reply.body.accepted, reply
    (event,) = h.events()
    assert isinstance(event, ResultArrived) and isinstance(event.result, StageResult)
    assert event.result.reply == SurvivorSignature(signature=b"\x07" * 64)
    h.new_audit()


# =============================================================================================
# 6. bugs this fuzzing found, fixed: their tests stay
# =============================================================================================
LONG = 65_536  # an attacker-chosen string far over gRPC's 8-16 KiB status-metadata limits


def _echo_cases() -> list[tuple[str, Callable[[Harness], Reply], grpc.StatusCode]]:
    def pull(h: Harness) -> Reply:
        return h.call(
            "PullTask", pb.PullTaskRequest(node_id="n" * LONG, token="t").SerializeToString()
        )

    def register(h: Harness) -> Reply:
        request = pb.RegisterRequest(protocol_version="v" * LONG)
        return h.call("Register", request.SerializeToString())

    def push(**fields: Any) -> Callable[[Harness], Reply]:
        def run(h: Harness) -> Reply:
            me = h.nodes[0]
            task = h.dispatch(Phase.FIT, [me])[me.node_id]
            header = h.header(me, task, **fields)
            return h.push([_hdr(header), *_framed(_payload())])

        return run

    long_dtype = codec.specs_to_proto(SPECS)
    long_dtype[0].dtype = "d" * LONG
    return [
        ("PullTask node_id", pull, Code.UNAUTHENTICATED),
        ("Register protocol_version", register, Code.FAILED_PRECONDITION),
        ("PushResult node_id", push(node_id="n" * LONG), Code.UNAUTHENTICATED),
        ("PushResult run_id", push(run_id="r" * LONG), Code.FAILED_PRECONDITION),
        ("PushResult task_id", push(task_id="t" * LONG), Code.FAILED_PRECONDITION),
        ("PushResult dtype", push(tensors=long_dtype), Code.INVALID_ARGUMENT),
    ]


@pytest.mark.parametrize("name, send, code", _echo_cases(), ids=[c[0] for c in _echo_cases()])
def test_refusal_reasons_are_bounded(coord: Harness, name: str, send, code: grpc.StatusCode):
    h = coord
    h.events(), h.new_audit()
    before = len(h.rejections)
    reply = send(h)
    h.events()  # a dtype refusal closes its task; nothing else to check there
    assert len(h.rejections) == before + 1
    _, node, _, reason = h.rejections[-1]
    entries = [e for e in h.new_audit() if e["event"] == "update_rejected"]
    assert reply.code == code, (name, reply.code, reply.details[:200])
    assert 0 < len(reply.details) <= 4096
    assert len(node) <= 256 and len(reason) <= 4096
    assert len(json.dumps(entries[-1])) <= 8192


def test_a_malformed_fetch_is_recorded_like_every_other_refusal(coord: Harness):
    h = coord
    before = len(h.rejections)
    reply = h.fetch(b"\xff\xff")
    assert reply.code == Code.INVALID_ARGUMENT and "malformed" in reply.details, reply
    assert len(h.rejections) == before + 1


def test_an_evaluation_that_declares_tensors_is_refused(coord: Harness):
    coord.events(), coord.new_audit()
    _run_mutation(
        coord,
        "evaluation declaring a payload",
        lambda c: (
            [
                _hdr(
                    c.h.header(
                        c.me,
                        c.task,
                        tensors=[pb.TensorSpec(name="x", dtype="complex128", shape=[2**40])],
                        total_bytes=2**62,
                    )
                )
            ],
            _rejected("update rejected"),
        ),
        Phase.EVALUATE,
    )


def test_an_initial_model_numpy_cannot_shape_is_refused(tmp_path: Path):
    h = Harness(tmp_path)
    try:
        initial: list[Params] = []
        thread = threading.Thread(
            target=lambda: initial.append(h.transport.fetch_initial_params(20)), daemon=True
        )
        thread.start()
        first = h.nodes[0]
        task = h.pull(first, wait_ms=5000)
        assert task.kind == pb.TASK_KIND_SEND_INITIAL, task
        specs = [pb.TensorSpec(name="w", dtype="float32", shape=[1] * 65)]
        header = h.header(first, task, num_examples=5, tensors=specs, total_bytes=4)
        try:
            reply = h.push([_hdr(header), framing.frame_data(b"\0" * 4)])
        finally:
            # whatever happened, let fetch_initial_params finish with an honest model
            if not initial:
                again = h.pull(first, wait_ms=1000)
                retry = again if again.kind == pb.TASK_KIND_SEND_INITIAL else task
                h.push(h.honest_messages(first, retry))
            thread.join(10)
        assert reply.code == Code.INVALID_ARGUMENT and reply.details, reply
    finally:
        h.close()


def test_a_call_cut_by_grpc_closes_the_task_with_a_recorded_rejection(coord: Harness):
    h = coord
    h.events(), h.new_audit()
    before = len(h.rejections)
    _, task, _, event = _push_over_grpc_limit(h)
    _cut_off(h, task, event, before)
