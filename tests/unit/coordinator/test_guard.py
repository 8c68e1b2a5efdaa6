"""Refusal accounting, name bounds and peer keys (issue 17, finding 2), without a network."""

from __future__ import annotations

import grpc
import pytest

from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.coordinator.peer_guard import (
    PEER,
    REGISTER_BURST,
    REGISTER_EVERY_S,
    PeerSlots,
    RateLimit,
    RefusalThrottle,
    address_of,
    check_site_name,
    network_of,
)
from fedops.coordinator.result_intake import ANSWERS_TASK, Reject
from fedops.runtime.transport import Instruction
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import PROTOCOL_VERSION


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _throttle(rows: list[tuple[int, str, str, str]], clock: Clock, **kw: object) -> RefusalThrottle:
    return RefusalThrottle(lambda *row: rows.append(row), clock=clock, **kw)  # type: ignore[arg-type]


def test_an_offender_gets_a_burst_then_one_counted_row_per_interval():
    rows: list[tuple[int, str, str, str]] = []
    clock = Clock()
    throttle = _throttle(rows, clock, burst=2, interval_s=60)
    token = PEER.set("10.0.0.9")
    try:
        for _ in range(1000):
            throttle(0, "?", "INVALID_ARGUMENT", "malformed")
        assert len(rows) == 2
        clock.now = 61  # the next interval: last interval's count first, then the new refusal
        throttle(0, "?", "UNAUTHENTICATED", "bad token")
    finally:
        PEER.reset(token)
    assert len(rows) == 4
    assert rows[2][1:3] == ("peer:10.0.0.9", "RATE_LIMITED")
    assert "998 further" in rows[2][3] and "INVALID_ARGUMENT x998" in rows[2][3]
    assert rows[3][2] == "UNAUTHENTICATED"
    assert throttle.refused == 1001


def test_claimed_node_ids_do_not_make_new_offenders():
    rows: list[tuple[int, str, str, str]] = []
    throttle = _throttle(rows, Clock(), burst=1, is_node=lambda node: node == "node-real")
    token = PEER.set("10.0.0.9")
    try:
        for i in range(50):  # a different forged node id on every call: one offender
            throttle(0, f"node-{i}", "UNAUTHENTICATED", "wrong token")
        throttle(3, "node-real", "FAILED_PRECONDITION", "stale result")  # authenticated: its own
        throttle(3, "node-real", "UNAUTHENTICATED", "wrong token")  # not proven: the peer's
    finally:
        PEER.reset(token)
    assert [r[1] for r in rows] == ["node-0", "node-real"]
    throttle.flush()
    assert rows[-1][1] == "peer:10.0.0.9" and "50 further" in rows[-1][3]


def test_many_offenders_stay_bounded():
    rows: list[tuple[int, str, str, str]] = []
    throttle = _throttle(rows, Clock(), burst=1, max_offenders=10)
    for i in range(100):
        token = PEER.set(f"10.0.0.{i}")
        try:
            throttle(0, "?", "UNAUTHENTICATED", "x")
            throttle(0, "?", "UNAUTHENTICATED", "x")
        finally:
            PEER.reset(token)
    assert len(throttle._windows) <= 10
    throttle.flush()
    refused_rows = sum(1 for r in rows if r[2] == "UNAUTHENTICATED")
    counted = sum(int(r[3].split()[0]) for r in rows if r[2] == "RATE_LIMITED")
    assert refused_rows + counted == 200  # every refusal is either written or counted


@pytest.mark.parametrize("name", ["bank-a", "site-0", "Hospital_3.north", "a@b+c"])
def test_plain_site_names_pass(name: str):
    check_site_name(name)


@pytest.mark.parametrize(
    "name", ["x" * 129, "x" * (16 << 20), "", "-lead", "a b", "a/b", "é", "a\nb", "a\x00"]
)
def test_long_or_odd_site_names_are_refused_without_echo(name: str):
    with pytest.raises(Reject) as info:
        check_site_name(name)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(info.value.reason) < 200


