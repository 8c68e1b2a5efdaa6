"""The coordinator's side of the wire: tasks waiting for pull, results coming in.

Clients dial out, so "sending" a task means leaving it where the node's next
``PullTask`` finds it, and "receiving" a result means a ``PushResult`` call
that passes every check before it becomes an event for the driver. Every
refusal carries a gRPC status and a reason, is reported to ``on_rejection``
(which the coordinator rate-limits per offender: :mod:`fedops.coordinator.peer_guard`),
and (when it answers the node's current task) tells the round to stop waiting
for that node. One node per site: a site registering again replaces its node
(:mod:`fedops.coordinator.registration`). Results are taken by
:mod:`fedops.coordinator.result_intake`; both are handed the task board and the refusals,
which stay the transport's.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc

from fedops.coordinator.nodes import DEFAULT_MAX_NODES, NodeRegistry
from fedops.coordinator.peer_guard import (
    REGISTER_PEER_BURST,
    REGISTER_PEER_EVERY_S,
    PeerSlots,
    RateLimit,
)
from fedops.coordinator.registration import NodeRegistration
from fedops.coordinator.result_intake import (
    TRAINING_STAGE,
    UPLOADS_PER_NODE,
    Assignment,
    Gatekeeper,
    ResultIntake,
    TaskBoard,
)
from fedops.core.params import Params, TensorSpec, specs_of, total_bytes
from fedops.core.params import model_digest as digest_once
from fedops.core.results import FitResult
from fedops.core.rounds import Event, NodeDropped, Phase, ResultArrived
from fedops.runtime.transport import Instruction
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import codec, monitoring, phases
from fedops.wire import secagg as secagg_codec
from fedops.wire.codec import shown
from fedops.wire.training import train_to_proto

log = logging.getLogger("fedops.coordinator")


MAX_POLL_S = 10.0

#: how often the coordinator says whom it waits for while below --min-clients
WAITING_LOG_S = 10.0


class GrpcTransport:
    """Coordinator state shared by the gRPC handlers and the round driver.

    Args:
        run_id: the run this coordinator serves; results for others are refused.
        heartbeat_interval_s: how often agents should heartbeat.
        liveness_timeout_s: a node silent this long while holding a task is
            declared dropped, so a killed client never stalls a round.
        max_chunk_bytes: chunk size for model downloads (told to clients).
        on_rejection: ``(round, node_id, code, reason)`` for the run store.
        audit: ``(event, payload)`` for the coordinator's audit log: joins,
            models sent and updates received, each with its digest.
        audit_head: the coordinator log's ``(seq, hash)``, sent with every task for the
            sites to anchor (:mod:`fedops.core.audit.anchor`).
        max_nodes: live nodes at most (``--max-nodes``); a new site past it is refused.

    ``crl`` (set in kit mode) returns the CA-signed CRL in force, sent with every
    task so that sites refuse a revoked site's SecAgg+ keys
    (:class:`fedops.consortium.crl.DeliveredCrl`).
    """

    def __init__(
        self,
        *,
        run_id: str,
        heartbeat_interval_s: float = 2.0,
        liveness_timeout_s: float = 10.0,
        max_chunk_bytes: int = codec.DEFAULT_CHUNK_BYTES,
        on_rejection: Callable[[int, str, str, str], None] = lambda *a: None,
        audit: Callable[[str, Mapping[str, Any]], None] = lambda event, payload: None,
        audit_head: Callable[[], tuple[int, str]] | None = None,
        max_nodes: int = DEFAULT_MAX_NODES,
    ) -> None:
        self.run_id = run_id
        self.heartbeat_interval_s = heartbeat_interval_s
        self.liveness_timeout_s = liveness_timeout_s
        self.max_chunk_bytes = max_chunk_bytes
        self.on_rejection = on_rejection
        self.audit = audit
        self.audit_head = audit_head
        self.crl: Callable[[], bytes | None] | None = None
        #: the run's model (from the coordinator's task): a site building another is refused
        self.model_specs: list[TensorSpec] | None = None
        self.registry = NodeRegistry(max_nodes)
        self.registrations = RateLimit(max_keys=2 * max_nodes)  # per peer and site name
        self.peer_registrations = RateLimit(
            burst=REGISTER_PEER_BURST, every_s=REGISTER_PEER_EVERY_S
        )  # per peer, under any names
        self._cond = threading.Condition()
        self._assignments: dict[str, Assignment] = {}
        self._answered: set[str] = set()
        self._node_uploads = PeerSlots(UPLOADS_PER_NODE, "uploads of this node")
        self._events: queue.Queue[Event] = queue.Queue()
        self._closed = False
        self._ended = "the run is complete"  # what SHUTDOWN says (close: how the run ended)
        self._round = 0
        self._task_counter = 0
        self._last_dispatched: tuple[Params, str] | None = None
        self._posted: list[Callable[[Collection[str] | None], None]] = []
        # read when a call is refused: app.py installs its throttle after construction
        self._gate = Gatekeeper(
            registry=self.registry,
            report=lambda *refusal: self.on_rejection(*refusal),
            current_round=lambda: self._round,
        )
        board = TaskBoard(
            cond=self._cond,
            assignments=self._assignments,
            answered=self._answered,
            events=self._events,
            post=self._post,
        )

        # the audit log is read at each call, as dispatch() reads it: one log per transport
        def record(event: str, payload: Mapping[str, Any]) -> None:
            self.audit(event, payload)

        self._registration = NodeRegistration(
            run_id=run_id,
            board=board,
            gate=self._gate,
            heartbeat_interval_s=heartbeat_interval_s,
            max_chunk_bytes=max_chunk_bytes,
            audit=record,
        )
        self._intake = ResultIntake(
            run_id=run_id, board=board, gate=self._gate, uploads=self._node_uploads, audit=record
        )

    # ------------------------------------------------------------------
    # Transport protocol (called by the round driver)
    # ------------------------------------------------------------------
    def wait_for_nodes(self, count: int, timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        said = time.monotonic()
        with self._cond:
            while len(self.available_nodes()) < count and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, 1.0))
                self._drop_silent()
                if time.monotonic() - said >= WAITING_LOG_S:  # say what it is waiting for
                    said = time.monotonic()
                    self._say_waiting(count, remaining)
        return self.available_nodes()

    def _say_waiting(self, count: int, remaining_s: float) -> None:
        have = [self.registry.site_name(n) for n in self.available_nodes()]
        shown = ", ".join(sorted(have)[:8]) + (" …" if len(have) > 8 else "")
        log.info(
            "waiting for %d more site(s) to start the round (have %d of --min-clients %d%s); "
            "giving up in %.0f s",
            count - len(have),
            len(have),
            count,
            f": {shown}" if have else "",
            remaining_s,
        )

    def available_nodes(self) -> list[str]:
        """Nodes that have polled for work (see :attr:`~fedops.coordinator.nodes.Node.polled`)."""
        return self.registry.node_ids(polled=True)

    def dispatch(
        self, server_round: int, nodes: Sequence[str], instruction: Instruction
    ) -> dict[str, str]:
        phase, params = instruction.phase, instruction.params
        stage, monitor = instruction.stage, instruction.monitor
        bare = stage is not None and phase is not TRAINING_STAGE
        if bare:
            params = {}  # key exchange and unmasking need no model (and no config)
        train = None
        if instruction.train is not None and (stage is None or phase is TRAINING_STAGE):
            train = train_to_proto(instruction.train)
        specs = specs_of(params)
        model_digest = ""
        if params:
            # A round evaluates the model the next round trains: digest it once, not twice.
            if self._last_dispatched is None or self._last_dispatched[0] is not params:
                # the run store checkpoints the same model: digest_once hashes it once
                self._last_dispatched = (params, digest_once(params))
            model_digest = self._last_dispatched[1]
        kind = phases.task_kind(phase)
        monitor_proto = monitoring.spec_to_proto(monitor) if monitor is not None else None
        head = self.audit_head() if self.audit_head is not None else None
        crl = self.crl() if self.crl is not None else None
        with self._cond:
            self._round = server_round
            tasks = {}
            for node in nodes:
                if self.registry.get(node) is None:  # dropped since it was selected
                    self._events.put(NodeDropped(node_id=node, reason="no longer connected"))
                    tasks[node] = ""
                    continue
                config = {} if bare else instruction.config_for(node)  # the node's own, if any
                task = self._new_task(kind, server_round, config, model_digest)
                if head is not None and head[0] >= 0:
                    task.coordinator_audit.seq, task.coordinator_audit.hash = head
                if crl:
                    task.crl = crl
                assignment = Assignment(
                    task=task, params=params, specs=specs, model_digest=model_digest
                )
                if stage is not None:
                    task.secagg.CopyFrom(secagg_codec.request_to_proto(stage.messages[node]))
                    assignment.result_specs = list(stage.result_specs)
                if train is not None:
                    task.train.CopyFrom(train)
                if monitor is not None and phase is Phase.EVALUATE:
                    task.monitor.CopyFrom(monitor_proto)
                    assignment.monitor = monitor
                self._assignments[node] = assignment
                tasks[node] = task.task_id
            self._post([node for node, task_id in tasks.items() if task_id])
        if model_digest:
            sent = sorted(n for n, t in tasks.items() if t)
            self.audit(
                "model_sent",
                {
                    "round": server_round,
                    "phase": str(phase),
                    "model_digest": model_digest,
                    "nodes": sent,
                },
            )
        return tasks

    def next_event(self, timeout_s: float) -> Event | None:
        deadline = time.monotonic() + timeout_s
        while True:
            with self._cond:
                self._drop_silent()
            try:
                return self._events.get(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return None

    def fetch_initial_params(self, timeout_s: float) -> Params:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            nodes = self.wait_for_nodes(1, deadline - time.monotonic())
            if not nodes:
                break
            node = nodes[0]
            with self._cond:
                task = self._new_task(pb.TASK_KIND_SEND_INITIAL, 0, {}, "")
                self._assignments[node] = Assignment(
                    task=task, params={}, specs=[], model_digest=""
                )
                self._post([node])
            while time.monotonic() < deadline:
                event = self.next_event(1.0)
                if event is None or event.node_id != node:
                    continue
                if isinstance(event, ResultArrived) and isinstance(event.result, FitResult):
                    return event.result.params
                log.warning("initial model from %s refused: %s", node, getattr(event, "reason", ""))
                break
        raise TimeoutError(f"no client sent an initial model within {timeout_s:.0f} s")

    def close(self, grace_s: float = 5.0, status: str = "completed") -> None:
        """Answer every poll with SHUTDOWN (saying how the run ended); wait (bounded) until
        nodes have heard it."""
        with self._cond:
            self._closed = True
            self._ended = "the run is complete" if status == "completed" else f"the run {status}"
            self._post(None)
        deadline = time.monotonic() + grace_s
        while self.registry.node_ids(polled=True) and time.monotonic() < deadline:
            time.sleep(0.1)

    # ------------------------------------------------------------------
    # RPC handlers' logic (called by the servicer, on gRPC threads)
    # ------------------------------------------------------------------
    def register(self, request: pb.RegisterRequest) -> pb.RegisterResponse:
        # the run's model and the rate limit as they are now: both may be set after start
        return self._registration.register(
            request, self.model_specs, self.registrations, self.peer_registrations
        )

    def heartbeat(self, request: pb.HeartbeatRequest) -> pb.HeartbeatResponse:
        return self._registration.heartbeat(request)

    def push(
        self, header: pb.ResultHeader, chunks: Iterable[bytes | memoryview]
    ) -> pb.PushResultResponse:
        """Check and take a result: ``header`` first, then the payload ``chunks``."""
        return self._intake.push(header, chunks)

    def poll(self, request: pb.PullTaskRequest) -> pb.Task | None:
        """The node's next task if there is one now (SHUTDOWN once closed), else None.

        Never blocks: the server parks an unanswered poll without holding a
        thread (see :mod:`fedops.coordinator.grpc_server`) and polls again when
        :meth:`on_task_posted`'s callback names the node.
        """
        self._gate.authenticate(request.node_id, request.token)
        with self._cond:
            if self.registry.mark_polled(request.node_id):
                self._cond.notify_all()  # one more node available: wake wait_for_nodes
            if self._closed:
                self.registry.remove(request.node_id)
                done = pb.Task(kind=pb.TASK_KIND_SHUTDOWN, run_id=self.run_id, message=self._ended)
                head = self.audit_head() if self.audit_head is not None else None
                if head is not None and head[0] >= 0:  # anchors the log to its end
                    done.coordinator_audit.seq, done.coordinator_audit.hash = head
                return done
            assignment = self._assignments.get(request.node_id)
            if assignment is not None and not assignment.delivered:
                assignment.delivered = True
                return assignment.task
        return None

    def idle_task(self) -> pb.Task:
        """The answer to a poll that waited its full time for nothing."""
        return pb.Task(kind=pb.TASK_KIND_WAIT, run_id=self.run_id, round=self._round)

    @staticmethod
    def poll_wait_s(request: pb.PullTaskRequest) -> float:
        """How long a poll may wait for a task: what the node asked, at most ``MAX_POLL_S``."""
        return min(max(request.wait_ms, 0) / 1000.0, MAX_POLL_S)

    def on_task_posted(self, callback: Callable[[Collection[str] | None], None]) -> None:
        """Have ``callback(nodes)`` called when tasks are posted (``None``: every node).

        It is called with the transport's lock held, so it must only hand the
        news on (e.g. ``loop.call_soon_threadsafe``), never call back in.
        """
        self._posted.append(callback)

    def _post(self, nodes: Collection[str] | None) -> None:
        """Wake whoever waits for ``nodes`` (lock held)."""
        self._cond.notify_all()
        for callback in self._posted:
            callback(nodes)

    def model_chunks(self, request: pb.FetchModelRequest) -> Iterator[pb.ModelChunk | bytes]:
        self._gate.authenticate(request.node_id, request.token)
        with self._cond:
            assignment = self._assignments.get(request.node_id)
        if assignment is None or assignment.task.task_id != request.task_id:
            self._gate.reject(
                self._round,
                request.node_id,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"task {shown(request.task_id)} is not this node's current task",
            )
        header = pb.ModelHeader(
            tensors=codec.specs_to_proto(assignment.specs),
            total_bytes=total_bytes(assignment.specs),
            model_digest=assignment.model_digest,
        )
        yield pb.ModelChunk(header=header)
        # pre-serialized ModelChunk{data} messages, each built in one copy
        yield from codec.iter_chunks(assignment.params, self.max_chunk_bytes, framed=True)

    # ------------------------------------------------------------------
    # helpers
    # ------------------------------------------------------------------
    def _new_task(
        self, kind: int, server_round: int, config: Mapping[str, float], model_digest: str
    ) -> pb.Task:
        self._task_counter += 1
        return pb.Task(
            kind=kind,
            run_id=self.run_id,
            round=server_round,
            task_id=f"{self.run_id}-{server_round}-{self._task_counter}",
            config={k: float(v) for k, v in config.items()},
            model_digest=model_digest,
        )

    def _drop_silent(self) -> None:
        """Declare nodes dropped after ``liveness_timeout_s`` of silence (lock held)."""
        for node in self.registry.silent_since(self.liveness_timeout_s):
            self.registry.remove(node)
            assignment = self._assignments.pop(node, None)
            if assignment is not None:
                self._events.put(
                    NodeDropped(node_id=node, reason=f"silent for {self.liveness_timeout_s:.0f} s")
                )
            log.warning("node %s dropped: silent for %.0f s", node, self.liveness_timeout_s)
