"""mTLS for gRPC from a startup kit, and who is calling.

The coordinator serves with :func:`server_credentials` (client certificates
required, trusted only when the kit's CA signed them); agents dial with
:func:`channel_credentials`. TLS proves a caller holds a key the CA
certified; :func:`peer_identity` reads the caller's name and role from that
certificate and refuses one the CRL lists. :class:`Revocation` re-reads the
CRL when the file changes (one ``stat`` per call), so ``fedops consortium
revoke`` takes effect on a running coordinator at the party's next call.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509

from fedops.consortium import crl as crl_checks
from fedops.consortium import pki
from fedops.consortium.crl import CRL_STATE
from fedops.consortium.kit import Kit, KitError

log = logging.getLogger(__name__)

#: the auth-context key under which gRPC gives the peer's certificate (PEM)
PEER_CERT_KEY = "x509_pem_cert"


@dataclass(frozen=True)
class Identity:
    name: str
    role: str


def server_credentials(kit: Kit) -> grpc.ServerCredentials:
    """TLS for the coordinator: its key and certificate; clients must present one from its CA."""
    if kit.role != "coordinator":
        raise KitError(
            f"{kit.directory}: a {kit.role}'s kit cannot serve (its certificate is for TLS "
            "clients only); use the coordinator's kit"
        )
    return grpc.ssl_server_credentials(
        [(kit.key_pem, kit.cert_pem)],
        root_certificates=kit.ca_pem,
        require_client_auth=True,
    )


def channel_credentials(kit: Kit) -> grpc.ChannelCredentials:
    """TLS for a party dialing the coordinator: trusts only the kit's CA, presents its own cert.

    gRPC checks the coordinator's certificate against the host in the target
    address; the certificate names the spec's host, 127.0.0.1 and localhost.
    """
    return grpc.ssl_channel_credentials(
        root_certificates=kit.ca_pem,
        private_key=kit.key_pem,
        certificate_chain=kit.cert_pem,
    )


def peer_certificate(context: Any) -> x509.Certificate | None:
    """The caller's verified certificate, from a servicer's ``context``; ``None`` without one."""
    try:
        values = context.auth_context().get(PEER_CERT_KEY)
    except (AttributeError, ValueError):
        return None
    if not values:
        return None
    try:
        return pki.load_cert(values[0])
    except ValueError:
        return None


def peer_identity(context: Any, revocation: Revocation | None) -> Identity | None:
    """The caller's name and role, or ``None``: no certificate, no name/role in it, or revoked."""
    cert = peer_certificate(context)
    if cert is None:
        return None
    name, role = pki.name_of(cert), pki.role_of(cert)
    if name is None or role not in pki.ROLES:
        return None
    if revocation is not None and revocation.is_revoked(cert):
        return None
    return Identity(name, role)


class Revocation:
    """The CRL at ``crl_path`` (verified against ``ca_cert``), reloaded when the file changes.

    Fails closed: while the file is missing, unreadable, not signed by the
    CA, past its ``next_update``, or older (by CRL number) than the highest
    this party has accepted, every certificate counts as revoked (and the
    problem is logged). With ``state_path`` that highest number survives
    restarts (:mod:`fedops.consortium.crl`), so an old CRL put back while
    the coordinator was down is refused too.
    """

    def __init__(
        self,
        crl_path: str | Path,
        ca_cert: x509.Certificate | bytes,
        *,
        state_path: str | Path | None = None,
    ) -> None:
        self.path = Path(crl_path)
        self.state_path = Path(state_path) if state_path is not None else None
        self._ca = pki.load_cert(ca_cert) if isinstance(ca_cert, bytes) else ca_cert
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int, int] | None = None
        self._crl: x509.CertificateRevocationList | None = None
        self._pem: tuple[x509.CertificateRevocationList, bytes] | None = None
        self._highest = 0  # in memory too: a rollback is caught without a state file

    @classmethod
    def from_kit(cls, kit: Kit) -> Revocation:
        """The kit's CRL, its high-water mark kept in the kit folder (``crl-seen.json``)."""
        if kit.crl_path is None:
            raise KitError(
                f"{kit.directory / 'crl.pem'}: missing (only the coordinator's kit has one)"
            )
        return cls(kit.crl_path, kit.ca_cert, state_path=kit.directory / CRL_STATE)

    def is_revoked(self, cert: x509.Certificate) -> bool:
        crl = self._current()
        if crl is None:
            return True
        return pki.is_revoked(cert, crl)

    def current_pem(self) -> bytes | None:
        """The CRL in force, as PEM (``None`` while there is none): what sites are sent."""
        crl = self._current()
        if crl is None:
            return None
        cached = self._pem
        if cached is None or cached[0] is not crl:
            cached = self._pem = (crl, pki.crl_pem(crl))
        return cached[1]

    def _current(self) -> x509.CertificateRevocationList | None:
        try:
            st = os.stat(self.path)
            seen: tuple[int, int, int, int] | None = (
                st.st_mtime_ns,
                st.st_size,
                st.st_ino,
                st.st_dev,
            )
        except OSError:
            seen = None
        with self._lock:
            if seen is not None and seen == self._seen:
                crl = self._crl
                if crl is not None and crl_checks.is_stale(crl):  # went stale while in use
                    log.error("%s: CRL past its next_update; refusing every peer", self.path)
                    self._crl = None
                return self._crl
            self._seen = seen
            self._crl = self._load() if seen is not None else None
            if seen is None:
                log.error("%s: CRL missing; refusing every peer until it is back", self.path)
            return self._crl

    def _load(self) -> x509.CertificateRevocationList | None:
        try:
            crl, number = crl_checks.load_checked(self.path, self._ca, self.state_path)
            crl_checks.check_crl(crl, self._ca, highest_seen=self._highest)
        except (crl_checks.CrlError, OSError) as exc:
            log.error("%s: %s; refusing every peer until it is fixed", self.path, exc)
            return None
        self._highest = max(self._highest, number)
        if self.state_path is not None:
            try:  # a read-only kit (a container's mount) still works: the mark stays in memory
                crl_checks.record_seen(self.state_path, number)
            except (crl_checks.CrlError, OSError) as exc:
                log.warning(
                    "%s: cannot record CRL number %d (%s); a CRL rolled back while this "
                    "process is down will not be caught",
                    self.state_path,
                    number,
                    exc,
                )
        return crl
