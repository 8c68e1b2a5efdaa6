"""Hostile peers against a real coordinator on 127.0.0.1 (issue 17, findings 1 and 2).

Outcomes only, no latency bounds: with well over a pool's worth of idle
upload streams open, honest registrations and heartbeats succeed and a live
node is not declared dead; idle streams are cancelled by the header
deadline; downloads that stop reading hold no thread; a peer past its
upload cap is refused; a certificate that may not train is refused before
its upload's header is read; a flood of refused calls leaves a handful of
store rows and audit entries, not one per call; a 4 MiB site name is
refused and stored nowhere, a message past gRPC's limit is cut before any
handler; a site that registers again replaces its node (by name without a
kit, by certificate with one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml

from fedops.consortium.kit import load_kit
from fedops.consortium.kits import init_consortium
from fedops.consortium.tls import Revocation, channel_credentials, server_credentials
from fedops.coordinator.aio import LoopServer
from fedops.coordinator.grpc_server import (
    MAX_MESSAGE_BYTES,
    MAX_STREAMS_PER_CONNECTION,
    SERVICE,
    build_server,
)
from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.coordinator.peer_guard import (
    MAX_CALLS_PER_SITE,
    CallLimits,
    PeerSlots,
    RefusalThrottle,
)
from fedops.coordinator.peers import PeerGate
from fedops.core.rounds import Phase
from fedops.runtime.audit.log_file import LOG_NAME
from fedops.runtime.records import RecordSettings, RunRecords
from fedops.runtime.transport import Instruction
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import PROTOCOL_VERSION

pytestmark = pytest.mark.slow  # real gRPC servers or processes: the slow lane

Code = grpc.StatusCode
CALL_S = 10.0  # a call's deadline: generous, these are loopback calls
ATTACKERS = 200  # idle upload streams (as in issue 17): far more than the pool's threads


def _raw(data: bytes) -> bytes:
    return data


@dataclass
class Coordinator:
    """A coordinator on loopback, wired like ``fedops coordinator`` wires its records."""

    root: Path
    pool: int = 4
    header_deadline_s: float = 600.0  # long: the attack's streams stay open for the test
    uploads_per_peer: int = 1024
    liveness_timeout_s: float = 3600.0
    slots: PeerSlots = field(init=False)

    def __post_init__(self) -> None:
        self.records = RunRecords.open(
            RecordSettings(run_dir=self.root / "run", config={"test": "hostile-peers"}, fsync=False)
        )
        self.store, self.audit = self.records.store, self.records.audit
        self.transport = GrpcTransport(
            run_id=self.records.run_id,
            heartbeat_interval_s=0.2,
            liveness_timeout_s=self.liveness_timeout_s,
            audit=self.audit.record,
        )
        self.throttle = RefusalThrottle(
            self.records.write_rejection,
            is_node=lambda node: self.transport.registry.get(node) is not None,
        )
        self.transport.on_rejection = self.throttle
        self.slots = PeerSlots(self.uploads_per_peer)
        self.server: LoopServer = build_server(
            self.transport,
            max_workers=self.pool,
            header_deadline_s=self.header_deadline_s,
            slots=self.slots,
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def close(self) -> None:
        self.transport.close(grace_s=0)
        self.server.stop(grace=0).wait(5)
        self.channel.close()
        self.audit.close()
        self.store.close()

    def call(self, method: str, request: bytes) -> bytes:
        return self.channel.unary_unary(
            f"/{SERVICE}/{method}", request_serializer=_raw, response_deserializer=_raw
        )(request, timeout=CALL_S)

    def register(self, site: str) -> pb.RegisterResponse:
        request = pb.RegisterRequest(
            protocol_version=PROTOCOL_VERSION, site_name=site, num_train_examples=10
        )
        return pb.RegisterResponse.FromString(self.call("Register", request.SerializeToString()))

    def heartbeat(self, node: pb.RegisterResponse) -> bool:
        request = pb.HeartbeatRequest(node_id=node.node_id, token=node.token)
        return pb.HeartbeatResponse.FromString(
            self.call("Heartbeat", request.SerializeToString())
        ).known

    def poll(self, node: pb.RegisterResponse) -> pb.Task:
        request = pb.PullTaskRequest(node_id=node.node_id, token=node.token, wait_ms=0)
        return pb.Task.FromString(self.call("PullTask", request.SerializeToString()))


class IdleUploads:
    """``PushResult`` streams that open and send nothing until released (or cancelled)."""

    def __init__(self, target: str, count: int, credentials: grpc.ChannelCredentials | None):
        self.released = threading.Event()
        # one connection each (a channel of its own subchannel pool), as many as the
        # coordinator's cap on calls per connection makes these streams need
        self.channels = [
            grpc.secure_channel(target, credentials, options=[("fedops.test.connection", i)])
            if credentials is not None
            else grpc.insecure_channel(target, options=[("fedops.test.connection", i)])
            for i in range(-(-count // MAX_STREAMS_PER_CONNECTION))
        ]
        self.calls = [self.open(i) for i in range(count)]

    def open(self, i: int) -> grpc.Future:
        channel = self.channels[i % len(self.channels)]
        push = channel.stream_unary(
            f"/{SERVICE}/PushResult", request_serializer=_raw, response_deserializer=_raw
        )
        return push.future(self._nothing(), timeout=120)

    def _nothing(self) -> Iterator[bytes]:
        self.released.wait()
        yield from ()

    def close(self) -> None:
        self.released.set()
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            channel.close()


def _wait_open(slots: PeerSlots, peer: str, count: int) -> None:
    """Until the server holds ``count`` uploads of ``peer`` (it has them all, not yet answered)."""
    done = threading.Event()
    for _ in range(600):
        if slots.open_count(peer) >= count:
            return
        done.wait(0.05)
    raise AssertionError(f"only {slots.open_count(peer)} of {count} uploads reached the server")


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    coord = Coordinator(tmp_path, liveness_timeout_s=2.0)
    try:
        yield coord
    finally:
        coord.close()


def test_idle_uploads_starve_neither_heartbeats_nor_registrations(coordinator: Coordinator):
    honest = coordinator.register("site-honest")
    coordinator.poll(honest)  # listening: available for rounds
    attack = IdleUploads(f"127.0.0.1:{coordinator.port}", ATTACKERS, None)
    try:
        _wait_open(coordinator.slots, "127.0.0.1", ATTACKERS)
        pause = threading.Event()
        # heartbeats for longer than the liveness timeout, while every attack stream is open
        for i in range(20):
            assert coordinator.heartbeat(honest)
            assert coordinator.poll(honest).kind == pb.TASK_KIND_WAIT
            if i % 4 == 0:
                assert coordinator.register(f"site-new-{i}").node_id
            pause.wait(0.15)
        assert coordinator.slots.open_count("127.0.0.1") == ATTACKERS
        assert not any(call.done() for call in attack.calls)
        assert honest.node_id in coordinator.transport.wait_for_nodes(1, timeout_s=0)
    finally:
        attack.close()


def test_stalled_downloads_starve_neither_heartbeats_nor_registrations(coordinator: Coordinator):
    transport = coordinator.transport
    readers = [coordinator.register(f"site-slow-{i}") for i in range(2 * coordinator.pool)]
    for node in readers:
        coordinator.poll(node)
    model = {"w": np.zeros((16 << 20) // 4, dtype=np.float32)}  # far past HTTP/2's windows
    tasks = transport.dispatch(
        1, [n.node_id for n in readers], Instruction(phase=Phase.FIT, params=model)
    )
    fetch = coordinator.channel.unary_stream(
        f"/{SERVICE}/FetchModel", request_serializer=_raw, response_deserializer=_raw
    )
    streams = []
    try:
        for node in readers:  # each reads the header, then stops reading
            request = pb.FetchModelRequest(
                node_id=node.node_id, token=node.token, task_id=tasks[node.node_id]
            )
            stream = fetch(request.SerializeToString(), timeout=60)
            assert pb.ModelChunk.FromString(next(stream)).HasField("header")
            streams.append(stream)
        for i in range(5):
            assert coordinator.heartbeat(readers[0])
            assert coordinator.register(f"site-new-{i}").node_id
    finally:
        for stream in streams:
            stream.cancel()


def test_an_upload_without_a_header_is_cancelled_at_the_deadline(tmp_path: Path):
    coord = Coordinator(tmp_path, header_deadline_s=1.0)
    attack = IdleUploads(f"127.0.0.1:{coord.port}", 5, None)
    try:
        codes = {call.exception().code() for call in attack.calls}  # type: ignore[union-attr]
        assert codes == {Code.DEADLINE_EXCEEDED}  # the server's deadline, not the client's
        assert coord.slots.open_count("127.0.0.1") == 0
        assert coord.throttle.refused == 5
    finally:
        attack.close()
        coord.close()


def test_a_peer_past_its_upload_cap_is_refused(tmp_path: Path):
    coord = Coordinator(tmp_path, uploads_per_peer=4)
    attack = IdleUploads(f"127.0.0.1:{coord.port}", 4, None)
    try:
        _wait_open(coord.slots, "127.0.0.1", 4)
        extra = attack.open(len(attack.calls))
        assert extra.exception().code() == Code.RESOURCE_EXHAUSTED  # type: ignore[union-attr]
        assert not any(call.done() for call in attack.calls)
        node = coord.register("site-honest")
        assert coord.heartbeat(node)
    finally:
        attack.close()
        coord.close()


def test_a_flood_of_refused_calls_leaves_bounded_records(tmp_path: Path):
    coord = Coordinator(tmp_path)
    try:
        forged = pb.PullTaskRequest(node_id="node-0001-abcdef", token="guess", wait_ms=0)
        for _ in range(300):
            with pytest.raises(grpc.RpcError) as info:
                coord.call("PullTask", forged.SerializeToString())
            assert info.value.code() == Code.UNAUTHENTICATED
        # past gRPC's message limit: cut by gRPC before a handler runs (red team 2026-12-07:
        # it buffers a message whole first, so the limit bounds what a stalled call holds)
        too_big = pb.RegisterRequest(site_name="x" * MAX_MESSAGE_BYTES).SerializeToString()
        with pytest.raises(grpc.RpcError) as info:
            coord.call("Register", too_big)
        assert info.value.code() == Code.RESOURCE_EXHAUSTED
        huge = "x" * (MAX_MESSAGE_BYTES // 2)
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as info:
                coord.register(huge)
            assert info.value.code() == Code.INVALID_ARGUMENT
            assert "at most 128" in (info.value.details() or "")
            assert len(info.value.details() or "") < 200
        assert coord.throttle.refused == 303
        assert len(coord.store.rejections()) == coord.throttle.burst
        assert coord.transport.registry.node_ids() == []
        coord.throttle.flush()
        rows = coord.store.rejections()
        assert len(rows) == coord.throttle.burst + 1
        summary = rows[-1]
        assert summary["code"] == "RATE_LIMITED" and "300 further" in summary["reason"]
    finally:
        coord.close()
    assert (tmp_path / "run" / LOG_NAME).stat().st_size < 64 * 1024


def test_a_second_registration_of_a_site_leaves_one_node(coordinator: Coordinator):
    first = coordinator.register("site-a")
    coordinator.poll(first)
    second = coordinator.register("site-a")
    assert coordinator.transport.registry.node_ids() == [second.node_id]
    assert not coordinator.heartbeat(first)
    with pytest.raises(grpc.RpcError) as info:
        coordinator.poll(first)
    assert info.value.code() == Code.UNAUTHENTICATED
    coordinator.poll(second)
    assert coordinator.transport.wait_for_nodes(1, timeout_s=0) == [second.node_id]


def _consortium(root: Path, sites: tuple[str, ...] = ("bank-a",)) -> Path:
    spec = {
        "name": "banks",
        "coordinator": {"name": "hub", "address": "127.0.0.1:8443"},
        "sites": [{"name": name} for name in sites],
        "admins": [{"name": "alice"}],
    }
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    init_consortium(root / "spec.yaml", root / "banks")
    return root / "banks" / "kits"


def _kit_server(kits: Path, **options: Any) -> tuple[GrpcTransport, LoopServer, str]:
    """A coordinator's server in kit mode (mTLS, the gate): transport, server, target."""
    hub = load_kit(kits / "hub")
    transport = GrpcTransport(run_id="r1")
    registry = transport.registry
    gate = PeerGate(
        Revocation.from_kit(hub),
        site_of_node=lambda node: registry.site_name(node) if registry.get(node) else None,
    )
    server = build_server(transport, max_workers=4, gate=gate, **options)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(hub))
    server.start()
    return transport, server, f"localhost:{port}"


