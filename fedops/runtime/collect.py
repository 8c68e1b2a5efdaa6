"""Ask nodes for one thing and wait, bounded, until each answered, dropped or timed out."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from fedops.core.monitoring.profile import MonitorSpec
from fedops.core.params import Params
from fedops.core.rounds import Phase, ResultArrived, RoundTracker
from fedops.runtime.transport import StageRequest, Transport

log = logging.getLogger("fedops.driver")


def collect(
    transport: Transport,
    server_round: int,
    phase: Phase,
    nodes: Sequence[str],
    params: Params,
    config: Mapping[str, float],
    *,
    timeout_s: float,
    stage: StageRequest | None = None,
    monitor: MonitorSpec | None = None,
) -> RoundTracker:
    """Dispatch ``phase`` to ``nodes`` and feed their events to a tracker until it is done."""
    tasks: dict[str, str] = {}
    if nodes and monitor is not None:
        tasks = transport.dispatch(
            server_round, phase, list(nodes), params, config, monitor=monitor
        )
    elif nodes and stage is None:  # plain phases: transports without SecAgg support work too
        tasks = transport.dispatch(server_round, phase, list(nodes), params, config)
    elif nodes:
        tasks = transport.dispatch(server_round, phase, list(nodes), params, config, stage=stage)
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
