"""Python's cyclic garbage collector held off during a round's per-client bursts.

Building a round's 100,000 results, participants rows and audit rows keeps hundreds of
thousands of new objects alive at once, and CPython answers that growth with a full
collection every ~25% of it, each walking the whole heap (0.1-0.2 s apiece, ten a round:
about 1 s of a 6 s simulated round at 100,000 clients). None of these objects form
cycles (reference counting frees them), so the collector finds nothing there; holding it
off until the burst ends, where it runs once, changes no output.

Held only around synchronous, CPU-bound work (a dispatch, the bookkeeping of a phase, a
commit), never around a wait for clients; nested and concurrent holds share one switch,
turned back on by the last to leave, and never on if it was off before the first. A
process forked inside a hold would start with it off: fedops's worker processes are
spawned, and before the first round.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]

_lock = threading.Lock()
_holders = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """No automatic cyclic collection inside the block (an explicit ``gc.collect()`` still
    runs); the collector is on again after it, as it was before."""
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()
