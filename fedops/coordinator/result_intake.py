"""Results coming in: every check a pushed result passes before the round sees it.

Split from :mod:`fedops.coordinator.grpc_transport` (the task board) so each file
holds one side of the wire; :class:`ResultIntake` is given the board
(:class:`TaskBoard`) and the way the transport refuses a call (:class:`Gatekeeper`)
rather than reaching into it. A result must answer the node's current task
(not a replayed, stale or foreign one), may be declined with a reason, and is
assembled and checked by :func:`~fedops.coordinator.intake.read_result`;
every refusal closes the node's task, so the round stops waiting for it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from fedops.coordinator.intake import Received, read_result
from fedops.coordinator.nodes import NodeRegistry, Unauthenticated
from fedops.coordinator.refusal_log import RefusalLog
from fedops.core.audit.anchor import anchor_of
from fedops.core.monitoring.profile import MonitorSpec
from fedops.core.params import InvalidUpdate, Params, TensorSpec, digest, total_bytes
from fedops.core.results import EvaluateResult, FitResult, StageResult
from fedops.core.rounds import Event, Phase, ResultArrived, ResultRejected
from fedops.core.secagg.messages import MaskedInput
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import phases
from fedops.wire import secagg as secagg_codec
from fedops.wire.codec import loggable, shown

if TYPE_CHECKING:  # (guard imports this module: its slots are given, not imported)
    from fedops.coordinator.peer_guard import PeerSlots

log = logging.getLogger("fedops.coordinator")

#: set while a refusal that closes a node's task is recorded: it is part of the round's
#: record, and bounded by the tasks dispatched, so it is never rate-limited
#: (see :class:`~fedops.coordinator.peer_guard.RefusalThrottle`)
ANSWERS_TASK: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "fedops_answers_task", default=False
)

MAX_NODE_ID = 64  # node ids are ours ("node-0001-…"); a longer one is a peer's invention
MAX_REASON = 2000
#: uploads one node may have in progress at once (a retry may overlap a dying attempt)
UPLOADS_PER_NODE = 2
#: an upload may take this long, plus its expected size at the slowest rate accepted
UPLOAD_FLOOR_S = 60.0
MIN_UPLOAD_BYTES_PER_S = 64 * 1024
#: and at every chunk past that floor it must have kept up that rate on average: the
#: first minute is never held against a slow link (tests/unit/coordinator/test_guard.py)
UPLOAD_GRACE_S = UPLOAD_FLOOR_S
#: an upload may carry one payload message per this many bytes, plus ``MESSAGE_SLACK``: an
#: agent's are 2 MiB bar its last; a flood of tiny ones costs CPU and sends next to nothing
MIN_MESSAGE_BYTES = 64 * 1024
MESSAGE_SLACK = 1024
#: why an upload whose task was withdrawn (node dropped, replaced, round moved on) is refused
WITHDRAWN = "stale result: the task was withdrawn while it was uploading"

#: the secure-aggregation stage that trains (and so downloads the model)
TRAINING_STAGE = Phase.SECAGG_MASKED


class Reject(Exception):
    """Refuse a call with ``code`` and a reason the client can act on."""

    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(slots=True, kw_only=True)
class Assignment:
    """A task handed to one node, and the model it must work on."""

    task: pb.Task
    params: Params
    specs: list[TensorSpec]
    model_digest: str
    result_specs: list[TensorSpec] | None = None  # what the answer carries, if not ``specs``
    monitor: MonitorSpec | None = None  # the monitoring report an evaluation owes
    delivered: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Gatekeeper:
    """Who may call the transport, and how a call is refused, for every handler alike.

    ``report`` and ``current_round`` read the transport when called: the coordinator
    installs its refusal throttle after building the transport, and rounds move on.
    """

    registry: NodeRegistry
    report: Callable[[int, str, str, str], None]  # (round, node, code, reason): on_rejection
    current_round: Callable[[], int]
    said: RefusalLog = field(default_factory=lambda: RefusalLog(log))  # the log's lines

    def authenticate(self, node_id: str, token: str) -> None:
        try:
            self.registry.authenticate(node_id, token)
        except Unauthenticated as exc:
            self.reject(
                self.current_round(), node_id or "?", grpc.StatusCode.UNAUTHENTICATED, str(exc)
            )

    def reject(self, server_round: int, node: str, code: grpc.StatusCode, reason: str) -> NoReturn:
        # a peer's strings are capped: a megabyte node id must not fill the store or the
        # status metadata (gRPC would then answer RESOURCE_EXHAUSTED instead of ``code``)
        # and escaped: a newline or a terminal escape in them must forge no log line
        node, reason = loggable(node[:MAX_NODE_ID], MAX_NODE_ID), loggable(reason, MAX_REASON)
        self.said.warning(node, "rejected call from %s: %s (%s)", node, reason, code.name)
        self.report(server_round, node, code.name, reason)
        raise Reject(code, reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskBoard:
    """The transport's task board, handed to the handlers that close tasks so that they
    change the transport's own state under its own lock, never a copy: which task each
    node holds, which task ids were answered (a replay is refused), and the events the
    driver reads."""

    cond: threading.Condition
    assignments: dict[str, Assignment]
    answered: set[str]
    events: queue.Queue[Event]
    post: Callable[[Collection[str] | None], None]  # wakes the named nodes' polls (cond held)


class ResultIntake:
    """Takes pushed results for :class:`~fedops.coordinator.grpc_transport.GrpcTransport`,
    given only what a result's checks may touch, so that they are all named here.

    Args:
        run_id: the run served; a result for another is refused.
        board: the transport's task board, which an accepted or refused result closes.
        gate: authenticates the node and refuses on the transport's behalf.
        uploads: uploads in progress per node (each holds a pool thread).
        audit: ``(event, payload)`` for the coordinator's audit log.
    """

    def __init__(
        self,
        *,
        run_id: str,
        board: TaskBoard,
        gate: Gatekeeper,
        uploads: PeerSlots,
        audit: Callable[[str, Mapping[str, Any]], None],
    ) -> None:
        self._run_id = run_id
        self._board = board
        self._gate = gate
        self._uploads = uploads
        self._audit = audit

    def push(
        self, header: pb.ResultHeader, chunks: Iterable[bytes | memoryview]
    ) -> pb.PushResultResponse:
        """Check and take a result: ``header`` first, then the payload ``chunks``."""
        self._gate.authenticate(header.node_id, header.token)
        assignment = self._check_current(header)
        if header.declined:
            reason = f"the client declined the task: {loggable(header.declined, 500)}"
            self._close_rejected(header.node_id, assignment, reason)
            log.warning("%s %s", header.node_id, reason)
            closing = ANSWERS_TASK.set(True)
            try:
                self._gate.report(assignment.task.round, header.node_id, "DECLINED", reason)
            finally:
                ANSWERS_TASK.reset(closing)
            return pb.PushResultResponse(accepted=False, message="noted: task declined")
        node = header.node_id
        with contextlib.ExitStack() as holding:
            try:  # each upload holds a pool thread: a node may not hold many
                holding.enter_context(self._uploads.hold(node))
            except Reject as exc:
                self._gate.reject(assignment.task.round, node, exc.code, exc.reason)
            try:
                event = self._receive(header, assignment, self._paced(header, assignment, chunks))
            except _Withdrawn:
                self._gate.reject(
                    self._gate.current_round(), node, grpc.StatusCode.FAILED_PRECONDITION, WITHDRAWN
                )
            except InvalidUpdate as exc:
                self._fail_task(
                    node, assignment, grpc.StatusCode.INVALID_ARGUMENT, f"update rejected: {exc}"
                )
        self._board.events.put(event)
        return pb.PushResultResponse(accepted=True, message="accepted")

    def _paced(
        self, header: pb.ResultHeader, assignment: Assignment, chunks: Iterable[bytes | memoryview]
    ) -> Iterator[bytes | memoryview]:
        """The payload, cut when too slow, too finely split, or no longer the node's task."""
        due = total_bytes(assignment.result_specs or assignment.specs)
        board, node = self._board, header.node_id
        return _within(
            iter(chunks),
            UPLOAD_FLOOR_S + due / MIN_UPLOAD_BYTES_PER_S,
            # the initial model has no reference: its declared size (capped by read_result)
            declared=due or header.total_bytes,
            # one lookup, no lock: the check under the lock at the end stays the final word
            wanted=lambda: board.assignments.get(node) is assignment,
        )

    def _check_current(self, header: pb.ResultHeader) -> Assignment:
        """The node's open assignment that this header answers, or a rejection."""
        node = header.node_id
        if header.run_id != self._run_id:
            self._gate.reject(
                self._gate.current_round(),
                node,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"result for run {shown(header.run_id)}; this coordinator runs {self._run_id!r}",
            )
        with self._board.cond:
            if header.task_id in self._board.answered:
                self._gate.reject(
                    self._gate.current_round(),
                    node,
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"replayed result: task {shown(header.task_id)} was already answered",
                )
            assignment = self._board.assignments.get(node)
        if assignment is None or assignment.task.task_id != header.task_id:
            current = f"round {assignment.task.round}" if assignment else "no open task"
            self._gate.reject(
                self._gate.current_round(),
                node,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"stale result: task {shown(header.task_id)} of round {header.round} is not "
                f"this node's current task ({current})",
            )
        if header.round != assignment.task.round or header.kind != assignment.task.kind:
            self._gate.reject(
                self._gate.current_round(),
                node,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"result declares round {header.round} kind {header.kind}; the task was "
                f"round {assignment.task.round} kind {assignment.task.kind}",
            )
        return assignment

    def _receive(
        self,
        header: pb.ResultHeader,
        assignment: Assignment,
        stream: Iterator[bytes | memoryview],
    ) -> Event:
        node = header.node_id
        reference = assignment.specs if assignment.result_specs is None else assignment.result_specs
        received = Received()  # the payload's digest, hashed while it streamed in
        result = read_result(
            header,
            assignment.task.kind,
            reference,
            stream,
            monitor=assignment.monitor,
            received=received,
        )
        with self._board.cond:
            if self._board.assignments.get(node) is not assignment:
                self._gate.reject(
                    self._gate.current_round(),
                    node,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    WITHDRAWN,
                )
            self._board.answered.add(assignment.task.task_id)
            del self._board.assignments[node]
        self._audit_result(assignment, node, result, header, received.digest)
        return ResultArrived(node_id=node, task_id=assignment.task.task_id, result=result)

    def _audit_result(
        self,
        assignment: Assignment,
        node: str,
        result: FitResult | EvaluateResult | StageResult,
        header: pb.ResultHeader,
        streamed: str,
    ) -> None:
        """Record an accepted update's digest (the same hash the site computed as it sent):
        ``streamed``, hashed as the payload arrived, unless the intake had none."""
        if isinstance(result, FitResult):
            payload = result.params
        elif isinstance(result, StageResult) and isinstance(result.reply, MaskedInput):
            payload = {secagg_codec.MASKED_TENSOR: result.reply.vector}
        else:
            return
        head = None
        if header.HasField("site_audit"):
            head = anchor_of(header.site_audit.seq, header.site_audit.hash)
        self._audit(
            "update_received",
            {
                "round": assignment.task.round,
                "node_id": node,
                "site": self._gate.registry.site_name(node),
                "phase": phases.phase_of(assignment.task),
                "digest": streamed or digest(payload),
                "num_examples": result.num_examples,
                # the site's own log head: truncating that log later cannot remove it here
                **({"site_head": head.payload()} if head is not None else {}),
            },
        )

    def _fail_task(
        self, node: str, assignment: Assignment, code: grpc.StatusCode, reason: str
    ) -> None:
        """Close the node's task as rejected (the round stops waiting), then refuse."""
        self._close_rejected(node, assignment, reason)
        closing = ANSWERS_TASK.set(True)
        try:
            self._gate.reject(assignment.task.round, node, code, reason)
        finally:
            ANSWERS_TASK.reset(closing)

    def _close_rejected(self, node: str, assignment: Assignment, reason: str) -> None:
        """If ``assignment`` is still the node's task, close it and tell the round why."""
        reason = loggable(reason, MAX_REASON)  # the driver logs it
        with self._board.cond:
            if self._board.assignments.get(node) is assignment:
                del self._board.assignments[node]
                self._board.answered.add(assignment.task.task_id)
                self._board.events.put(
                    ResultRejected(node_id=node, task_id=assignment.task.task_id, reason=reason)
                )


