"""The ``Federation`` service of ``fedops serve``: which run is open, and the run queue.

Who may call what (threat model in the README, "Running a standing federation"):

- ``Offer``: any certified member (kit mode) or any caller on loopback (without a
  kit, where the server binds loopback only). The offer is what a standing site
  weighs against its own policy; the site trusts none of it: every value is checked
  again on every task, and the task's code must be the site's own copy.
- ``Submit``, ``Stop``: a certificate with role ``admin`` (kit mode only). ``List``:
  ``admin`` or ``observer``. Each submission and stop is in the federation's signed
  audit log with the caller's name. Without a kit these three are refused: runs are
  then submitted by whoever can write the serve root (``fedops run submit --root``).
- A submitted run's settings are parsed by the coordinator's own rules before they
  are queued; a refusal says which key and why, and nothing is queued.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from fedops.consortium.tls import Revocation
from fedops.coordinator.peer_guard import MAX_CALLS_PER_SITE, PeerSlots, certified_or_address
from fedops.coordinator.peers import certified
from fedops.coordinator.result_intake import Reject
from fedops.runtime.run_queue import QueuedRun, QueueError, RunQueue, SpecError, parse_run_name
from fedops.v1 import fedops_pb2 as pb
from fedops.wire.codec import loggable

FEDERATION_SERVICE = "fedops.v1.Federation"
#: role -> the Federation methods it may call (kit mode)
ALLOWED = {
    "admin": frozenset({"Offer", "Submit", "List", "Stop"}),
    "observer": frozenset({"Offer", "List"}),
    "site": frozenset({"Offer"}),
}


class OfferBoard:
    """The open run's offer, set by the serve loop and read by every ``Offer`` call."""

    def __init__(self) -> None:
        self._offer: pb.RunOffer | None = None
        self._lock = threading.Lock()

    def open(self, offer: pb.RunOffer) -> None:
        with self._lock:
            self._offer = offer

    def close(self) -> None:
        with self._lock:
            self._offer = None

    def current(self, queued: int) -> pb.RunOffer:
        with self._lock:
            offer = self._offer
        if offer is not None:
            return offer
        return pb.RunOffer(open=False, message=f"no run is open; {queued} queued")


@dataclass(frozen=True, slots=True, kw_only=True)
class FederationParts:
    """What the service acts on, all owned by the serve loop."""

    board: OfferBoard
    queue: RunQueue
    #: the run's settings -> its task and the task's code digest (SpecError if refused)
    check_spec: Callable[[str], tuple[str, str]]
    audit: Callable[[str, Mapping[str, Any]], None]
    wake: Callable[[], None]  # the serve loop: a run was queued or stopped
    stop_running: Callable[[int, str], bool]  # (queue seq, reason) -> the run was open
    revocation: Revocation | None = None  # kit mode; None: Submit/List/Stop are refused


def federation_handler(parts: FederationParts) -> grpc.GenericRpcHandler:
    return FederationService(parts).handler()


class FederationService:
    """One method per RPC; each checks who calls before it acts."""

    def __init__(self, parts: FederationParts) -> None:
        self.parts = parts
        self.slots = PeerSlots(MAX_CALLS_PER_SITE, "federation calls")

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            FEDERATION_SERVICE,
            {
                "Offer": self._unary(self.offer, pb.OfferRequest),
                "Submit": self._unary(self.submit, pb.RunSubmit),
                "List": self._unary(self.list_runs, pb.AdminRequest),
                "Stop": self._unary(self.stop, pb.RunStopRequest),
            },
        )

    def _unary(self, fn: Callable[[Any, Any], Any], request_type: Any) -> grpc.RpcMethodHandler:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                with self.slots.hold(certified_or_address(context)):
                    return fn(request, context)
            except Reject as exc:
                context.abort(exc.code, exc.reason)

        return grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=request_type.FromString,
            response_serializer=lambda message: message.SerializeToString(),
        )

    def caller(self, context: grpc.ServicerContext, method: str) -> str:
        """The caller's certified name, if its role may call ``method`` (Reject if not)."""
        if self.parts.revocation is None:
            if method != "Offer":
                raise Reject(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "without a consortium kit, runs are submitted, listed and stopped "
                    "through the serve root: fedops run submit|list|stop --root DIR",
                )
            return "local"
        name, role = certified(context, self.parts.revocation)
        if method not in ALLOWED.get(role, frozenset()):
            raise Reject(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{name!r} has role {role!r}, which may not call Federation.{method}",
            )
        return name

    def offer(self, request: pb.OfferRequest, context: grpc.ServicerContext) -> pb.RunOffer:
        self.caller(context, "Offer")
        return self.parts.board.current(self.parts.queue.queued())

    def submit(self, request: pb.RunSubmit, context: grpc.ServicerContext) -> pb.RunList:
        name = self.caller(context, "Submit")
        parts = self.parts
        try:
            task, task_digest = parts.check_spec(request.config_yaml)
            run = parts.queue.submit(
                request.config_yaml, task=task, by=name, task_digest=task_digest
            )
        except (SpecError, QueueError) as exc:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, str(exc)[:2000]) from None
        parts.audit(
            "run_submitted",
            {
                "id": run.id,
                "by": name,
                "spec_sha256": hashlib.sha256(request.config_yaml.encode()).hexdigest(),
                "task": task[:200],
                "task_digest": task_digest,
                "reason": loggable(request.reason, 500),
            },
        )
        parts.wake()
        return run_list([run], f"queued {run.id}")

    def list_runs(self, request: pb.AdminRequest, context: grpc.ServicerContext) -> pb.RunList:
        self.caller(context, "List")
        return run_list(self.parts.queue.runs())

    def stop(self, request: pb.RunStopRequest, context: grpc.ServicerContext) -> pb.RunList:
        name = self.caller(context, "Stop")
        reason = f"{name}: {loggable(request.reason, 500) or 'no reason given'}"
        try:
            run = self.parts.queue.stop(parse_run_name(request.id), reason)
        except QueueError as exc:
            raise Reject(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
        self.parts.audit("run_stop_requested", {"id": run.id, "by": name, "reason": reason})
        open_now = self.parts.stop_running(run.seq, reason)
        self.parts.wake()
        word = "stopping after its current round" if open_now else run.state
        return run_list([run], f"{run.id}: {word}")


def run_list(runs: list[QueuedRun], message: str = "") -> pb.RunList:
    return pb.RunList(runs=[run_info(run) for run in runs], message=message)


def run_info(run: QueuedRun) -> pb.RunInfo:
    stopping = f"stop requested: {run.stop_requested}" if run.stop_requested else ""
    return pb.RunInfo(
        id=run.id,
        state=run.state,
        submitted_by=run.submitted_by,
        submitted_at=datetime.fromtimestamp(run.submitted_at, UTC).isoformat(timespec="seconds"),
        task=run.task,
        run_id=run.run_id,
        message=run.message or stopping,
    )
