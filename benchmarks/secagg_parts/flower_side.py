"""(b) Flower, in-process: its real SecAggPlusWorkflow and secaggplus_mod, connected by a
minimal in-memory Grid written here (no Ray, no network, one thread)."""

from __future__ import annotations

import copy
import importlib.util
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from harness import timed

from fedops.core.secagg import graph
from secagg_parts.workload import FLOWER_STAGES, SIZE_SAMPLE, Workload, make_workload, pick_dropped


def flower_available() -> bool:
    return importlib.util.find_spec("flwr") is not None


def flower_version() -> str:
    import flwr

    return str(flwr.__version__)


def _quiet_flower() -> None:
    logging.getLogger("flwr").setLevel(logging.ERROR)


@dataclass
class FlowerTally:
    """Seconds of each client stage (per node), of the inner fit call (excluded from the
    client stages), of the grid's own work (excluded from the server) and of the legacy
    aggregate_fit; sizes of the first replies of each stage."""

    n: int
    client_s: dict[str, np.ndarray] = field(init=False)
    fit_s: np.ndarray = field(init=False)
    sizes: dict[str, list[int]] = field(init=False)
    excluded: float = 0.0  # the grid's own work: message copies, size measurements
    aggregate_s: float = 0.0

    def __post_init__(self) -> None:
        self.client_s = {s: np.zeros(self.n + 1) for s in FLOWER_STAGES}
        self.fit_s = np.zeros(self.n + 1)
        self.sizes = {s: [] for s in FLOWER_STAGES}


def client_app(work: Workload, names: list[str], tally: FlowerTally) -> Any:
    """A ClientApp with secaggplus_mod whose "training" is the client's fixed update; an
    inner mod times the fit call so that it can be taken out of the client's stage time."""
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod

    class Client(NumPyClient):
        def __init__(self, node: int) -> None:
            self.node = node

        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            return (
                [work.trained_for(self.node)[name] for name in names],
                work.weights[self.node],
                {},
            )

    def inner(msg, ctx, call_next):  # type: ignore[no-untyped-def]
        out, dt = timed(call_next, msg, ctx)
        tally.fit_s[ctx.node_id] += dt
        return out

    return ClientApp(
        client_fn=lambda ctx: Client(ctx.node_id).to_client(), mods=[secaggplus_mod, inner]
    )


def delivered_copy(msg: Any) -> Any:
    """The message as the client receives it: a copy of its content, as a wire would make."""
    from flwr.app import Message

    msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
    delivered = Message(
        copy.deepcopy(msg.content),
        dst_node_id=msg.metadata.dst_node_id,
        message_type=msg.metadata.message_type,
        group_id=msg.metadata.group_id,
    )
    delivered.metadata.__dict__["_message_id"] = msg.metadata.message_id
    return delivered


