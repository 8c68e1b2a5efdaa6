"""A registration whose reply was lost must not become a node the rounds wait for."""

from __future__ import annotations

from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.core.rounds import Phase
from fedops.runtime.transport import Instruction
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import PROTOCOL_VERSION


def _register(transport: GrpcTransport, site: str) -> pb.RegisterResponse:
    return transport.register(
        pb.RegisterRequest(protocol_version=PROTOCOL_VERSION, site_name=site, num_train_examples=5)
    )


def test_only_nodes_that_polled_are_available_for_rounds():
    transport = GrpcTransport(run_id="r1")
    ghost = _register(transport, "site-a")  # the agent timed out before this reply arrived
    live = _register(transport, "site-a")  # ...and registered again
    assert transport.available_nodes() == []
    assert transport.wait_for_nodes(1, timeout_s=0.05) == []
    task = transport.poll(pb.PullTaskRequest(node_id=live.node_id, token=live.token))
    assert task is None  # nothing to do yet, but the node is now known to be listening
    assert transport.available_nodes() == [live.node_id]
    assert ghost.node_id not in transport.registry.node_ids()  # one node per site


def test_a_poll_takes_a_posted_task_once_and_shutdown_after_close():
    transport = GrpcTransport(run_id="r1")
    node = _register(transport, "site-a")
    request = pb.PullTaskRequest(node_id=node.node_id, token=node.token)
    assert transport.poll(request) is None
    woken: list[object] = []
    transport.on_task_posted(woken.append)
    tasks = transport.dispatch(1, [node.node_id], Instruction(phase=Phase.EVALUATE, params={}))
    assert woken == [[node.node_id]]
    first = transport.poll(request)
    assert first is not None and first.task_id == tasks[node.node_id]
    assert transport.poll(request) is None  # delivered once
    transport.close(grace_s=0)
    assert woken[-1] is None  # every parked poll is woken for the shutdown
    final = transport.poll(request)
    assert final is not None and final.kind == pb.TASK_KIND_SHUTDOWN


def test_a_site_registering_again_replaces_its_node_and_closes_its_task():
    transport = GrpcTransport(run_id="r1")
    old = _register(transport, "site-a")
    other = _register(transport, "site-b")
    for node in (old, other):
        transport.poll(pb.PullTaskRequest(node_id=node.node_id, token=node.token))
    transport.dispatch(
        1, [old.node_id, other.node_id], Instruction(phase=Phase.EVALUATE, params={})
    )
    new = _register(transport, "site-a")  # the site restarted: same name, a new node
    assert sorted(transport.registry.node_ids()) == sorted([new.node_id, other.node_id])
    dropped = transport.next_event(0.1)
    assert dropped is not None and dropped.node_id == old.node_id
    assert "replaced" in getattr(dropped, "reason", "")
    refused = transport.heartbeat(pb.HeartbeatRequest(node_id=old.node_id, token=old.token))
    assert not refused.known
    transport.poll(pb.PullTaskRequest(node_id=new.node_id, token=new.token))
    assert sorted(transport.available_nodes()) == sorted([new.node_id, other.node_id])
    assert transport.registry.site_name(old.node_id) == "site-a"  # still named in the records
