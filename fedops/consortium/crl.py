"""CRL freshness and rollback: a revocation list is only as good as it is current.

A CRL carries the CA's signature, so nobody but the CA can forge one; but
anyone who can write the file a party reads can *replay* an old, genuine one
that was issued before a party was revoked. Two checks close that:

* freshness: a CRL past its ``next_update`` is refused (the CA promised a
  newer one by then, so this one may be missing revocations);
* rollback: every CRL the CA issues carries a CRL number that grows
  (:func:`fedops.consortium.kits.revoke`); the highest number a party has
  accepted is kept in ``crl-seen.json`` beside the CRL, and a CRL with a lower
  number is refused.

Both fail closed: the caller (:class:`fedops.consortium.tls.Revocation`,
:func:`fedops.consortium.kit.load_kit`) then refuses every peer, or the kit,
until a current CRL is put back. The high-water mark is a plain file of the
party's: whoever can write it can raise it (denying service, which they could
do anyway by deleting the CRL) but lowering it needs the same write access,
so it guards against a CRL swapped in transit or restored from an old copy.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from fedops.consortium import pki
from fedops.consortium.spec import ConsortiumError

log = logging.getLogger(__name__)

#: where a party keeps the highest CRL number it has accepted (beside its crl.pem)
CRL_STATE = "crl-seen.json"
#: where a site keeps the highest number of the CRLs the coordinator delivered to it
CRL_DELIVERED = "crl-delivered.json"
#: the longest-lived CRL a site takes from the coordinator: a coordinator that withholds a
#: newer one can replay an older one only until it goes stale, so that must come soon
MAX_DELIVERED_CRL_DAYS = 90


class CrlError(ConsortiumError):
    """A CRL that must not be used: not the CA's, stale, or older than one already seen."""


def check_crl(
    crl: x509.CertificateRevocationList,
    ca_cert: x509.Certificate,
    *,
    highest_seen: int = 0,
    now: dt.datetime | None = None,
) -> int:
    """The CRL's number, once it is the CA's, current, and not older than ``highest_seen``."""
    if not pki.crl_signed_by(crl, ca_cert):
        raise CrlError("not signed by ca.pem")
    now = now or dt.datetime.now(dt.UTC)
    next_update = crl.next_update_utc
    if next_update is None:
        raise CrlError("has no next_update, so its freshness cannot be checked")
    if now > next_update:
        raise CrlError(
            f"stale: its next_update {next_update:%Y-%m-%d %H:%M} UTC has passed "
            "(ask the CA for a current CRL)"
        )
    if crl.last_update_utc > now + pki.CLOCK_SKEW:
        raise CrlError(f"not valid yet (issued {crl.last_update_utc:%Y-%m-%d %H:%M} UTC)")
    number = pki.crl_number(crl)
    if number < highest_seen:
        raise CrlError(
            f"rolled back: CRL number {number} is lower than {highest_seen}, "
            "the highest this party has accepted (an old CRL was put back)"
        )
    return number


def highest_seen(state_path: Path) -> int:
    """The highest CRL number recorded in ``state_path`` (0 when there is none yet)."""
    try:
        data = json.loads(state_path.read_text())
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        raise CrlError(f"{state_path}: unreadable ({exc}); refusing to guess a lower mark") from exc
    number = data.get("crl_number") if isinstance(data, dict) else None
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise CrlError(f"{state_path}: malformed (expected {{crl_number: N}})")
    return number


def record_seen(state_path: Path, number: int) -> None:
    """Raise the high-water mark in ``state_path`` to ``number`` (never lower it)."""
    if number <= highest_seen(state_path):
        return
    text = json.dumps({"crl_number": number}) + "\n"
    pki.write_public(state_path, text.encode(), replace=True)


