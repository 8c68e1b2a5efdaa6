"""Ask nodes for one thing and wait, bounded, until each answered, dropped or timed out."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from fedops.core.rounds import ResultArrived, RoundTracker
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
    tasks = transport.dispatch(server_round, list(nodes), instruction) if nodes else {}
    tracker = RoundTracker(server_round=server_round, phase=phase, tasks=tasks)
    deadline = time.monotonic() + timeout_s
    while not tracker.done:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            tracker.expire()
            log.warning(
                "round %d %s: deadline passed; going on without %s",
                server_round,
                phase,
                ", ".join(n for n, o in tracker.outcomes.items() if o == "timed_out"),
            )
            break
        event = transport.next_event(min(remaining, 1.0))
        if event is None or not tracker.apply(event) or isinstance(event, ResultArrived):
            continue
        log.warning(
            "round %d %s: %s left the round: %s", server_round, phase, event.node_id, event.reason
        )
    return tracker