def test_registration_refuses_a_huge_name_and_keeps_nothing():
    refusals: list[tuple[int, str, str, str]] = []
    transport = GrpcTransport(run_id="r1", on_rejection=lambda *r: refusals.append(r))
    request = pb.RegisterRequest(protocol_version=PROTOCOL_VERSION, site_name="x" * (16 << 20))
    with pytest.raises(Reject):
        transport.register(request)
    assert transport.registry.node_ids() == []
    assert len(refusals) == 1 and len(refusals[0][3]) < 200


def test_a_registration_flood_under_new_names_stays_bounded():
    """Issue 17, finding 2: without a kit anyone registers under any name; live nodes are
    capped (a new site past the cap is refused, a known one may register again) and the
    names of removed nodes, kept for the records, are bounded too."""
    events: list[str] = []
    transport = GrpcTransport(
        run_id="r1", max_nodes=5, audit=lambda event, payload: events.append(event)
    )
    now = [0.0]
    transport.registrations = RateLimit(clock=lambda: now[0])

    def register(name: str) -> pb.RegisterResponse:
        return transport.register(
            pb.RegisterRequest(protocol_version=PROTOCOL_VERSION, site_name=name)
        )

    for i in range(5):
        register(f"site-{i}")
    with pytest.raises(Reject) as refused:
        register("flood-0")
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-nodes" in refused.value.reason
    assert register("site-3").node_id  # a known site registers again: replaced, not refused
    assert len(transport.registry.node_ids()) == 5
    # one site re-registering in a loop: refused past a burst, so its audit entries (each
    # signed and fsynced) stay bounded; it was told when it may come back
    for _ in range(200):
        try:
            register("site-1")
        except Reject as exc:
            assert exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "may register again in 10 s" in exc.reason
    assert events.count("node_joined") == 5 + 1 + (REGISTER_BURST - 1)  # site-1 spent one
    for _ in range(200):  # spaced out, re-registrations churn node ids: records stay bounded
        now[0] += REGISTER_EVERY_S
        register("site-1")
    assert len(transport.registry._site_names) <= 4 * 5
    assert events.count("node_joined") == 5 + 1 + (REGISTER_BURST - 1) + 200


def test_a_flood_under_fresh_names_is_limited_per_peer():
    """Red team 2026-12-07: keyed by peer and name, registrations under a fresh name each
    time were never limited (439 signed, fsynced audit entries a second from one peer). A
    peer now has its own budget under any names; another peer keeps its own."""
    events: list[str] = []
    transport = GrpcTransport(run_id="r1", audit=lambda event, payload: events.append(event))
    clock = Clock()
    transport.peer_registrations = RateLimit(burst=10, every_s=0.5, clock=clock)

    def register(peer: str, name: str) -> pb.RegisterResponse:
        token = PEER.set(peer)
        try:
            return transport.register(
                pb.RegisterRequest(protocol_version=PROTOCOL_VERSION, site_name=name)
            )
        finally:
            PEER.reset(token)

    for i in range(10):
        register("10.0.0.9", f"sybil-{i}")
    with pytest.raises(Reject) as refused:
        register("10.0.0.9", "sybil-10")
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "this peer's network registered 10 nodes" in refused.value.reason
    assert "may register again in 0.5 s" in refused.value.reason
    # another address of the same /24 shares the budget (red team: 8 loopback addresses
    # were 8 budgets); another network does not
    with pytest.raises(Reject):
        register("10.0.0.77", "sybil-from-a-neighbour")
    assert register("10.0.1.5", "honest").node_id
    clock.now += 0.5
    assert register("10.0.0.9", "sybil-11").node_id  # the bucket refills
    assert events.count("node_joined") == 12


