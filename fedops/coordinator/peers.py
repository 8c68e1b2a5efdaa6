"""Who may call what, in consortium mode: the caller's certificate decides.

With mTLS every call carries a certificate the consortium's CA issued. Its
CN is the party's name and its OU the party's role. A site's node is bound
to the name in its certificate at registration, so one member can never act
as another's node (even with the other's node id and token), a revoked
certificate is refused on its next call, and parties that are not sites
(admins, observers) cannot take part in training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NoReturn

import grpc

from fedops.consortium import pki
from fedops.consortium.tls import Revocation, peer_certificate
from fedops.coordinator.refusal_log import RefusalLog
from fedops.coordinator.result_intake import Reject

log = logging.getLogger("fedops.coordinator")

#: the roles that may call each Coordinator RPC
TRAINING_ROLES = frozenset({"site"})


def certified(context: grpc.ServicerContext, revocation: Revocation) -> tuple[str, str]:
    """``(name, role)`` from the caller's certificate; :class:`Reject` without a valid one."""
    cert = peer_certificate(context)
    if cert is None:
        raise Reject(grpc.StatusCode.UNAUTHENTICATED, "no client certificate")
    name, role = pki.name_of(cert) or "?", pki.role_of(cert) or "?"
    if revocation.is_revoked(cert):
        raise Reject(grpc.StatusCode.PERMISSION_DENIED, f"the certificate of {name!r} is revoked")
    return name, role


class PeerGate:
    """Checks the caller's certificate before every Coordinator RPC.

    Args:
        revocation: the consortium's CRL (reloaded when it changes).
        site_of_node: node id -> the site name it registered with (None: unknown node).
        on_refusal: ``(node, code, reason)`` so refusals are recorded like all others.
    """

    def __init__(
        self,
        revocation: Revocation,
        site_of_node: Callable[[str], str | None],
        on_refusal: Callable[[str, str, str], None] = lambda node, code, reason: None,
    ) -> None:
        self.revocation = revocation
        self.site_of_node = site_of_node
        self.on_refusal = on_refusal
        self._said = RefusalLog(log)  # log lines: a few per offender, then a count

    def caller(self, context: grpc.ServicerContext, method: str) -> str:
        """The calling site's name; refuses callers without a valid, unrevoked site certificate."""
        try:
            name, role = certified(context, self.revocation)
        except Reject as exc:
            self._refuse("?", exc.code, exc.reason)
        if role not in TRAINING_ROLES:
            self._refuse(
                name,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{name!r} has role {role!r}; only sites may call {method}",
            )
        return name

    def check_node(self, context: grpc.ServicerContext, method: str, node_id: str) -> None:
        """The caller must be the site that registered ``node_id``."""
        name = self.caller(context, method)
        owner = self.site_of_node(node_id)
        if owner is not None and owner != name:
            self._refuse(
                name,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{name!r} called {method} for a node registered by {owner!r}",
            )

    def _refuse(self, who: str, code: grpc.StatusCode, reason: str) -> NoReturn:
        # an operator sees who is turned away, and why, without a line per call
        self._said.warning(who, "refused a call: %s (%s)", reason, code.name)
        self.on_refusal(who, code.name, reason)
        raise Reject(code, reason)
