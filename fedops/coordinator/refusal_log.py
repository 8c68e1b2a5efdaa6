"""The operator log's lines about refused calls: a few per offender, then a count.

A peer can be refused tens of thousands of times a second (red team 2026-12: 49,456
refused ``PullTask`` calls in 15 s from one connection wrote 14 MB of WARNING
lines). The store and the audit log are throttled by
:class:`~fedops.coordinator.peer_guard.RefusalThrottle`; the log is throttled here
with the same token bucket (:class:`~fedops.coordinator.peer_guard.RateLimit`):
``burst`` lines per offender, then one per ``every_s`` seconds, and at most
``all_burst`` lines then one per ``all_every_s`` for all offenders together, so
fresh addresses buy no more lines. What is held back is counted and said in one
summary line at most every ``summary_s`` seconds, written by the next refusal
after that (a flood that stops leaves its last count to the store's record).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from fedops.wire.codec import loggable

__all__ = ["RefusalLog"]


class RefusalLog:
    """Logs refusals at ``logger``'s WARNING level, rate-limited per offender.

    The offender is the calling peer (:data:`~fedops.coordinator.peer_guard.PEER`:
    its certificate's name, or its address) when a call is being served, else the
    ``fallback`` given (a node id the caller merely claimed is not: it could
    choose a fresh one every call).
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 3,
        every_s: float = 20.0,
        all_burst: int = 30,
        all_every_s: float = 2.0,
        summary_s: float = 60.0,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # peer_guard imports result_intake, whose gate builds one of these: not at load time
        from fedops.coordinator.peer_guard import PEER, RateLimit

        self._peer = PEER
        self._logger = logger
        self._each = RateLimit(burst=burst, every_s=every_s, max_keys=max_keys, clock=clock)
        self._all = RateLimit(burst=all_burst, every_s=all_every_s, max_keys=1, clock=clock)
        self.summary_s = summary_s
        self.max_keys = max_keys
        self._clock = clock
        self._held: Counter[str] = Counter()  # offender -> lines held back since the summary
        self._since = clock()
        self._lock = threading.Lock()

    def offender(self, fallback: str) -> str:
        peer = self._peer.get()
        return f"peer:{peer}" if peer else fallback

    def warning(self, fallback: str, msg: str, *args: object) -> None:
        """``logger.warning(msg, *args)`` unless its offender has had its lines."""
        who = self.offender(fallback)
        allowed = self._each.wait_s(who) == 0.0 and self._all.wait_s("*") == 0.0
        if allowed:
            self._logger.warning(msg, *args)
        summary = self._count(who, held=not allowed)
        if summary:
            self._logger.warning("%s", summary)

    def _count(self, who: str, *, held: bool) -> str:
        """Count a held-back line; the summary line when one is due (then reset)."""
        now = self._clock()
        with self._lock:
            if held:
                if not self._held:  # the first line held back starts the summary's interval
                    self._since = now
                if who not in self._held and len(self._held) >= self.max_keys:
                    who = "others"  # fresh offenders past the cap share one count
                self._held[who] += 1
            if not self._held or now - self._since < self.summary_s:
                return ""
            counts, self._held, since = self._held, Counter(), self._since
            self._since = now
        top = ", ".join(f"{loggable(k, 80)}: {n}" for k, n in counts.most_common(3))
        return (
            f"{counts.total()} further refused calls not logged one by one in the last "
            f"{now - since:.0f} s, from {len(counts)} offender(s) (most: {top})"
        )