@pytest.mark.parametrize(
    ("peer", "network"),
    [
        ("10.0.0.9", "10.0.0.0/24"),
        ("127.0.0.11", "127.0.0.0/24"),
        ("2001:db8::1", "2001:db8::/64"),
        ("cert:bank-a", "cert:bank-a"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
    ],
)
def test_a_peer_budget_is_kept_per_network(peer: str, network: str):
    assert network_of(peer) == network


class _Context:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("ipv4:10.0.0.5:4711", "10.0.0.5"),
        ("ipv6:[::1]:50000", "::1"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
    ],
)
def test_a_peer_is_its_host_not_its_port(peer: str, key: str):
    assert address_of(_Context(peer)) == key  # type: ignore[arg-type]


def test_slots_refuse_past_the_limit_and_free_on_exit():
    slots = PeerSlots(1)
    with slots.hold("p"):
        with pytest.raises(Reject) as info, slots.hold("p"):
            pass
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        with slots.hold("q"):
            assert slots.open_count("q") == 1
    assert slots.open_count("p") == 0


def test_fresh_addresses_share_one_budget():
    rows: list[tuple[int, str, str, str]] = []
    throttle = _throttle(rows, Clock(), burst=2, max_written=10)
    for i in range(1000):  # an attacker with a thousand source addresses
        token = PEER.set(f"2001:db8::{i:x}")
        try:
            throttle(0, "?", "UNAUTHENTICATED", "x")
        finally:
            PEER.reset(token)
    assert len(rows) <= 10 + 2
    throttle.flush()
    assert sum(1 for r in rows if r[2] == "RATE_LIMITED") == 1  # the shared offender "*"


def test_a_refusal_that_closes_a_task_is_always_written():
    rows: list[tuple[int, str, str, str]] = []
    throttle = _throttle(rows, Clock(), burst=1, is_node=lambda node: True)
    throttle(1, "node-a", "ALREADY_EXISTS", "replayed")
    throttle(1, "node-a", "ALREADY_EXISTS", "replayed")  # counted, not written
    token = ANSWERS_TASK.set(True)
    try:
        for r in (1, 2, 3):
            throttle(r, "node-a", "INVALID_ARGUMENT", "update rejected")
    finally:
        ANSWERS_TASK.reset(token)
    assert [row[0] for row in rows] == [1, 1, 2, 3]