class _Withdrawn(Exception):  # the node's task was withdrawn while its upload was read
    pass


def _within(
    chunks: Iterator[bytes | memoryview],
    budget_s: float,
    *,
    declared: int | None = None,
    wanted: Callable[[], bool] = lambda: True,
) -> Iterator[bytes | memoryview]:
    """The chunks, cut when the upload outlasts ``budget_s`` or, past a short grace, falls
    below the slowest rate accepted on average: a trickled upload holds a thread briefly.
    Cut too at an empty message (:func:`_nonempty`), past :func:`most_messages` (each costs
    CPU, whatever it carries), and once ``wanted`` says its task is gone."""
    start = time.monotonic()
    received = 0
    most = most_messages(declared) if declared is not None else None
    for count, chunk in enumerate(_nonempty(chunks), 1):
        if not wanted():
            raise _Withdrawn
        if most is not None and count > most:
            raise InvalidUpdate(
                f"the upload sent more than {most} payload messages for {declared} bytes "
                f"(one per {MIN_MESSAGE_BYTES // 1024} KiB, plus {MESSAGE_SLACK}): "
                "send the payload in fewer, larger messages"
            )
        received += len(chunk)
        elapsed = time.monotonic() - start
        if elapsed > budget_s:
            raise InvalidUpdate(
                f"the upload took longer than {budget_s:.0f} s (slower than "
                f"{MIN_UPLOAD_BYTES_PER_S // 1024} KiB/s for the model's size)"
            )
        if received < MIN_UPLOAD_BYTES_PER_S * (elapsed - UPLOAD_GRACE_S):
            raise InvalidUpdate(
                f"the upload sent {received} bytes in {elapsed:.0f} s: slower than "
                f"{MIN_UPLOAD_BYTES_PER_S // 1024} KiB/s"
            )
        yield chunk


def _nonempty(chunks: Iterator[bytes | memoryview]) -> Iterator[bytes | memoryview]:
    """The chunks, refusing an empty message that another follows: a flood of them costs CPU
    and carries nothing. An empty last message passes (the payload is short, and says so)."""
    empty = 0  # the number of an empty message just read
    for count, chunk in enumerate(chunks, 1):
        if empty:
            raise InvalidUpdate(
                f"payload message {empty} of the upload is empty: every message after the "
                "header must carry payload bytes"
            )
        if len(chunk) == 0:
            empty = count
            continue
        yield chunk
    if empty:
        yield b""


def most_messages(declared: int) -> int:
    """The payload messages an upload of ``declared`` bytes may take."""
    return -(-declared // MIN_MESSAGE_BYTES) + MESSAGE_SLACK
