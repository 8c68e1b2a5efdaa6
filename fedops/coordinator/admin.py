"""The Admin service (consortium mode): status for observers and admins, start/stop for admins.

Every call is decided by the caller's certificate (its OU is the role); an
admin's start and stop are written to the coordinator's audit log with the
caller's name, so "who stopped round 37" has a signed answer. A refused call
goes to ``refuse`` (the coordinator's throttled refusal record: a few entries
per caller per minute, then a count), and a caller may have only a few calls
open at once, so a certified observer cannot turn refusals into disk work.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import grpc

from fedops.consortium.kit import KitError, load_kit
from fedops.consortium.tls import Revocation, channel_credentials
from fedops.coordinator.peer_guard import MAX_CALLS_PER_SITE, PeerSlots, certified_or_address
from fedops.coordinator.peers import certified
from fedops.coordinator.result_intake import Reject
from fedops.runtime.control import RunControl
from fedops.v1 import fedops_pb2 as pb
from fedops.wire.codec import loggable

ADMIN_SERVICE = "fedops.v1.Admin"
#: role -> the Admin methods it may call
ALLOWED = {
    "admin": frozenset({"Status", "Start", "Stop"}),
    "observer": frozenset({"Status"}),
}


def admin_handler(
    control: RunControl,
    *,
    run_id: str,
    revocation: Revocation,
    sites: Callable[[], list[str]],
    audit: Callable[[str, Mapping[str, Any]], None],
    refuse: Callable[[str, str, str], None] = lambda who, code, reason: None,
    open_calls: PeerSlots | None = None,
) -> grpc.GenericRpcHandler:
    """The Admin service's handlers, each gated on the caller's certificate."""
    slots = open_calls or PeerSlots(MAX_CALLS_PER_SITE, "admin calls")
    status = partial(_run_status, control, run_id, sites)
    caller = partial(_permitted_caller, revocation, refuse)

    def on_status(request: pb.AdminRequest, context: grpc.ServicerContext) -> pb.RunStatus:
        caller(context, "Status")
        return status()

    def meant(request: pb.AdminRequest, context: grpc.ServicerContext) -> None:
        if request.run_id and request.run_id != run_id:  # the run switched under the caller
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"run {request.run_id[:64]!r} is not the run served now ({run_id})",
            )

    def on_start(request: pb.AdminRequest, context: grpc.ServicerContext) -> pb.RunStatus:
        name = caller(context, "Start")
        meant(request, context)
        changed = control.start()
        audit(
            "admin_start",
            {"caller": name, "reason": loggable(request.reason, 500), "changed": changed},
        )
        return status("started" if changed else "already started")

    def on_stop(request: pb.AdminRequest, context: grpc.ServicerContext) -> pb.RunStatus:
        name = caller(context, "Stop")
        meant(request, context)
        reason = f"{name}: {loggable(request.reason, 500) or 'no reason given'}"
        changed = control.stop(reason)
        audit(
            "admin_stop",
            {"caller": name, "reason": loggable(request.reason, 500), "changed": changed},
        )
        return status("stopping after the current round" if changed else "already stopping")

    return grpc.method_handlers_generic_handler(
        ADMIN_SERVICE,
        {
            "Status": _unary(slots, on_status),
            "Start": _unary(slots, on_start),
            "Stop": _unary(slots, on_stop),
        },
    )


def _run_status(
    control: RunControl, run_id: str, sites: Callable[[], list[str]], message: str = ""
) -> pb.RunStatus:
    return pb.RunStatus(
        run_id=run_id,
        state=control.state,
        round=control.round,
        rounds_planned=control.rounds_planned,
        sites=sorted(sites()),
        message=message,
    )


def _permitted_caller(
    revocation: Revocation,
    refuse: Callable[[str, str, str], None],
    context: grpc.ServicerContext,
    method: str,
) -> str:
    """The certified caller's name; a caller whose role may not call ``method`` is refused
    on the record, so an observer probing for admin powers leaves a trace."""
    try:
        name, role = certified(context, revocation)
    except Reject as exc:
        context.abort(exc.code, exc.reason)
    if method not in ALLOWED.get(role, frozenset()):
        why = f"{name!r} has role {role!r}, which may not call Admin.{method}"
        refuse(f"admin:{name}", grpc.StatusCode.PERMISSION_DENIED.name, why)
        context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
    return name


def _capped(slots: PeerSlots, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:  # per certificate: connections are cheap
            with slots.hold(certified_or_address(context)):
                return fn(request, context)
        except Reject as exc:
            context.abort(exc.code, exc.reason)

    return call


def _unary(slots: PeerSlots, fn: Callable[[Any, Any], Any]) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        _capped(slots, fn),
        request_deserializer=pb.AdminRequest.FromString,
        response_serializer=pb.RunStatus.SerializeToString,
    )


def admin_command(
    verb: str,
    kit_dir: Path,
    coordinator: str | None,
    reason: str,
    ca_fingerprint: str | None = None,
    run_id: str = "",
) -> int:
    """``fedops admin start|stop|status``: one call with the admin's (or observer's) kit."""
    try:
        kit = load_kit(kit_dir, ca_fingerprint=ca_fingerprint)
    except KitError as exc:
        print(f"fedops admin: error: --kit: {exc}", file=sys.stderr)
        return 2
    address = coordinator or kit.coordinator_address
    with grpc.secure_channel(address, channel_credentials(kit)) as channel:
        call = channel.unary_unary(
            f"/{ADMIN_SERVICE}/{verb.capitalize()}",
            request_serializer=pb.AdminRequest.SerializeToString,
            response_deserializer=pb.RunStatus.FromString,
        )
        try:
            reply = call(pb.AdminRequest(reason=reason, run_id=run_id), timeout=15)
        except grpc.RpcError as exc:
            print(f"fedops admin: error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    note = f" ({reply.message})" if reply.message else ""
    print(
        f"run {reply.run_id}: {reply.state}, round {reply.round} of {reply.rounds_planned}, "
        f"sites: {', '.join(reply.sites) or 'none'}{note}"
    )
    return 0
