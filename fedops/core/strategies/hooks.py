"""Two OPTIONAL strategy methods: a fit config per client, and the fit metrics' reduction.

A :class:`~fedops.core.strategies.protocol.Strategy` tells every selected client the
same ``fit_config(server_round)`` and the round's training metrics are their
example-weighted mean. A strategy that wants more implements one or both of:

- :class:`ClientConfigStrategy`: ``client_fit_config(server_round, client, base)``,
  the keys that client's fit config changes or adds (Flower's ``configure_fit``);
- :class:`FitMetricsStrategy`: ``aggregate_fit_metrics(server_round, results)``,
  its own reduction of the clients' reported training metrics.

The driver calls them through :func:`client_fit_configs` and :func:`fit_metrics`, which
treat a strategy without the method as before and check what one returns.

Example:
    >>> from dataclasses import dataclass
    >>> from fedops.core.strategies import FedProx
    >>> @dataclass(frozen=True)
    ... class Stiff(FedProx):
    ...     def client_fit_config(self, server_round, client, base):
    ...         return {"proximal_mu": 1.0} if client.site == "hospital-b" else {}
    >>> clients = [ClientInfo(node_id=n, site=n, index=i, cohort_size=2)
    ...            for i, n in enumerate(["hospital-a", "hospital-b"])]
    >>> configs = client_fit_configs(Stiff(mu=0.1), 1, clients, {"proximal_mu": 0.1, "seed": 0})
    >>> configs["hospital-b"]
    {'proximal_mu': 1.0, 'seed': 0.0}
"""

from __future__ import annotations

import numbers
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fedops.core.results import FitResult, StageResult, weighted_metrics
from fedops.core.strategies.protocol import Strategy

#: fit-config keys the run owns and a site checks (the shuffle seed, Flower's round, the
#: training settings that travel only in ``Task.train``): never set per client
RESERVED_CONFIG_KEYS = frozenset(
    {"seed", "server-round", "epochs", "batch_size", "lr", "optimizer", "momentum", "lr_decay"}
)
#: key prefixes the run owns: local DP (``dp_noise_multiplier``, ``dp_delta`` ...) and SecAgg
RESERVED_CONFIG_PREFIXES = ("dp_", "secagg_")
#: metric names the round's metrics line already holds (the driver's own)
RESERVED_METRICS = frozenset(
    {
        "round",
        "num_clients",
        "num_eval_clients",
        "eval_loss",
        "eval_accuracy",
        "round_aborted",
        "duration_s",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientInfo:
    """Who a per-client fit config is for: a node of the round's cohort."""

    node_id: str  # the transport's id of the node (``site-3`` in a simulation)
    site: str  # the site's name, as the participants table shows it
    index: int  # its place among the round's selected nodes, 0-based
    cohort_size: int  # how many nodes the round selected


@runtime_checkable
class ClientConfigStrategy(Strategy, Protocol):
    """A :class:`Strategy` that tells each selected client its own fit config.

    Threat: a per-client config lets the coordinator tell one client apart, e.g. a
    distinct value (a huge ``proximal_mu`` that pins its model) that fingerprints that
    client's contribution to a secure-aggregation sum, and the hook learns the round's
    cohort, which central DP keeps secret (its sampling amplification) while the
    strategy post-processes the released model. The runs refuse the method under
    SecAgg+ and central or distributed DP; the keys a site checks or the run owns
    (:data:`RESERVED_CONFIG_KEYS`, :data:`RESERVED_CONFIG_PREFIXES`, those a round
    plug-in adds) are never set per client. A site still checks every value it gets
    (``proximal_mu`` within its bounds), per client as for the round's config.
    """

    def client_fit_config(
        self, server_round: int, client: ClientInfo, base: Mapping[str, float]
    ) -> dict[str, float]:
        """The keys ``client``'s fit config changes or adds to the round's ``base``."""
        ...


@runtime_checkable
class FitMetricsStrategy(Strategy, Protocol):
    """A :class:`Strategy` that reduces the clients' training metrics its own way."""

    def aggregate_fit_metrics(
        self, server_round: int, results: Sequence[FitResult | StageResult]
    ) -> dict[str, float]:
        """The round's training metrics from each client's reported ``metrics`` and
        ``num_examples``: they go into the round's metrics line as named (the
        plug-ins' own, such as ε spent, win over a name they share)."""
        ...


def client_fit_configs(
    strategy: Strategy,
    server_round: int,
    clients: Sequence[ClientInfo],
    base: Mapping[str, float],
    *,
    reserved: Collection[str] = (),
) -> dict[str, dict[str, float]]:
    """Each client's fit config, ``base`` updated by the strategy's ``client_fit_config``;
    ``{}`` for a strategy without it (every client gets ``base``).

    Raises:
        ValueError: the hook set a key the run owns (:data:`RESERVED_CONFIG_KEYS`, a
            reserved prefix, or one of ``reserved``: those a round plug-in added), or
            a value that is not a real number.
    """
    if not isinstance(strategy, ClientConfigStrategy):
        return {}
    configs: dict[str, dict[str, float]] = {}
    for client in clients:
        asked = strategy.client_fit_config(server_round, client, dict(base))
        configs[client.node_id] = {
            **{k: float(v) for k, v in base.items()},
            **_checked_config(strategy.name, client, asked, reserved),
        }
    return configs


def _checked_config(
    name: str, client: ClientInfo, asked: Mapping[str, float], reserved: Collection[str]
) -> dict[str, float]:
    where = f"strategy {name!r}: client_fit_config for {client.site!r}"
    if not isinstance(asked, Mapping):
        raise ValueError(f"{where} returned {type(asked).__name__}, not a dict of numbers")
    out: dict[str, float] = {}
    for key, value in asked.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{where}: key {key!r} is not a non-empty string")
        if (
            key in RESERVED_CONFIG_KEYS
            or key in reserved
            or key.startswith(RESERVED_CONFIG_PREFIXES)
        ):
            raise ValueError(
                f"{where} sets {key!r}, a key the run owns and every site checks (the "
                "run's training, seed, privacy and secure-aggregation settings): it cannot "
                "differ per client"
            )
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{where}: {key}={value!r} is not a number")
        out[key] = float(value)
    return out


def fit_metrics(
    strategy: Strategy, server_round: int, results: Sequence[FitResult | StageResult]
) -> dict[str, float]:
    """The round's training metrics as its metrics line shows them: the example-weighted
    mean ``train_loss`` (if every result reports one), updated by the strategy's
    ``aggregate_fit_metrics`` if it has one (which may replace ``train_loss`` too: the
    robust strategies put the median across sites there, which no claimed count moves).

    Raises:
        ValueError: the hook returned a name the metrics line already holds
            (:data:`RESERVED_METRICS`) or a value that is not a real number.
    """
    mean = weighted_metrics(results)
    out = {"train_loss": mean["train_loss"]} if "train_loss" in mean else {}
    if not isinstance(strategy, FitMetricsStrategy):
        return out
    got = strategy.aggregate_fit_metrics(server_round, results)
    where = f"strategy {strategy.name!r}: aggregate_fit_metrics"
    if not isinstance(got, Mapping):
        raise ValueError(f"{where} returned {type(got).__name__}, not a dict of numbers")
    for key, value in got.items():
        if not isinstance(key, str) or not key or key in RESERVED_METRICS:
            raise ValueError(
                f"{where}: the name {key!r} is not a string or is one the round's metrics "
                f"line already holds ({sorted(RESERVED_METRICS)})"
            )
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{where}: {key}={value!r} is not a number")
        out[key] = float(value)
    return out