def test_a_rate_limit_allows_a_burst_then_one_per_interval_per_key():
    now = [100.0]
    limit = RateLimit(burst=3, every_s=10.0, max_keys=4, clock=lambda: now[0])
    assert [limit.wait_s("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.wait_s("a") == pytest.approx(10.0)
    assert limit.wait_s("b") == 0.0  # keys are independent
    now[0] += 4.0
    assert limit.wait_s("a") == pytest.approx(6.0)  # refused calls earn nothing back
    now[0] += 6.0
    assert limit.wait_s("a") == 0.0 and limit.wait_s("a") > 0
    now[0] += 1000.0  # a long quiet spell refills to the burst, never past it
    assert [limit.wait_s("a") for _ in range(4)][-1] > 0
    for key in "cdefgh":  # past max_keys the oldest are forgotten: the map stays bounded
        limit.wait_s(key)
    assert len(limit._buckets) <= 4


def test_one_node_may_hold_only_two_upload_threads_and_a_trickle_is_cut():
    """Red team (issue 17): uploads that send their payload slowly held the coordinator's
    pool threads (one per upload, any number per node) until honest heartbeats failed."""
    import threading

    import numpy as np

    from fedops.coordinator.result_intake import UPLOADS_PER_NODE, _within
    from fedops.core.params import InvalidUpdate, specs_of, total_bytes
    from fedops.core.rounds import Phase
    from fedops.wire import codec

    transport = GrpcTransport(run_id="r1")
    reply = transport.register(pb.RegisterRequest(protocol_version=PROTOCOL_VERSION, site_name="a"))
    params = {"w": np.zeros(4, np.float32)}
    ids = transport.dispatch(1, [reply.node_id], Instruction(phase=Phase.FIT, params=params))
    task = transport.poll(pb.PullTaskRequest(node_id=reply.node_id, token=reply.token))
    assert task is not None and task.task_id == ids[reply.node_id]
    header = pb.ResultHeader(
        node_id=reply.node_id, token=reply.token, run_id="r1", round=1, task_id=task.task_id,
        kind=task.kind, num_examples=1, tensors=codec.specs_to_proto(specs_of(params)),
        total_bytes=total_bytes(specs_of(params)),
    )  # fmt: skip
    release = threading.Event()
    started = threading.Semaphore(0)

    def stalled():
        started.release()
        release.wait(10)
        raise InvalidUpdate("the upload was cut off before its end")
        yield b""  # (a generator that never sends a chunk)

    def push() -> None:
        with pytest.raises(Reject):
            transport.push(header, stalled())

    holders = [threading.Thread(target=push) for _ in range(UPLOADS_PER_NODE)]
    for thread in holders:
        thread.start()
    for _ in holders:
        assert started.acquire(timeout=10)
    with pytest.raises(Reject) as third:
        transport.push(header, iter([]))
    assert third.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2 uploads of this node already open from this peer" in third.value.reason
    release.set()
    for thread in holders:
        thread.join(10)
    assert transport._node_uploads.open_count(reply.node_id) == 0  # all given back
    with pytest.raises(InvalidUpdate, match="took longer than"):
        list(_within(iter([b"x"]), budget_s=-1.0))
    assert list(_within(iter([b"x", b"y"]), budget_s=60.0)) == [b"x", b"y"]


def test_an_upload_below_the_slowest_rate_is_cut_after_the_grace(monkeypatch):
    from fedops.coordinator import result_intake as results
    from fedops.core.params import InvalidUpdate

    clock = iter([0.0, 50.0, 90.0, 90.0])  # start, a chunk inside the grace, one past it
    monkeypatch.setattr(results.time, "monotonic", lambda: next(clock))
    chunks = results._within(iter([b"a" * 10, b"b" * 10]), budget_s=3600.0)
    assert next(chunks) == b"a" * 10  # 10 bytes in 50 s: still inside the grace
    with pytest.raises(InvalidUpdate, match="sent 20 bytes in 90 s: slower than 64 KiB/s"):
        next(chunks)
    # an honest upload on a slow link (32 KiB/s), inside the first minute, is never cut
    clock = iter([0.0, 30.0, 31.0])
    slow = results._within(iter([b"x" * (32 * 1024 * 30), b"y"]), budget_s=3600.0)
    assert len(list(slow)) == 2


def test_a_site_building_another_model_is_refused_at_registration_naming_both():
    """Issue 18 #8: a site whose task built another architecture joined, and the round
    failed on it later ("silent for 10 s")."""
    from fedops.core.params import TensorSpec
    from fedops.wire import codec

    transport = GrpcTransport(run_id="r1")
    ours = [TensorSpec(name="w", dtype="float32", shape=(10, 64)),
            TensorSpec(name="b", dtype="float32", shape=(10,))]  # fmt: skip
    transport.model_specs = ours

    def register(specs: list[TensorSpec], name: str) -> pb.RegisterResponse:
        return transport.register(
            pb.RegisterRequest(
                protocol_version=PROTOCOL_VERSION, site_name=name, model=codec.specs_to_proto(specs)
            )
        )

    assert register(ours, "a").node_id
    assert register([], "b").node_id  # an agent that does not say: checked later, as before
    for specs, words in (
        ([ours[0], TensorSpec(name="b", dtype="float32", shape=(3,))],
         "it has b float32 [3] where the run has b float32 [10]"),
        ([ours[0]], "it has no tensor 'b' (the run's: b float32 [10])"),
        ([*ours, TensorSpec(name="extra", dtype="float32", shape=(1,))],
         "it has tensors the run's model lacks: 'extra'"),
    ):  # fmt: skip
        with pytest.raises(Reject) as refused:
            register(specs, "c")
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert words in refused.value.reason and "same --task" in refused.value.reason
