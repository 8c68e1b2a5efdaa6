"""Bounds that hold before anyone is authenticated: who is calling, how many, how loudly.

Threat model. The coordinator listens on a network address. Without a
consortium kit anyone who can reach it is a peer; with a kit (mTLS) any
holder of a certificate the CA issued is, including observers and admins
(who may not train) and a party whose certificate was revoked (the CRL is
applied per call, not at the TLS handshake). Such a peer may:

* open many calls and send nothing, or send a ``PushResult`` header slowly,
  to hold the server's threads until honest heartbeats time out and live
  nodes are declared dead;
* send huge or odd names (a 16 MiB site name) to grow the registry, the
  audit log and the run store;
* call anything, refused, over and over, so that every refusal's signed,
  fsynced audit entry and SQLite row turns a cheap call into disk work.

What must hold regardless: honest nodes' registrations and heartbeats are
served and live nodes are not dropped. So, in this module:

* :data:`PEER` names the caller (its certificate's name in kit mode, its
  address otherwise) for everything a call does, so refusals are charged
  to an offender the peer cannot choose at will (a claimed node id is not).
* :class:`PeerSlots` caps the calls of one kind a peer may have open at
  once (uploads, downloads, parked polls, unary calls: :class:`CallLimits`),
  so the bytes a peer has in flight are bounded by its slots times the
  largest message; an upload waits for its header on the event loop
  (holding no thread) for at most ``header_deadline_s`` (see
  :mod:`fedops.coordinator.grpc_server`).
* :class:`RateLimit` bounds how often one site may register: each
  registration writes a ``node_joined`` audit entry, so re-registering one
  name in a loop would otherwise grow the signed log without bound.
* :class:`RefusalThrottle` writes at most ``burst`` refusals per offender
  per interval, then one summary row with the count, instead of one per call.
* :func:`check_site_name` bounds names before they are stored anywhere.
"""

from __future__ import annotations

import contextvars
import ipaddress
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc

from fedops.consortium import pki
from fedops.consortium.tls import peer_certificate
from fedops.coordinator.result_intake import ANSWERS_TASK, Reject

#: who the current call comes from (set by the server's handlers; "" outside a call)
PEER: contextvars.ContextVar[str] = contextvars.ContextVar("fedops_peer", default="")

MAX_SITE_NAME = 128
_SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")
#: how long an upload may take to send its header before it is cancelled
HEADER_DEADLINE_S = 5.0
#: uploads one peer may have open at once (kit mode: per certificate; a site runs one node)
MAX_UPLOADS_PER_SITE = 8
#: uploads one address may have open at once without a kit (many agents may share a host/NAT)
MAX_UPLOADS_PER_ADDRESS = 1024
#: other calls one certified site may have open at once (its one node needs one or two of each)
MAX_CALLS_PER_SITE = 8
#: registrations one site may make in a burst, and then one per this many seconds
REGISTER_BURST = 6
REGISTER_EVERY_S = 10.0
#: registrations one peer (a network without a kit: network_of) may make under any names: a
#: burst as large as the agents a host may run, then 20 a second. Keyed by name alone, a flood under
#: fresh names went unchecked: 439 signed, fsynced node_joined entries a second (red team
#: 2026-12-07)
REGISTER_PEER_BURST = MAX_UPLOADS_PER_ADDRESS
REGISTER_PEER_EVERY_S = 0.05


def check_site_name(name: str) -> None:
    """Refuse a site name that is too long or outside a safe charset, without echoing it."""
    if len(name) > MAX_SITE_NAME:
        raise Reject(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"site name of {len(name)} characters; at most {MAX_SITE_NAME} are allowed",
        )
    if not _SITE_NAME.fullmatch(name):
        raise Reject(
            grpc.StatusCode.INVALID_ARGUMENT,
            "site name must start with a letter or digit and use only letters, digits and ._@+-",
        )


def address_of(context: grpc.ServicerContext) -> str:
    """The caller's host, without its port ("ipv4:10.0.0.5:4711" -> "10.0.0.5").

    The port changes with every connection, so keying on it would let one
    host count as any number of peers.
    """
    peer = context.peer() or "?"
    scheme, _, rest = peer.partition(":")
    if scheme in ("ipv4", "ipv6") and ":" in rest:
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer


def network_of(peer: str) -> str:
    """The network a peer key belongs to: an IPv4 address's /24, an IPv6 address's /64, a
    certificate's name as it is. One host holds many addresses of its network (127.0.0.0/8
    on loopback, a /64 for IPv6), so a budget kept per address is one per address it
    chooses to use (red team 2026-12-07: 8 loopback addresses, 8 budgets)."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer  # "cert:NAME", a unix socket, "?"
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def certified_or_address(context: grpc.ServicerContext) -> str:
    """The caller as a key: its certificate's name when it has one (kit mode), else its
    address (:func:`address_of`)."""
    cert = peer_certificate(context)
    name = pki.name_of(cert) if cert is not None else None
    return f"cert:{name[:MAX_SITE_NAME]}" if name else address_of(context)


class PeerSlots:
    """Counts one kind of call per peer, refusing past ``limit`` open at once."""

    def __init__(self, limit: int, what: str = "uploads") -> None:
        self.limit = limit
        self.what = what
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, peer: str) -> Iterator[None]:
        with self._lock:
            count = self._open.get(peer, 0)
            if count >= self.limit:
                raise Reject(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{count} {self.what} already open from this peer; at most {self.limit}",
                )
            self._open[peer] = count + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._open[peer] - 1
                if left:
                    self._open[peer] = left
                else:
                    del self._open[peer]

    def open_count(self, peer: str) -> int:
        with self._lock:
            return self._open.get(peer, 0)


@dataclass(frozen=True, slots=True)
class CallLimits:
    """Open calls per peer, by kind: downloads, parked polls, and the short unary calls."""

    downloads: PeerSlots
    polls: PeerSlots
    unary: PeerSlots

    @classmethod
    def per_peer(cls, limit: int) -> CallLimits:
        return cls(
            PeerSlots(limit, "model downloads"),
            PeerSlots(limit, "task polls"),
            PeerSlots(limit, "calls"),
        )


class RateLimit:
    """A token bucket per key: ``burst`` at once, then one per ``every_s`` seconds.

    At most ``max_keys`` keys are tracked; past it the fullest buckets (keys
    that have been quiet longest) are forgotten first, which only ever
    forgives, never blocks, an honest key.
    """

    def __init__(
        self,
        *,
        burst: int = REGISTER_BURST,
        every_s: float = REGISTER_EVERY_S,
        max_keys: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.every_s = every_s
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def wait_s(self, key: str) -> float:
        """0 and one token taken when ``key`` may go now, else the seconds until it may."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) / self.every_s)
            if len(self._buckets) >= self.max_keys:
                for old in list(self._buckets)[: self.max_keys // 2]:  # oldest touched first
                    del self._buckets[old]
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) * self.every_s