def load_checked(
    crl_path: Path, ca_cert: x509.Certificate, state_path: Path | None
) -> tuple[x509.CertificateRevocationList, int]:
    """Read ``crl_path`` and :func:`check_crl` it against the mark in ``state_path``."""
    try:
        crl = pki.load_crl(crl_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CrlError("not a readable PEM CRL") from exc
    mark = highest_seen(state_path) if state_path is not None else 0
    return crl, check_crl(crl, ca_cert, highest_seen=mark)


class DeliveredCrl:
    """The CRL a site holds for checking its SecAgg+ peers, as the coordinator delivers it.

    A site kit carries no CRL, yet a site must not accept a revoked site's
    keys: a malicious coordinator would otherwise seat a revoked (or stolen)
    identity among the victim's neighbours. The coordinator sends its CRL
    with every task; it cannot forge one (the CA signs it) and cannot roll
    it back (the highest number this site accepted is kept in ``state_path``
    and in memory), so the most it can do is withhold a newer one, and only
    until the one it holds passes its ``next_update``. Fail closed: with no
    current CRL every certificate counts as revoked, so a kit site refuses
    every SecAgg+ peer until a CRL arrives.
    """

    def __init__(
        self, ca_cert: x509.Certificate, *, state_path: Path | None = None, floor: int = 0
    ) -> None:
        self._ca = ca_cert
        self.state_path = state_path
        self._crl: x509.CertificateRevocationList | None = None
        self._pem = b""
        marks = [floor]  # the CA's CRL number when the site's kit was issued
        if state_path is not None:  # and what this site accepted before (also as crl-seen)
            marks += [highest_seen(state_path), highest_seen(state_path.with_name(CRL_STATE))]
        self.floor = floor
        self.highest = max(marks)

    @property
    def number(self) -> int | None:
        """The accepted CRL's number (``None`` before any)."""
        return pki.crl_number(self._crl) if self._crl is not None else None

    def offer(self, pem: bytes, *, now: dt.datetime | None = None) -> bool:
        """Take ``pem`` if it is the CA's, current and not older; :class:`CrlError` says why not.

        Returns whether it is news (a CRL this site did not hold yet).
        """
        if pem == self._pem:
            return False
        try:
            crl = pki.load_crl(pem)
        except ValueError as exc:
            raise CrlError("not a readable PEM CRL") from exc
        if self._crl is not None and crl.fingerprint(hashes.SHA256()) == self._crl.fingerprint(
            hashes.SHA256()
        ):
            return False  # the same CRL, only encoded otherwise: no news
        number = check_crl(crl, self._ca, highest_seen=self.highest, now=now)
        if crl.next_update_utc is not None:
            lifetime = crl.next_update_utc - crl.last_update_utc
            # (the CA backdates last_update by the clock skew it allows)
            if lifetime > dt.timedelta(days=MAX_DELIVERED_CRL_DAYS) + pki.CLOCK_SKEW:
                raise CrlError(
                    f"valid for {lifetime.days} days; a site takes CRLs valid at most "
                    f"{MAX_DELIVERED_CRL_DAYS} days (reissue it: fedops consortium crl)"
                )
        self._crl, self._pem, self.highest = crl, pem, number
        if self.state_path is not None:
            try:
                record_seen(self.state_path, number)
            except (CrlError, OSError) as exc:  # a read-only kit: the mark stays in memory
                log.warning(
                    "%s: cannot record CRL number %d (%s): after a restart this site "
                    "accepts CRLs back to number %d only",
                    self.state_path,
                    number,
                    exc,
                    self.floor,
                )
        return True

    def is_revoked(self, cert: x509.Certificate) -> bool:
        crl = self._crl
        if crl is None or is_stale(crl):
            return True
        return pki.is_revoked(cert, crl)


def is_stale(crl: x509.CertificateRevocationList) -> bool:
    """Past its ``next_update`` (or without one): it may be missing revocations."""
    next_update = crl.next_update_utc
    return next_update is None or dt.datetime.now(dt.UTC) > next_update
