"""Sites joining: who may register a node, and the heartbeats that keep it known.

The registering half of :class:`~fedops.coordinator.grpc_transport.GrpcTransport`, split
from its task board so that each file holds one concern. It is given the board and the
transport's way of refusing, and with each registration the settings the coordinator
may replace after building the transport (the run's model, the rate limit), so it keeps
no copy that could go stale. A registration is refused before it reaches the registry,
the audit log or the store when its protocol, its record count, its site name or its
model is not this run's, or when the site loops on registering (each one is a signed
audit entry).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

from fedops.coordinator.nodes import RegistryFull, Unauthenticated
from fedops.coordinator.peer_guard import PEER, RateLimit, check_site_name, network_of
from fedops.coordinator.result_intake import Gatekeeper, Reject, TaskBoard
from fedops.core.params import InvalidUpdate, TensorSpec
from fedops.core.results import MAX_NUM_EXAMPLES
from fedops.core.rounds import NodeDropped
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import PROTOCOL_VERSION, codec
from fedops.wire.codec import shown

log = logging.getLogger("fedops.coordinator")


class NodeRegistration:
    """Registration and heartbeats, for :class:`~fedops.coordinator.grpc_transport.GrpcTransport`,
    given only what a registration may touch, so that its checks read on their own.

    Args:
        run_id: the run served (told to each node that registers).
        board: the transport's task board: a site's previous node loses its task.
        gate: refuses on the transport's behalf; its registry holds the nodes.
        heartbeat_interval_s: how often agents should heartbeat.
        max_chunk_bytes: chunk size for model downloads (told to clients).
        audit: ``(event, payload)`` for the coordinator's audit log.
    """

    def __init__(
        self,
        *,
        run_id: str,
        board: TaskBoard,
        gate: Gatekeeper,
        heartbeat_interval_s: float,
        max_chunk_bytes: int,
        audit: Callable[[str, Mapping[str, Any]], None],
    ) -> None:
        self._run_id = run_id
        self._board = board
        self._gate = gate
        self._heartbeat_interval_s = heartbeat_interval_s
        self._max_chunk_bytes = max_chunk_bytes
        self._audit = audit

    def register(
        self,
        request: pb.RegisterRequest,
        model_specs: Sequence[TensorSpec] | None,
        registrations: RateLimit,
        peer_registrations: RateLimit,
    ) -> pb.RegisterResponse:
        """Admit a site's node, or refuse it (``model_specs``: the run's model, if known)."""
        site = self._checked_site(request)
        self._check_model(request, model_specs)
        # keyed by caller and name: without a kit, a stranger looping on a site's name
        # must not use up that site's own registrations
        wait_s = registrations.wait_s(f"{PEER.get()}|{site}")
        if wait_s:  # each registration is a signed audit entry: one site may not loop on it
            self._gate.reject(
                0,
                "?",
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"site {site!r} registered {registrations.burst} times in a short while; "
                f"it may register again in {wait_s:.0f} s",
            )
        wait_s = peer_registrations.wait_s(network_of(PEER.get()))
        if wait_s:  # fresh names each time: the peer network's own budget
            self._gate.reject(
                0,
                "?",
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this peer's network registered {peer_registrations.burst} nodes in a short "
                "while; "
                f"it may register again in {wait_s:.1f} s",
            )
        with self._board.cond:
            try:
                node, replaced = self._gate.registry.register(site, request.num_train_examples)
            except RegistryFull as exc:
                self._gate.reject(0, "?", grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            if replaced is not None:
                self._drop_replaced(replaced, site)
        log.info(
            "registered %s (site %r, %d examples)",
            node.node_id,
            node.site_name,
            node.num_train_examples,
        )
        self._audit("node_joined", {"node_id": node.node_id, "site": node.site_name})
        return pb.RegisterResponse(
            node_id=node.node_id,
            token=node.token,
            run_id=self._run_id,
            heartbeat_interval_ms=int(self._heartbeat_interval_s * 1000),
            max_chunk_bytes=self._max_chunk_bytes,
        )

    def _checked_site(self, request: pb.RegisterRequest) -> str:
        """The request's site name, once its protocol, run, size and name are acceptable."""
        if request.protocol_version != PROTOCOL_VERSION:
            self._gate.reject(
                0,
                "?",
                grpc.StatusCode.FAILED_PRECONDITION,
                f"protocol {shown(request.protocol_version)} is not supported; "
                f"this coordinator speaks {PROTOCOL_VERSION!r}",
            )
        if request.run_id and request.run_id != self._run_id:  # a standing site's other run
            self._gate.reject(
                0,
                "?",
                grpc.StatusCode.FAILED_PRECONDITION,
                f"run {shown(request.run_id)} is not the run served here ({self._run_id})",
            )
        if not 0 <= request.num_train_examples <= MAX_NUM_EXAMPLES:
            self._gate.reject(
                0,
                "?",
                grpc.StatusCode.INVALID_ARGUMENT,
                f"num_train_examples {request.num_train_examples} is out of range",
            )
        site = request.site_name or "anonymous"
        try:  # bounded before it reaches the registry, the audit log or the store
            check_site_name(site)
        except Reject as exc:
            self._gate.reject(0, "?", exc.code, exc.reason)
        return site

    def heartbeat(self, request: pb.HeartbeatRequest) -> pb.HeartbeatResponse:
        try:
            self._gate.registry.authenticate(request.node_id, request.token)
        except Unauthenticated:
            return pb.HeartbeatResponse(known=False)
        return pb.HeartbeatResponse(known=True)

    def _check_model(
        self, request: pb.RegisterRequest, model_specs: Sequence[TensorSpec] | None
    ) -> None:
        """A site whose task builds another architecture is refused now, naming both,
        not after a round's download fails on it."""
        if model_specs is None or not request.model:
            return
        try:
            theirs = codec.specs_from_proto(request.model)
        except InvalidUpdate as exc:
            self._gate.reject(0, "?", grpc.StatusCode.INVALID_ARGUMENT, f"model specs: {exc}")
        difference = _model_difference(model_specs, theirs)
        if difference:
            self._gate.reject(
                0,
                "?",
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the site's build_model() is not this run's model: {difference} (check that "
                "the site runs the same --task as the coordinator)",
            )

    def _drop_replaced(self, node: str, site: str) -> None:
        """The site registered a new node: close the old one's task, wake its poll (lock held)."""
        log.warning("node %s replaced: site %r registered a new node", node, site)
        if self._board.assignments.pop(node, None) is not None:
            self._board.events.put(
                NodeDropped(node_id=node, reason="replaced: its site registered a new node")
            )
        self._board.post([node])


def _model_difference(ours: Sequence[TensorSpec], theirs: Sequence[TensorSpec]) -> str:
    """The first way ``theirs`` differs from ``ours`` ("" when they are the same)."""
    mine = {s.name: s for s in ours}
    other = {s.name: s for s in theirs}

    def show(spec: TensorSpec) -> str:
        return f"{spec.name} {spec.dtype} {list(spec.shape)}"

    for name, spec in mine.items():
        if name not in other:
            return f"it has no tensor {name!r} (the run's: {show(spec)})"
        if (other[name].dtype, tuple(other[name].shape)) != (spec.dtype, tuple(spec.shape)):
            return f"it has {show(other[name])} where the run has {show(spec)}"
    extra = [n for n in other if n not in mine]
    if extra:
        return f"it has tensors the run's model lacks: {', '.join(repr(n) for n in extra[:3])}"
    return ""