@dataclass(slots=True)
class _Window:
    started: float
    written: int = 0
    suppressed: int = 0
    codes: dict[str, int] = field(default_factory=dict)


RefusalSink = Callable[[int, str, str, str], None]


class RefusalThrottle:
    """Record refusals (store row, audit entry) at most ``burst`` per offender per interval.

    Past the burst, refusals are only counted; the count is written as one
    ``RATE_LIMITED`` row when the offender's next interval begins or on
    :meth:`flush`. The offender is the authenticated node when the call got
    that far (``is_node`` says so), else the calling peer (:data:`PEER`):
    never a node id the caller merely claimed. A refusal that closes a
    node's task (:data:`~fedops.coordinator.result_intake.ANSWERS_TASK`: a rejected
    or declined update) is always written: the round's record needs it, and
    there is at most one per task the coordinator handed out.

    Args:
        record: where refusals go, ``(round, node, code, reason)``.
        is_node: whether a refusal's node is registered (so it authenticated).
        on_every: called for every refusal, written or not (metrics counters).
        interval_s: the accounting interval.
        burst: refusals written in full per offender per interval.
        max_offenders: offenders tracked at once; past it the oldest
            finished windows are flushed and forgotten.
        max_written: refusals written in full per interval, all offenders
            together; past it every new refusal is charged to one shared
            offender ``*``, so fresh addresses (an IPv6 prefix) buy nothing.
    """

    def __init__(
        self,
        record: RefusalSink,
        *,
        is_node: Callable[[str], bool] = lambda node: False,
        on_every: RefusalSink = lambda *refusal: None,
        interval_s: float = 60.0,
        burst: int = 3,
        max_offenders: int = 4096,
        max_written: int = 600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._record = record
        self._is_node = is_node
        self._on_every = on_every
        self.interval_s = interval_s
        self.burst = burst
        self.max_offenders = max_offenders
        self.max_written = max_written
        self._budget = _Window(started=clock())  # all offenders' writes this interval
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()
        self.refused = 0  # every refusal, recorded or not

    def offender(self, node: str, code: str) -> str:
        """Whom a refusal is charged to: a proven node, else the calling peer."""
        if code != "UNAUTHENTICATED" and node not in ("", "?") and self._is_node(node):
            return node
        peer = PEER.get()
        return f"peer:{peer}" if peer else node or "?"

    def __call__(self, server_round: int, node: str, code: str, reason: str) -> None:
        self._on_every(server_round, node, code, reason)
        if ANSWERS_TASK.get():
            with self._lock:
                self.refused += 1
            self._record(server_round, node, code, reason)
            return
        who = self.offender(node, code)
        now = self._clock()
        due: list[tuple[str, _Window]] = []
        with self._lock:
            self.refused += 1
            if now - self._budget.started >= self.interval_s:
                self._budget = _Window(started=now)
            if self._budget.written >= self.max_written:
                who = "*"
            window = self._windows.get(who)
            if window is not None and now - window.started >= self.interval_s:
                due.append((who, window))
                window = None
            if window is None:
                if len(self._windows) >= self.max_offenders:
                    due.extend(self._evict(now))
                window = self._windows[who] = _Window(started=now)
            write = window.written < self.burst
            if write:
                window.written += 1
                self._budget.written += 1
            else:
                window.suppressed += 1
                window.codes[code] = window.codes.get(code, 0) + 1
        for owner, old in due:
            self._summarize(server_round, owner, old)
        if write:
            self._record(server_round, node, code, reason)

    def flush(self) -> None:
        """Write every pending count (e.g. when the run ends)."""
        with self._lock:
            windows, self._windows = self._windows, {}
        for who, window in windows.items():
            self._summarize(0, who, window)

    def _evict(self, now: float) -> list[tuple[str, _Window]]:
        """Drop finished windows (lock held); if none are finished, the oldest half."""
        done = [(k, w) for k, w in self._windows.items() if now - w.started >= self.interval_s]
        if not done:
            ordered = sorted(self._windows.items(), key=lambda kw: kw[1].started)
            done = ordered[: max(1, len(ordered) // 2)]
        for key, _ in done:
            del self._windows[key]
        return done

    def _summarize(self, server_round: int, who: str, window: _Window) -> None:
        if not window.suppressed:
            return
        codes = ", ".join(f"{c} x{n}" for c, n in sorted(window.codes.items()))
        self._record(
            server_round,
            who[:64],
            "RATE_LIMITED",
            f"{window.suppressed} further refusals within {self.interval_s:.0f} s "
            f"not recorded one by one ({codes})",
        )
