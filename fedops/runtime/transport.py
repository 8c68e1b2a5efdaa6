"""The one narrow network seam between the round driver and the clients.

The driver hands the transport instructions and reads back events. gRPC
(:mod:`fedops.coordinator.grpc_transport`) and in-memory
(:mod:`fedops.simulation.inmemory`) transports implement it, so a deployed
round and a simulated round run through the same driver code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fedops.core.monitoring.profile import MonitorSpec
from fedops.core.params import Params, TensorSpec
from fedops.core.rounds import Event, Phase
from fedops.core.secagg.messages import Request
from fedops.core.train_settings import TrainSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class StageRequest:
    """One secure-aggregation stage: a message for each node, and what its answer carries."""

    messages: Mapping[str, Request]
    result_specs: tuple[TensorSpec, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Instruction:
    """What the nodes of one dispatch are asked to do: the one value the driver hands a
    transport. A feature of a phase is a field here, not a keyword on every transport."""

    phase: Phase
    params: Params  # the model to train or evaluate ({} for SecAgg stages that need none)
    config: Mapping[str, float] = field(default_factory=dict)
    #: a SecAgg stage: a message for each node; ``params`` is then the model the round
    #: trains, downloaded only at the masked-input stage
    stage: StageRequest | None = None
    #: evaluations: each node also answers with a drift and fairness report
    monitor: MonitorSpec | None = None
    #: fit (and SecAgg's training stage): the run's training settings for this round
    train: TrainSettings | None = None
    #: fit: node -> that node's whole config, for a strategy with a per-client fit config
    #: (:func:`~fedops.core.strategies.hooks.client_fit_configs`); a node not here gets ``config``
    client_configs: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def config_for(self, node: str) -> Mapping[str, float]:
        """The config ``node`` is sent: its own, else the dispatch's one ``config``."""
        return self.client_configs.get(node, self.config)

    def config_groups(self, nodes: Sequence[str]) -> list[tuple[list[str], Mapping[str, float]]]:
        """``nodes`` grouped by the config each is sent (first-seen order, and the nodes'
        order within a group): one group unless configs differ per client."""
        if not self.client_configs:  # everyone gets ``config``: no per-node sort and lookup
            return [(list(nodes), self.config)] if nodes else []
        groups: dict[tuple[tuple[str, float], ...], tuple[list[str], Mapping[str, float]]] = {}
        for node in nodes:
            config = self.config_for(node)
            key = tuple(sorted(config.items()))
            groups.setdefault(key, ([], config))[0].append(node)
        return list(groups.values())


class Transport(Protocol):
    def wait_for_nodes(self, count: int, timeout_s: float) -> list[str]:
        """Block until ``count`` nodes are available (or the timeout); return them."""
        ...

    def available_nodes(self) -> list[str]:
        """Nodes that are connected and have not been declared dropped."""
        ...

    def dispatch(
        self, server_round: int, nodes: Sequence[str], instruction: Instruction
    ) -> dict[str, str]:
        """Give each node a task carrying ``instruction``; return node id -> task id."""
        ...

    def next_event(self, timeout_s: float) -> Event | None:
        """The next result, rejection or dropout, or None after ``timeout_s``."""
        ...

    def fetch_initial_params(self, timeout_s: float) -> Params:
        """Ask the first available client for its freshly built model."""
        ...

    def close(self) -> None:
        """Tell every client the run is over and release resources."""
        ...
