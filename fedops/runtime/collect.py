"""Ask nodes for one thing and wait, bounded, until each answered, dropped or timed out."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from fedops.core.rounds import ResultArrived, RoundTracker
from fedops.runtime.gc_pause import gc_paused
from fedops.runtime.transport import Instruction, Transport

log = logging.getLogger("fedops.driver")


def collect(
    transport: Transport,
    server_round: int,
    nodes: Sequence[str],
    instruction: Instruction,
    *,
    timeout_s: float,
) -> RoundTracker:
    """Dispatch ``instruction`` to ``nodes`` and feed their events to a tracker until done."""
    phase = instruction.phase
    with gc_paused():  # a simulated dispatch builds every node's result here (gc_pause)
        tasks = transport.dispatch(server_round, list(nodes), instruction) if nodes else {}
    tracker = RoundTracker(server_round=server_round, phase=phase, tasks=tasks)
    deadline = time.monotonic() + timeout_s
    # bound once: this loop runs once per node (100,000 times in a large simulated round)
    next_event, apply, monotonic = transport.next_event, tracker.apply, time.monotonic
    while not tracker.done:
        remaining = deadline - monotonic()
        if remaining <= 0:
            tracker.expire()
            log.warning(
                "round %d %s: deadline passed; going on without %s",
                server_round,
                phase,
                ", ".join(n for n, o in tracker.outcomes.items() if o == "timed_out"),
            )
            break
        event = next_event(remaining if remaining < 1.0 else 1.0)
        if event is None or not apply(event) or isinstance(event, ResultArrived):
            continue
        log.warning(
            "round %d %s: %s left the round: %s", server_round, phase, event.node_id, event.reason
        )
    return tracker