def test_kit_mode_checks_the_certificate_before_the_header(tmp_path: Path):
    kits = _consortium(tmp_path)
    slots = PeerSlots(3)
    transport, server, target = _kit_server(kits, slots=slots)
    registry = transport.registry
    observer = IdleUploads(target, 3, channel_credentials(load_kit(kits / "alice")))
    site = IdleUploads(target, 3, channel_credentials(load_kit(kits / "bank-a")))
    stub = grpc.secure_channel(target, channel_credentials(load_kit(kits / "bank-a")))
    try:
        register = stub.unary_unary(
            f"/{SERVICE}/Register",
            request_serializer=pb.RegisterRequest.SerializeToString,
            response_deserializer=pb.RegisterResponse.FromString,
        )
        request = pb.RegisterRequest(protocol_version=PROTOCOL_VERSION, num_train_examples=1)
        register(request, timeout=CALL_S)
        second = register(request, timeout=CALL_S)  # the certificate is the site: one node
        assert registry.node_ids() == [second.node_id]
        assert registry.site_name(second.node_id) == "bank-a"
        # an admin may not train: refused with nothing sent, long before any deadline
        for call in observer.calls:
            assert call.exception().code() == Code.PERMISSION_DENIED  # type: ignore[union-attr]
        _wait_open(slots, "cert:bank-a", 3)
        extra = site.open(len(site.calls))  # past the site's cap
        assert extra.exception().code() == Code.RESOURCE_EXHAUSTED  # type: ignore[union-attr]
    finally:
        observer.close()
        site.close()
        stub.close()
        transport.close(grace_s=0)
        server.stop(grace=0).wait(5)