def in_process_grid(
    app: Any, contexts: dict[int, Any], dropped: frozenset[int], tally: FlowerTally
) -> Any:
    """A Grid that delivers each message to the ClientApp right away and times each call."""
    from flwr.app import Error, Message
    from flwr.common import serde
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
    from flwr.serverapp.grid import Grid

    def deliver(msg: Any) -> Any:
        t = time.perf_counter()
        node = msg.metadata.dst_node_id
        stage = str(msg.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])
        delivered = delivered_copy(msg)
        tally.excluded += time.perf_counter() - t
        if stage == "collect_masked_vectors" and node in dropped:
            return Message(Error(code=0, reason="dropped"), reply_to=delivered)
        reply, dt = timed(app, delivered, contexts[node])
        tally.client_s[stage][node] += dt
        t = time.perf_counter()
        if len(tally.sizes[stage]) < SIZE_SAMPLE:
            tally.sizes[stage].append(serde.recorddict_to_proto(reply.content).ByteSize())
        tally.excluded += time.perf_counter() - t
        return reply

    class InProcessGrid(Grid):
        def set_run(self, run):  # type: ignore[no-untyped-def]
            pass

        @property
        def run(self):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def create_message(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def get_node_ids(self):  # type: ignore[no-untyped-def]
            return list(contexts)

        def push_messages(self, messages):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def pull_messages(self, message_ids):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
            return [deliver(msg) for msg in messages]

    return InProcessGrid()


def server_context(
    work: Workload, names: list[str], grid: Any, contexts: dict[int, Any], tally: FlowerTally
) -> Any:
    """Flower's legacy server context: FedAvg over every client (its aggregate_fit timed),
    a proxy per node, the start parameters and round 1's config."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import ConfigRecord, Context, RecordDict
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey

    n = work.n
    strategy = FedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n
    )
    real_aggregate = strategy.aggregate_fit

    def aggregate_fit(*args, **kwargs):  # type: ignore[no-untyped-def]
        out, tally.aggregate_s = timed(lambda: real_aggregate(*args, **kwargs))
        return out

    strategy.aggregate_fit = aggregate_fit  # type: ignore[method-assign]
    base = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    context = LegacyContext(base, config=ServerConfig(num_rounds=1), strategy=strategy)
    for i in contexts:
        context.client_manager.register(GridClientProxy(node_id=i, grid=grid, run_id=1))
    start = [work.start[name] for name in names]
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(start), keep_input=True
    )
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {WorkflowKey.CURRENT_ROUND: 1, WorkflowKey.START_TIME: 0.0}
    )
    return context


def flower_figures(
    work: Workload,
    context: Any,
    contexts: dict[int, Any],
    dropped: frozenset[int],
    tally: FlowerTally,
    wall: float,
) -> dict[str, Any]:
    """Check the result against the true mean and split the time into client and server."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.common import parameters_to_ndarrays
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    k = graph.default_degree(work.n)
    survivors = [i for i in contexts if i not in dropped]
    params = parameters_to_ndarrays(
        compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], True)
    )
    got = np.concatenate([np.asarray(a, np.float64).ravel() for a in params])
    error = float(np.max(np.abs(got - work.expected_mean(survivors))))
    secagg_client = {s: tally.client_s[s][survivors] for s in FLOWER_STAGES}
    secagg_client["collect_masked_vectors"] = (
        secagg_client["collect_masked_vectors"] - tally.fit_s[survivors]
    )
    all_client = sum(float(tally.client_s[s].sum()) for s in FLOWER_STAGES)
    return {
        "n": work.n,
        "d": work.d,
        "num_shares": k + 1,
        "threshold": k // 2 + 1,
        "survivors": len(survivors),
        "dropped": len(dropped),
        "client_s": float(np.mean(sum(secagg_client.values()))),
        "client_stage_s": {s: float(np.mean(v)) for s, v in secagg_client.items()},
        "fit_s": float(np.mean(tally.fit_s[survivors])),
        "server_s": wall - all_client - tally.excluded,
        "aggregate_fit_s": tally.aggregate_s,
        "grid_s": tally.excluded,
        "max_error": error,
        "sizes": {s: float(np.mean(v)) for s, v in tally.sizes.items() if v},
    }


def flower_round(
    work: Workload, dropped: frozenset[int] = frozenset(), seed: int = 0
) -> dict[str, Any]:
    """One round of Flower's SecAggPlusWorkflow + secaggplus_mod, in this process."""
    from flwr.app import Context, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.supercore.task_identity import TaskIdentity

    _quiet_flower()
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    random.seed(seed)  # Flower shuffles its ring with `random`, quantizes with `np.random`
    np.random.seed(seed)
    k = graph.default_degree(work.n)
    names = list(work.start)
    tally = FlowerTally(work.n)
    app = client_app(work, names, tally)
    contexts = {
        i: Context(run_id=1, node_id=i, node_config={}, state=RecordDict(), run_config={})
        for i in range(1, work.n + 1)
    }
    grid = in_process_grid(app, contexts, dropped, tally)
    context = server_context(work, names, grid, contexts, tally)
    workflow = SecAggPlusWorkflow(
        num_shares=k + 1, reconstruction_threshold=k // 2 + 1, clipping_range=1.0
    )
    _, wall = timed(workflow, grid, context)
    return flower_figures(work, context, contexts, dropped, tally, wall)


def flower_cell(n: int, d: int, fraction: float) -> dict[str, Any]:
    """Child process: one warm-up round, then the measured one."""
    flower_round(make_workload(8, 1000))
    dropped = pick_dropped(n, fraction) if fraction else frozenset()
    return flower_round(make_workload(n, d), dropped)