def test_one_certified_site_may_hold_only_a_few_parked_polls(tmp_path: Path):
    """A certificate holder that parks poll after poll (each holds memory and a wake-up)
    is refused past its per-site cap; another site is served all the while."""
    kits = _consortium(tmp_path, sites=("bank-a", "bank-b"))
    limits = CallLimits.per_peer(MAX_CALLS_PER_SITE)
    transport, server, target = _kit_server(kits, limits=limits)
    channels = {
        name: grpc.secure_channel(target, channel_credentials(load_kit(kits / name)))
        for name in ("bank-a", "bank-b")
    }
    try:
        calls = {name: _calls(channel) for name, channel in channels.items()}
        nodes = {
            name: c["register"](
                pb.RegisterRequest(protocol_version=PROTOCOL_VERSION, num_train_examples=1),
                timeout=CALL_S,
            )
            for name, c in calls.items()
        }
        a = nodes["bank-a"]
        poll = pb.PullTaskRequest(node_id=a.node_id, token=a.token, wait_ms=30_000)
        pull = calls["bank-a"]["pull"]
        parked = [pull.future(poll, timeout=CALL_S) for _ in range(MAX_CALLS_PER_SITE)]
        _wait_open(limits.polls, "cert:bank-a", MAX_CALLS_PER_SITE)
        with pytest.raises(grpc.RpcError) as info:
            pull(poll, timeout=CALL_S)
        assert info.value.code() == Code.RESOURCE_EXHAUSTED
        assert "task polls already open from this peer" in info.value.details()
        b = nodes["bank-b"]
        beat = pb.HeartbeatRequest(node_id=b.node_id, token=b.token)
        assert calls["bank-b"]["heartbeat"](beat, timeout=CALL_S) is not None
        for call in parked:
            call.cancel()
    finally:
        for channel in channels.values():
            channel.close()
        transport.close(grace_s=0)
        server.stop(grace=0).wait(5)


def _calls(channel: grpc.Channel) -> dict[str, Any]:
    def unary(method: str, request: Any, response: Any) -> Any:
        return channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )

    return {
        "register": unary("Register", pb.RegisterRequest, pb.RegisterResponse),
        "pull": unary("PullTask", pb.PullTaskRequest, pb.Task),
        "heartbeat": unary("Heartbeat", pb.HeartbeatRequest, pb.HeartbeatResponse),
    }


def test_trickled_uploads_holding_every_pool_thread_leave_heartbeats_served(tmp_path: Path):
    """Red team 2 (issue 17): nodes given a task opened uploads with a valid header and then
    sent a byte a second; every pool thread was held and honest nodes were declared dead.
    Heartbeats are now served on the event loop, and a trickle is cut by the rate check."""
    import numpy as np

    from fedops.core.params import specs_of, total_bytes
    from fedops.wire import codec

    coord = Coordinator(tmp_path, pool=2)
    release = threading.Event()
    try:
        honest = coord.register("site-honest")
        attackers = [coord.register(f"site-evil-{i}") for i in range(2)]
        params = {"w": np.zeros(64, np.float32)}
        ids = coord.transport.dispatch(
            1, [a.node_id for a in attackers], Instruction(phase=Phase.FIT, params=params)
        )
        headers = []
        for node in attackers:
            task = coord.poll(node)
            assert task.task_id == ids[node.node_id]
            header = pb.ResultHeader(
                node_id=node.node_id, token=node.token, run_id=coord.transport.run_id,
                round=1, task_id=task.task_id, kind=task.kind, num_examples=1,
                tensors=codec.specs_to_proto(specs_of(params)),
                total_bytes=total_bytes(specs_of(params)),
            )  # fmt: skip
            headers.append(pb.PushResultRequest(header=header).SerializeToString())

        def trickle(head: bytes) -> Iterator[bytes]:
            yield head
            release.wait(30)  # the payload never comes (a byte a minute, say)

        push = coord.channel.stream_unary(
            f"/{SERVICE}/PushResult", request_serializer=_raw, response_deserializer=_raw
        )
        uploads = [push.future(trickle(h), timeout=60) for h in headers]
        deadline = time.monotonic() + 20
        held = coord.transport._node_uploads.open_count
        while held(attackers[0].node_id) + held(attackers[1].node_id) < 2:
            assert time.monotonic() < deadline, "the uploads never reached the server"
            time.sleep(0.05)
        assert held(attackers[0].node_id) + held(attackers[1].node_id) == 2  # both threads held
        for _ in range(5):  # still served, and quickly
            started = time.monotonic()
            assert coord.heartbeat(honest)
            assert time.monotonic() - started < CALL_S
        release.set()
        for upload in uploads:
            assert upload.exception(timeout=30) is not None  # cut off, never accepted
    finally:
        release.set()
        coord.close()
