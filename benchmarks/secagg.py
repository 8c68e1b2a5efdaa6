"""SecAgg+ cost: fedops against its crypto floor and against Flower's SecAgg+, in one run.

    python benchmarks/secagg.py                 # full run, about 5 minutes on 2 cores
    python benchmarks/secagg.py --quick         # about 1 minute
    python benchmarks/secagg.py --json out.json # also write every figure as JSON

Workload (both frameworks): n clients, d float32 parameters (a weight matrix plus a bias),
one round of SecAgg+ with neighbourhood degree k = 2*ceil(log2 n) and threshold k/2 + 1
(fedops' defaults; Flower gets ``num_shares = k + 1`` (its neighbourhood counts the client
itself) and ``reconstruction_threshold = k/2 + 1``), clip 1.0. Each client's "training" is a
fixed small update (one of 4 precomputed deltas), so only secure aggregation is timed. Every
round's result is decoded and checked against the true weighted mean (printed as max error).

(a) fedops against the crypto floor. The fedops round is driven in memory through the real
    state machines (``fedops.core.secagg``) with the real primitives (``fedops.crypto.Crypto``):
    * client time = SecAggClient() + advertise + share + encode_update + mask + unmask, summed
      per client and averaged over the clients that finished the round (every client is run
      and timed, none is sampled);
    * server time = SecAggServer() + setup_for + every receive_* and close_* + finish
      + decode_mean.
    The floor is the crypto work the protocol cannot avoid, timed on this machine with the
    same primitives (medians of repeated calls, times the count):
    * client: (k + 1) PRG expansions of d + 1 uint32 words (1 self mask, k pairwise masks;
      ``Crypto.expand``, AES-256-CTR), (k + 1) in-place numpy uint32 adds (mod 2^32), 2k
      raw X25519 exchanges (k share keys, k mask seeds) on already-parsed key objects, and
      the signatures a malicious coordinator makes necessary (Ed25519, ``cryptography``):
      2 signatures (its keys, the survivor set) and k + q verifications (its neighbours'
      keys, q = ⌊m/2⌋ + 1 of the committee of m = min(n, 64) over the survivor set). The
      ratio to the floor without them (the semi-honest protocol's floor) is printed too;
    * server: one expansion per survivor's self mask, one add per survivor's input and per
      self mask, and for each dropped client, per surviving neighbour: 1 X25519 exchange,
      1 expansion and 1 add (its pairwise mask).
    Not in the floor: quantization (encode_update), Shamir sharing, AES-GCM of the shares,
    key generation, key parsing, HKDF. Ratio = fedops / floor (the issue's goal: <= 2x).
    Dropouts (--dropout-cells, default n = 100 and 1000 at d = 100k): 5% of the clients drop
    at the masked-input stage: they shared their keys but never send a masked input, so the
    server must rebuild their mask keys and remove their pairwise masks (the recovery cost). A
    client vanishing after its masked input costs nothing extra: its self mask is removed like
    any survivor's.

(b) fedops against Flower's SecAgg+ (flwr 1.42), two ways:
    * in-process (sizes with n*d <= --flower-max-work, 1e8 by default: n = 1000 at d = 1M
      would take Flower several minutes and ~10 GB here; --flower-max-work 0 runs it too):
      Flower's real ``SecAggPlusWorkflow`` (server) and its
      ``secaggplus_mod`` on a ``ClientApp`` (NumPyClient via client_fn) exchange their real
      ``Message`` objects through a minimal in-memory ``Grid`` written here (no Ray, no network,
      one thread, like the fedops run). Client time = the ClientApp call for each of the 4
      stages, minus the inner ``fit`` call (the training and Flower's legacy FitIns/FitRes
      conversion around it); server time = the workflow's wall time minus all client time and
      the grid's message copies. Same n, k, threshold, clip, d and dropped clients as fedops.
      Flower's shamir splits each secret in 16-byte chunks on a thread pool; everything else
      runs on one thread.
    * Ray simulation (n = 100, d = 100k; skipped by --quick): ``flwr.simulation.run_simulation``
      with a ServerApp running ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`` and the
      ClientApp with ``secaggplus_mod``, against the same apps without secure aggregation
      (``default_fit_workflow``, no mod); 2 Ray actors (1 CPU each). The fit stage of each round
      is timed in the ServerApp; SecAgg+ cost = median over rounds 2..R of secagg minus plain.
      This includes Flower's per-message framework cost of the 3 extra round trips and runs
      the clients on 2 cores, so it is reported next to, not instead of, the in-process figure.
    Ratio = Flower / fedops (the issue's goal: fedops >= 10x faster).

(c) Bytes each client uploads per round. fedops: the real protobuf messages from
    ``fedops.wire.secagg.reply_to_proto`` (``SecAggReply.ByteSize()``, plus the masked vector's
    raw bytes and its TensorSpec), for the replies of the first clients of the round; if that
    module cannot be used, the sizes are computed from the message dataclasses' fields (4 bytes
    per integer) and the output says so. Flower: ``serde.recorddict_to_proto(reply).ByteSize()``
    of its real replies. Plain update = 4 * d bytes of float32.

Every size runs in a fresh (spawned) process, so each starts from the same allocator state
(whether numpy's large temporaries cost page faults depends on what ran before) and gives its
memory back; fedops at n = 1000, d = 1M holds 1000 masked vectors (4 GB) and is skipped, with
the reason printed, if the memory is not available. Timings use time.perf_counter after one
warm-up round of each framework in that process; the smallest size is repeated (median of
--reps), larger ones run once. The machine is shared: compare within a run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import logging
import multiprocessing
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedops.core.secagg import graph
from fedops.core.secagg.client import SecAggClient
from fedops.core.secagg.policy import SecAggPolicy
from fedops.core.secagg.server import DEFAULT_COMMITTEE, SecAggServer
from fedops.core.secagg.update import decode_mean, encode_update
from fedops.crypto import Crypto, Identity, TrustedKeys

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
POOL = 4  # distinct client updates, reused round-robin
SIZE_SAMPLE = 5  # clients whose replies are measured for (c)
CLIENT_STAGES = ("advertise", "share", "encode", "mask", "consistency", "unmask")
SERVER_STAGES = ("keys", "shares", "masked", "consistency", "reveal", "finish")
FLOWER_STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")


# --------------------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------------------
@dataclass
class Workload:
    """n clients' start and trained parameters, and their example counts."""

    n: int
    d: int
    start: dict[str, np.ndarray]
    trained: list[dict[str, np.ndarray]]  # POOL variants; client i uses trained[i % POOL]
    weights: dict[int, int]

    def trained_for(self, i: int) -> dict[str, np.ndarray]:
        return self.trained[i % POOL]

    def expected_mean(self, clients: list[int] | tuple[int, ...]) -> np.ndarray:
        """start + example-weighted mean update of ``clients``, flattened (float64)."""
        start = flat(self.start)
        acc = np.zeros_like(start)
        for j in range(POOL):
            w = sum(self.weights[i] for i in clients if i % POOL == j)
            if w:
                acc += w * (flat(self.trained[j]) - start)
        return start + acc / sum(self.weights[i] for i in clients)


def flat(params: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in params.values()])


def make_workload(n: int, d: int, seed: int = 0) -> Workload:
    """A d-parameter model (weight rows x 100, plus a bias): start in [-0.5, 0.5], updates ~0.01."""
    rows = max((d - 100) // 100, 1)
    shapes = {"fc.weight": (rows, 100), "fc.bias": (d - rows * 100,)}
    rng = np.random.default_rng(seed)
    start = {
        k: np.clip(rng.normal(0, 0.1, s), -0.5, 0.5).astype(np.float32) for k, s in shapes.items()
    }
    trained = [
        {k: (v + rng.normal(0, 0.01, v.shape)).astype(np.float32) for k, v in start.items()}
        for _ in range(POOL)
    ]
    weights = {i: 10 + i % 7 for i in range(1, n + 1)}
    return Workload(n=n, d=d, start=start, trained=trained, weights=weights)


def pick_dropped(n: int, fraction: float, seed: int = 1) -> frozenset[int]:
    count = round(n * fraction)
    rng = np.random.default_rng(seed)
    return frozenset(int(x) + 1 for x in rng.choice(n, size=count, replace=False))


def mem_available_bytes() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


# --------------------------------------------------------------------------------------
# (c) message sizes
# --------------------------------------------------------------------------------------
def _computed_size(reply: Any) -> int:
    """Bytes of a fedops reply from its dataclass fields (4 bytes per integer)."""
    from fedops.core.secagg.messages import MaskedInput, PublicKeys, Reveal, ShareKeys

    if isinstance(reply, PublicKeys):
        return (
            4
            + len(reply.cipher_key)
            + len(reply.mask_key)
            + 4
            + len(reply.identity)
            + len(reply.signature)
        )
    if isinstance(reply, ShareKeys):
        return sum(8 + len(s.ciphertext) for s in reply.shares) + len(reply.commitment)
    if isinstance(reply, MaskedInput):
        return reply.vector.nbytes + 4 * len(reply.complaints)
    if isinstance(reply, Reveal):
        return sum(4 + len(s) for _, s in reply.self_mask + reply.mask_key)
    raise TypeError(type(reply))


def reply_sizer() -> tuple[Callable[[Any], int], str]:
    """Measure with fedops' protobuf mapping if it works here, else compute from fields."""
    try:
        from fedops.core.secagg.messages import PublicKeys
        from fedops.v1 import fedops_pb2 as pb
        from fedops.wire.secagg import reply_to_proto

        def proto_size(reply: Any) -> int:
            header, payload = reply_to_proto(reply)
            size = header.ByteSize()
            for name, arr in payload.items():
                spec = pb.TensorSpec(name=name, dtype=str(arr.dtype), shape=list(arr.shape))
                size += spec.ByteSize() + arr.nbytes
            return size

        proto_size(PublicKeys(index=1, cipher_key=bytes(32), mask_key=bytes(32), num_examples=1))
        return proto_size, "protobuf (fedops.wire.secagg.reply_to_proto; ByteSize + raw tensor)"
    except Exception as exc:  # the wire module is optional here; say why it was not used
        why = f"{type(exc).__name__}: {exc}"
        return _computed_size, f"computed from the dataclass fields (protobuf unavailable: {why})"


# --------------------------------------------------------------------------------------
# (a) fedops round
# --------------------------------------------------------------------------------------
def fedops_round(
    work: Workload,
    crypto: Crypto,
    dropped: frozenset[int] = frozenset(),
    sizer: Callable[[Any], int] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """One in-memory SecAgg+ round; per-client stage times, server stage times, sizes."""
    n, d = work.n, work.d
    ids = list(range(1, n + 1))
    client_s = {s: np.zeros(n + 1) for s in CLIENT_STAGES}
    server_s: dict[str, float] = dict.fromkeys(
        ("setup", "keys", "shares", "masked", "consistency", "reveal", "finish", "decode"), 0.0
    )
    sizes: dict[str, list[int]] = {s: [] for s in ("keys", "shares", "masked", "reveal")}

    def size(stage: str, i: int, reply: Any) -> None:
        if sizer is not None and len(sizes[stage]) < SIZE_SAMPLE and i not in dropped:
            sizes[stage].append(sizer(reply))

    cohort = [f"site-{i}" for i in ids]
    # every site signs its keys and the survivor set (Ed25519), as a site facing a malicious
    # coordinator does; the keys are made outside the timings
    identities = {name: Identity.generate() for name in cohort}
    trusted = TrustedKeys({name: ident.key.public_key() for name, ident in identities.items()})
    server, dt = timed(
        lambda: SecAggServer(
            context=b"bench", cohort=cohort, vector_length=d + 1, clip=1.0, crypto=crypto
        )
    )
    server_s["setup"] += dt
    clients = {}
    for i in ids:
        setup, dt = timed(server.setup_for, i)
        server_s["setup"] += dt
        name = cohort[i - 1]
        clients[i], dt = timed(
            SecAggClient,
            setup,
            crypto,
            sign=identities[name].sign,
            verify=trusted,
            identity=name,
        )
        client_s["advertise"][i] += dt

    for i in ids:  # stage 1
        keys, dt = timed(clients[i].advertise, work.weights[i])
        client_s["advertise"][i] += dt
        size("keys", i, keys)
        server_s["keys"] += timed(server.receive_keys, i, keys)[1]
    reqs, dt = timed(server.close_keys)
    server_s["keys"] += dt

    for i in reqs:  # stage 2
        shares, dt = timed(clients[i].share, reqs[i])
        client_s["share"][i] += dt
        size("shares", i, shares)
        server_s["shares"] += timed(server.receive_shares, i, shares)[1]
    masks, dt = timed(server.close_shares)
    server_s["shares"] += dt

    rng = np.random.default_rng(seed)
    for i in masks:  # stage 3; the dropped clients vanish here
        if i in dropped:
            continue
        enc = masks[i].encoding
        (vec, _), dt = timed(
            encode_update, work.start, work.trained_for(i), work.weights[i], enc, rng
        )
        client_s["encode"][i] += dt
        masked, dt = timed(clients[i].mask, masks[i], vec)
        client_s["mask"][i] += dt
        size("masked", i, masked)
        server_s["masked"] += timed(server.receive_masked, i, masked)[1]
    checks, dt = timed(server.close_masked)
    server_s["masked"] += dt

    for i in checks:  # stage 4: the consistency check
        signature, dt = timed(clients[i].sign_survivors, checks[i])
        client_s["consistency"][i] += dt
        server_s["consistency"] += timed(server.receive_signature, i, signature)[1]
    unmasks, dt = timed(server.close_consistency)
    server_s["consistency"] += dt

    for i in unmasks:  # stage 5 (verifies the neighbours' signatures first)
        reveal, dt = timed(clients[i].unmask, unmasks[i])
        client_s["unmask"][i] += dt
        size("reveal", i, reveal)
        server_s["reveal"] += timed(server.receive_reveal, i, reveal)[1]
    result, server_s["finish"] = timed(server.finish)
    (params, _), server_s["decode"] = timed(
        decode_mean, work.start, result.total, len(result.survivors), result.encoding
    )

    survivors = list(result.survivors)
    error = float(np.max(np.abs(flat(params) - work.expected_mean(survivors))))
    per_client = sum(client_s[s][survivors] for s in CLIENT_STAGES)
    k = server.degree
    pairs = sum(sum(1 for v in server.graph[u] if v in result.survivors) for u in sorted(dropped))
    del server, clients, result
    return {
        "n": n,
        "d": d,
        "k": k,
        "threshold": graph.default_threshold(k),
        "survivors": len(survivors),
        "dropped": len(dropped),
        "dropped_pairs": pairs,
        "client_s": float(np.mean(per_client)),
        "client_stage_s": {s: float(np.mean(client_s[s][survivors])) for s in CLIENT_STAGES},
        "server_s": float(sum(server_s.values())),
        "server_stage_s": server_s,
        "max_error": error,
        "sizes": {s: float(np.mean(v)) for s, v in sizes.items() if v},
    }


# --------------------------------------------------------------------------------------
# (a) the crypto floor
# --------------------------------------------------------------------------------------
def _median_time(fn: Callable[[], Any], reps: int, inner: int = 1) -> float:
    fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        out.append((time.perf_counter() - t) / inner)
    return statistics.median(out)


def unit_costs(words: int, crypto: Crypto, reps: int = 7) -> dict[str, float]:
    """Seconds for one expansion of ``words`` words, one in-place add, one X25519 exchange."""
    seed = os.urandom(32)
    acc = np.zeros(words, dtype=np.uint32)
    mask = crypto.expand(seed, words)

    def add() -> None:
        nonlocal acc
        acc += mask

    own, peer = X25519PrivateKey.generate(), X25519PrivateKey.generate().public_key()
    signer = Ed25519PrivateKey.generate()
    message = os.urandom(200)
    signature, public = signer.sign(message), signer.public_key()
    return {
        "expand_s": _median_time(lambda: crypto.expand(seed, words), reps),
        "add_s": _median_time(add, reps),
        "exchange_s": _median_time(lambda: own.exchange(peer), reps, inner=200),
        "sign_s": _median_time(lambda: signer.sign(message), reps, inner=200),
        "verify_s": _median_time(lambda: public.verify(signature, message), reps, inner=200),
    }


def client_floor(units: dict[str, float], k: int, n: int) -> dict[str, float]:
    quorum = SecAggPolicy().quorum(min(n, DEFAULT_COMMITTEE))
    return {
        "prg_s": (k + 1) * units["expand_s"],
        "add_s": (k + 1) * units["add_s"],
        "agree_s": 2 * k * units["exchange_s"],
        "sign_s": 2 * units["sign_s"] + (k + quorum) * units["verify_s"],
    }


def semi_honest(floor: dict[str, float]) -> float:
    """The floor without the signatures (what a protocol against an honest server needs)."""
    return sum(v for key, v in floor.items() if key != "sign_s")


def server_floor(units: dict[str, float], survivors: int, pairs: int) -> dict[str, float]:
    return {
        "prg_s": (survivors + pairs) * units["expand_s"],
        "add_s": (2 * survivors + pairs) * units["add_s"],
        "agree_s": pairs * units["exchange_s"],
    }


# --------------------------------------------------------------------------------------
# (b) Flower, in-process: its real workflow and mod, connected by a minimal Grid
# --------------------------------------------------------------------------------------
def flower_available() -> bool:
    return importlib.util.find_spec("flwr") is not None


def flower_version() -> str:
    import flwr

    return str(flwr.__version__)


def _quiet_flower() -> None:
    logging.getLogger("flwr").setLevel(logging.ERROR)


def flower_round(
    work: Workload, dropped: frozenset[int] = frozenset(), seed: int = 0
) -> dict[str, Any]:
    """One round of Flower's SecAggPlusWorkflow + secaggplus_mod, in this process."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays, serde
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey
    from flwr.serverapp.grid import Grid
    from flwr.supercore.task_identity import TaskIdentity

    _quiet_flower()
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    random.seed(seed)  # Flower shuffles its ring with `random`, quantizes with `np.random`
    np.random.seed(seed)
    n = work.n
    k = graph.default_degree(n)
    names = list(work.start)
    client_s = {s: np.zeros(n + 1) for s in FLOWER_STAGES}
    fit_s = np.zeros(n + 1)
    excluded = 0.0  # the grid's own work: message copies, size measurements
    sizes: dict[str, list[int]] = {s: [] for s in FLOWER_STAGES}

    class Client(NumPyClient):  # "training": this client's fixed update
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
        fit_s[ctx.node_id] += dt
        return out

    app = ClientApp(
        client_fn=lambda ctx: Client(ctx.node_id).to_client(), mods=[secaggplus_mod, inner]
    )
    contexts = {
        i: Context(run_id=1, node_id=i, node_config={}, state=RecordDict(), run_config={})
        for i in range(1, n + 1)
    }

    class InProcessGrid(Grid):
        """Delivers each message to the ClientApp right away (a copy, as a wire would)."""

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
            nonlocal excluded
            replies = []
            for msg in messages:
                t = time.perf_counter()
                node = msg.metadata.dst_node_id
                stage = str(msg.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])
                msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
                delivered = Message(
                    copy.deepcopy(msg.content),
                    dst_node_id=node,
                    message_type=msg.metadata.message_type,
                    group_id=msg.metadata.group_id,
                )
                delivered.metadata.__dict__["_message_id"] = msg.metadata.message_id
                excluded += time.perf_counter() - t
                if stage == "collect_masked_vectors" and node in dropped:
                    replies.append(Message(Error(code=0, reason="dropped"), reply_to=delivered))
                    continue
                reply, dt = timed(app, delivered, contexts[node])
                client_s[stage][node] += dt
                t = time.perf_counter()
                if len(sizes[stage]) < SIZE_SAMPLE:
                    sizes[stage].append(serde.recorddict_to_proto(reply.content).ByteSize())
                excluded += time.perf_counter() - t
                replies.append(reply)
            return replies

    grid = InProcessGrid()
    strategy = FedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n
    )
    aggregate_s = 0.0
    real_aggregate = strategy.aggregate_fit

    def aggregate_fit(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal aggregate_s
        out, aggregate_s = timed(lambda: real_aggregate(*args, **kwargs))
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
    workflow = SecAggPlusWorkflow(
        num_shares=k + 1, reconstruction_threshold=k // 2 + 1, clipping_range=1.0
    )
    _, wall = timed(workflow, grid, context)

    survivors = [i for i in contexts if i not in dropped]
    params = parameters_to_ndarrays(
        compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], True)
    )
    got = np.concatenate([np.asarray(a, np.float64).ravel() for a in params])
    error = float(np.max(np.abs(got - work.expected_mean(survivors))))
    secagg_client = {s: client_s[s][survivors] for s in FLOWER_STAGES}
    secagg_client["collect_masked_vectors"] = (
        secagg_client["collect_masked_vectors"] - fit_s[survivors]
    )
    all_client = sum(float(client_s[s].sum()) for s in FLOWER_STAGES)
    return {
        "n": n,
        "d": work.d,
        "num_shares": k + 1,
        "threshold": k // 2 + 1,
        "survivors": len(survivors),
        "dropped": len(dropped),
        "client_s": float(np.mean(sum(secagg_client.values()))),
        "client_stage_s": {s: float(np.mean(v)) for s, v in secagg_client.items()},
        "fit_s": float(np.mean(fit_s[survivors])),
        "server_s": wall - all_client - excluded,
        "aggregate_fit_s": aggregate_s,
        "grid_s": excluded,
        "max_error": error,
        "sizes": {s: float(np.mean(v)) for s, v in sizes.items() if v},
    }


# --------------------------------------------------------------------------------------
# (b) Flower, Ray simulation (a child process per run; PYTHONPATH makes this module
#     importable as `secagg` in the Ray workers)
# --------------------------------------------------------------------------------------
_RAY_DELTAS: dict[tuple[int, ...], np.ndarray] = {}


def ray_client_fn(context):  # type: ignore[no-untyped-def]
    """The Ray runs' ClientApp client: replies with the received parameters plus a fixed update."""
    from flwr.client import NumPyClient

    class Client(NumPyClient):
        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            out = []
            for p in parameters:
                if p.shape not in _RAY_DELTAS:
                    _RAY_DELTAS[p.shape] = np.random.default_rng(0).normal(0, 0.01, p.shape)
                out.append((p + _RAY_DELTAS[p.shape]).astype(p.dtype))
            return out, 10, {}

    return Client().to_client()


def ray_child(spec_path: str) -> int:
    """Child process: one Flower run_simulation, secagg or plain; writes fit times as JSON."""
    from flwr.client import ClientApp
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.default_workflows import default_fit_workflow
    from flwr.simulation import run_simulation

    spec = json.loads(Path(spec_path).read_text())
    n, rounds, secagg = spec["clients"], spec["rounds"], spec["mode"] == "secagg"
    work = make_workload(2, spec["params"])
    k = graph.default_degree(n)
    fit_s: list[float] = []
    server_app = ServerApp()

    @server_app.main()
    def _main(grid, context) -> None:  # type: ignore[no-untyped-def]
        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=n,
            min_available_clients=n,
            initial_parameters=ndarrays_to_parameters(list(work.start.values())),
        )
        legacy = LegacyContext(context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        fit = (
            SecAggPlusWorkflow(
                num_shares=k + 1, reconstruction_threshold=k // 2 + 1, clipping_range=1.0
            )
            if secagg
            else default_fit_workflow
        )

        def timed_fit(grid, ctx) -> None:  # type: ignore[no-untyped-def]
            fit_s.append(timed(fit, grid, ctx)[1])

        DefaultWorkflow(fit_workflow=timed_fit)(grid, legacy)

    client_app = ClientApp(client_fn=ray_client_fn, mods=[secaggplus_mod] if secagg else [])
    t = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=n,
        backend_name="ray",
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": spec["cpus"], "num_gpus": 0},
        },
    )
    wall = time.perf_counter() - t
    if len(fit_s) != rounds:
        raise RuntimeError(f"Flower finished {len(fit_s)} of {rounds} rounds")
    Path(spec["result"]).write_text(json.dumps({"fit_s": fit_s, "wall_s": wall}))
    return 0


def _session_members(sid: int) -> list[int]:
    """Processes in session ``sid`` (the child's own session: Ray's processes included)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) == sid:  # fields after the name: state ppid pgrp session
                pids.append(int(entry.name))
    return pids


def run_ray(mode: str, clients: int, params: int, rounds: int, timeout: float) -> dict[str, Any]:
    """One Ray simulation in its own session; never raises for a failed run."""
    with tempfile.TemporaryDirectory(prefix="secagg-ray-") as tmp:
        work = Path(tmp)
        spec = {
            "mode": mode,
            "clients": clients,
            "params": params,
            "rounds": rounds,
            "cpus": os.cpu_count() or 2,
            "result": str(work / "result.json"),
        }
        (work / "spec.json").write_text(json.dumps(spec))
        env = {
            **os.environ,
            "FLWR_TELEMETRY_ENABLED": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        code = "import sys, secagg; sys.exit(secagg.ray_child(sys.argv[1]))"
        log_path = work / "log.txt"
        t = time.perf_counter()
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", code, str(work / "spec.json")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=HERE,
                start_new_session=True,
            )
            status = "ok"
            try:
                if proc.wait(timeout=timeout) != 0:
                    status = f"failed (exit {proc.returncode})"
            except subprocess.TimeoutExpired:
                status = f"timed out after {timeout:.0f} s"
            for pid in _session_members(proc.pid):  # whatever of this run is left (Ray)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait()
        out: dict[str, Any] = {"status": status, "process_s": time.perf_counter() - t}
        if status == "ok":
            out.update(json.loads(Path(spec["result"]).read_text()))
        else:
            out["log_tail"] = log_path.read_text(errors="replace").splitlines()[-20:]
        return out


# --------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------
def _fmt_d(d: int) -> str:
    return (
        f"{d // 1_000_000}M" if d % 1_000_000 == 0 else f"{d // 1000}k" if d % 1000 == 0 else str(d)
    )


def _ms(s: float) -> str:
    return f"{s * 1e3:.2f}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}")
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    print("| " + " | ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |")


def print_skipped(cells: list[dict]) -> None:
    for c in cells:
        if "skipped" in c:
            print(f"    * n={c['n']} d={_fmt_d(c['d'])}: skipped, {c['skipped']}")


def _span(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}x" if values else "-"


def print_summary(results: dict[str, Any]) -> None:
    """The issue's goals against this run's figures."""
    done = [c for c in results["fedops"] if "skipped" not in c]
    print("\nGoals")
    print(
        f"  fedops <= 2x its crypto floor: client {_span([c['client_ratio'] for c in done])} "
        f"({_span([c['client_ratio_no_encode'] for c in done])} without encode_update; "
        f"{_span([c['client_ratio_semi_honest'] for c in done])} of the floor without the "
        "signatures), "
        f"server {_span([c['server_ratio'] for c in done])}"
    )
    big = [c for c in done if c["d"] >= 1_000_000 and not c.get("dropped")]
    if big:
        secagg = ", ".join(f"{c['consistency_share']:.1%}" for c in big)
        whole = ", ".join(
            f"{c['consistency_share_round']:.1%} (training {_ms(c['train_s'])} ms)" for c in big
        )
        print(
            f"  consistency check <= 10% of a round at d = 1M: {secagg} of the SecAgg+ client "
            f"work alone; {whole} of a round with the site's default local training"
        )
    fl = results.get("flower")
    if isinstance(fl, dict):
        ok = [f for f in fl["inprocess"] if "skipped" not in f]
        print(
            "  Flower / fedops >= 10x (in-process): "
            f"client {_span([f['client_ratio'] for f in ok])}, "
            f"server {_span([f['server_ratio'] for f in ok])}, "
            f"whole protocol {_span([f['total_ratio'] for f in ok])}"
        )
        ray = fl.get("ray")
        if isinstance(ray, dict) and "ratio" in ray:
            print(f"  Flower / fedops >= 10x (Ray simulation, n={ray['n']}): {ray['ratio']:.1f}x")


def report(results: dict[str, Any]) -> None:
    cells = results["fedops"]
    rows = []
    for c in cells:
        if "skipped" in c:
            rows.append([str(c["n"]), _fmt_d(c["d"])] + ["-"] * 10 + ["skipped*"])
            continue
        cf, sf = c["client_floor"], c["server_floor"]
        rows.append(
            [
                str(c["n"]),
                _fmt_d(c["d"]),
                f"{c['k']}/{c['threshold']}",
                f"{c['dropped']}",
                _ms(c["client_s"]),
                _ms(sum(cf.values())),
                f"{c['client_ratio']:.2f}x",
                f"{c['client_ratio_no_encode']:.2f}x",
                f"{c['server_s']:.3f}",
                f"{sum(sf.values()):.3f}",
                f"{c['server_ratio']:.2f}x",
                f"{c['max_error']:.1e}",
                f"reps {c['reps']}",
            ]
        )
    print_table(
        "(a) fedops SecAgg+ vs the crypto floor, per round (client: mean over all n clients, each "
        "run and timed; 'w/o encode': client time without encode_update, which the floor omits)",
        [
            "n",
            "d",
            "k/t",
            "dropped",
            "client ms",
            "floor ms",
            "ratio",
            "w/o encode",
            "server s",
            "floor s",
            "ratio",
            "max err",
            "note",
        ],
        rows,
    )
    print_skipped(cells)
    rows = []
    for c in cells:
        if "skipped" in c:
            continue
        cf, sf, cs = c["client_floor"], c["server_floor"], c["client_stage_s"]
        rows.append(
            [
                str(c["n"]),
                _fmt_d(c["d"]),
                str(c["dropped"]),
                f"{_ms(cf['prg_s'])} / {_ms(cf['add_s'])} / {_ms(cf['agree_s'])} / "
                f"{_ms(cf['sign_s'])}",
                " / ".join(_ms(cs[s]) for s in CLIENT_STAGES),
                f"{sf['prg_s']:.3f} / {sf['add_s']:.3f} / {sf['agree_s']:.3f}",
                " / ".join(f"{c['server_stage_s'][s]:.3f}" for s in SERVER_STAGES),
            ]
        )
    print_table(
        "    floor parts and where fedops' time goes",
        [
            "n",
            "d",
            "dropped",
            "client floor PRG/add/X25519/Ed25519 ms",
            f"client {'/'.join(CLIENT_STAGES)} ms",
            "server floor PRG/add/X25519 s",
            f"server {'/'.join(SERVER_STAGES)} s",
        ],
        rows,
    )
    for d, u in results["units"].items():
        print(
            f"    unit costs at d={_fmt_d(int(d))} (median): expand {u['expand_s'] * 1e3:.3f} ms "
            f"({4 * (int(d) + 1) / u['expand_s'] / 1e9:.1f} GB/s), add {u['add_s'] * 1e3:.3f} ms, "
            f"X25519 exchange {u['exchange_s'] * 1e6:.1f} us, Ed25519 sign "
            f"{u['sign_s'] * 1e6:.1f} us / verify {u['verify_s'] * 1e6:.1f} us"
        )

    fl = results.get("flower")
    if isinstance(fl, str):
        print(f"\n(b) Flower: skipped: {fl}")
    elif fl:
        rows = []
        for f in fl["inprocess"]:
            if "skipped" in f:
                rows.append(
                    [str(f["n"]), _fmt_d(f["d"]), str(f.get("dropped", 0))]
                    + ["-"] * 7
                    + ["skipped*"]
                )
                continue
            rows.append(
                [
                    str(f["n"]),
                    _fmt_d(f["d"]),
                    str(f["dropped"]),
                    _ms(f["fedops_client_s"]),
                    _ms(f["client_s"]),
                    f"{f['client_ratio']:.1f}x",
                    f"{f['fedops_server_s']:.3f}",
                    f"{f['server_s']:.3f}",
                    f"{f['server_ratio']:.1f}x",
                    f"{f['total_ratio']:.1f}x",
                    f"{f['max_error']:.1e}",
                ]
            )
        print_table(
            f"(b) fedops vs Flower {fl['version']} SecAgg+, in-process "
            "(Flower's SecAggPlusWorkflow + secaggplus_mod over an in-memory Grid)",
            [
                "n",
                "d",
                "dropped",
                "fedops client ms",
                "Flower client ms",
                "Flower/fedops",
                "fedops server s",
                "Flower server s",
                "Flower/fedops",
                "total CPU Flower/fedops",
                "Flower max err",
            ],
            rows,
        )
        print_skipped(fl["inprocess"])
        rows = [
            [
                str(f["n"]),
                _fmt_d(f["d"]),
                str(f["dropped"]),
                " / ".join(_ms(f["client_stage_s"][s]) for s in FLOWER_STAGES),
                _ms(f["fit_s"]),
                f"{f['aggregate_fit_s']:.3f}",
            ]
            for f in fl["inprocess"]
            if "skipped" not in f
        ]
        print_table(
            "    Flower's client stages (setup/share_keys/collect_masked_vectors/unmask; the fit "
            "call is excluded) and its legacy aggregate_fit (inside its server time)",
            ["n", "d", "dropped", "client stages ms", "excluded fit ms", "aggregate_fit s"],
            rows,
        )
        ray = fl.get("ray")
        if isinstance(ray, str):
            print(f"\n    Ray simulation: skipped: {ray}")
        elif ray:
            print(
                f"\n    Ray simulation (run_simulation, n={ray['n']}, d={_fmt_d(ray['d'])}, "
                f"{ray['rounds']} rounds, 2 actors):"
            )
            for mode in ("secagg", "plain"):
                r = ray[mode]
                if r["status"] != "ok":
                    print(f"      {mode}: {r['status']}")
                    for line in r.get("log_tail", []):
                        print(f"        {line}")
                else:
                    fits = ", ".join(f"{x:.2f}" for x in r["fit_s"])
                    print(
                        f"      {mode:6s}: fit stage per round {fits} s "
                        f"(process {r['process_s']:.0f} s)"
                    )
            if "secagg_overhead_s" in ray:
                print(
                    f"      SecAgg+ cost per round (median of rounds 2..R, secagg - plain): "
                    f"{ray['secagg_overhead_s']:.2f} s wall; fedops' whole protocol for the same "
                    f"n, d (server + all clients, one thread): {ray['fedops_total_s']:.3f} s "
                    f"-> {ray['ratio']:.1f}x"
                )

    by = results["bytes"]
    rows = []
    for b in by["cells"]:
        rows.append(
            [str(b["n"]), _fmt_d(b["d"]), "fedops"]
            + [f"{b['fedops'].get(s, 0):,.0f}" for s in ("keys", "shares", "masked", "reveal")]
            + [f"{b['fedops_total']:,.0f}", f"{b['plain']:,.0f}", f"{b['fedops_ratio']:.4f}"]
        )
        if "flower" in b:
            rows.append(
                [str(b["n"]), _fmt_d(b["d"]), "Flower"]
                + [f"{b['flower'].get(s, 0):,.0f}" for s in FLOWER_STAGES]
                + [f"{b['flower_total']:,.0f}", f"{b['plain']:,.0f}", f"{b['flower_ratio']:.4f}"]
            )
    print_table(
        "(c) bytes uploaded per client per round (mean of the first clients' replies)",
        [
            "n",
            "d",
            "framework",
            "stage 1 keys",
            "stage 2 shares",
            "stage 3 masked",
            "stage 4 reveal",
            "total",
            "plain float32",
            "total/plain",
        ],
        rows,
    )
    print(f"    fedops sizes: {by['method']}")
    if any("flower" in b for b in by["cells"]):
        print(
            "    Flower sizes: serde.recorddict_to_proto(reply.content).ByteSize() of its replies"
        )


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------
def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in a new interpreter: every size starts from the same allocator state
    (numpy's temporaries cost page faults or not depending on what ran before) and gives its
    memory back when done."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


def local_training_s(n: int, d: int, reps: int = 3) -> float:
    """One site's local training of a round, as ``fedops client`` does it by default (5
    epochs, batch 16, SGD) on its share of the bundled digits (85% of 1797 rows for
    training across ``n`` sites, 80% of a share kept for training), for a one-hidden-layer
    MLP with about ``d`` parameters: the part of a round the in-memory SecAgg+ round leaves
    out, so that the consistency check's share of a whole round can be given too."""
    import torch
    from sklearn.datasets import load_digits

    from fedops.core.training import TrainConfig, train

    torch.set_num_threads(1)
    x, y = load_digits(return_X_y=True)
    rows = max(1, round(len(x) * 0.85 / n * 0.8))
    data = (
        torch.tensor(x[:rows] / 16.0, dtype=torch.float32),
        torch.tensor(y[:rows], dtype=torch.long),
    )
    hidden = max(1, (d - 10) // 75)  # 64*h + h + 10*h + 10 parameters
    cfg = TrainConfig(epochs=5, batch_size=16, lr=0.5)
    times = []
    for _ in range(reps):
        model = torch.nn.Sequential(
            torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
        )
        start = time.perf_counter()
        train(model, data, cfg)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fedops_cell(n: int, d: int, fraction: float, reps: int) -> dict[str, Any]:
    """Child process: warm up, time the floor's units, run ``reps`` rounds, keep medians."""
    crypto = Crypto()
    sizer, method = reply_sizer()
    fedops_round(make_workload(16, 1000), crypto, sizer=sizer)  # warm-up
    units = unit_costs(d + 1, crypto)
    work = make_workload(n, d)
    dropped = pick_dropped(n, fraction) if fraction else frozenset()
    runs = [fedops_round(work, crypto, dropped, sizer) for _ in range(reps)]
    c = dict(runs[0])
    if reps > 1:  # the median of each figure
        med = statistics.median
        c["client_s"] = med(r["client_s"] for r in runs)
        c["server_s"] = med(r["server_s"] for r in runs)
        for key in ("client_stage_s", "server_stage_s"):
            c[key] = {s: med(r[key][s] for r in runs) for s in runs[0][key]}
        c["max_error"] = max(r["max_error"] for r in runs)
    c["reps"] = reps
    c["units"] = units
    c["size_method"] = method
    c["client_floor"] = client_floor(units, c["k"], n)
    c["server_floor"] = server_floor(units, c["survivors"], c["dropped_pairs"])
    c["client_ratio"] = c["client_s"] / sum(c["client_floor"].values())
    c["client_ratio_no_encode"] = (c["client_s"] - c["client_stage_s"]["encode"]) / sum(
        c["client_floor"].values()
    )
    c["client_ratio_semi_honest"] = c["client_s"] / semi_honest(c["client_floor"])
    c["server_ratio"] = c["server_s"] / sum(c["server_floor"].values())
    stages = c["client_stage_s"]
    checking = stages["consistency"] + stages["unmask"]  # sign, verify the quorum, reveal
    c["train_s"] = local_training_s(n, d)
    c["consistency_share"] = checking / c["client_s"]
    c["consistency_share_round"] = checking / (c["client_s"] + c["train_s"])
    return c


def flower_cell(n: int, d: int, fraction: float) -> dict[str, Any]:
    """Child process: one warm-up round, then the measured one."""
    flower_round(make_workload(8, 1000))
    dropped = pick_dropped(n, fraction) if fraction else frozenset()
    return flower_round(make_workload(n, d), dropped)


def run_fedops(args: argparse.Namespace) -> list[dict]:
    cells: list[dict] = []
    plan = [(n, d, 0.0) for d in args.params for n in args.clients]
    plan += [(n, d, args.dropout) for n, d in args.dropout_cells]
    for n, d, frac in plan:
        need = n * 4 * (d + 1) * 1.3 + (1 << 30)  # the server holds every masked vector
        if need > mem_available_bytes():
            why = f"needs ~{need / 1e9:.1f} GB, {mem_available_bytes() / 1e9:.1f} GB available"
            cells.append({"n": n, "d": d, "dropped": 0, "skipped": why})
            print(f"fedops n={n} d={_fmt_d(d)}: skipped ({why})", flush=True)
            continue
        reps = args.reps if n * d <= args.rep_limit else 1
        c, dt = timed(in_fresh_process, fedops_cell, n, d, frac, reps)
        cells.append(c)
        print(
            f"fedops n={n} d={_fmt_d(d)} dropped={c['dropped']}: client {_ms(c['client_s'])} ms "
            f"({c['client_ratio']:.2f}x floor), server {c['server_s']:.3f} s "
            f"({c['server_ratio']:.2f}x floor) [{dt:.1f} s]",
            flush=True,
        )
    return cells


def run_flower(args: argparse.Namespace, fedops_cells: list[dict]) -> dict[str, Any] | str:
    if not flower_available():
        return "flwr is not installed (pip install 'flwr[simulation]')"
    out: dict[str, Any] = {"version": flower_version(), "inprocess": []}
    for c in fedops_cells:
        n, d = c["n"], c["d"]
        if "skipped" in c or (c["dropped"] and (n, d) not in args.flower_dropout_cells):
            continue
        if args.flower_max_work and n * d > args.flower_max_work:
            why = (
                f"n*d above --flower-max-work {args.flower_max_work:.0e} (Flower needs minutes "
                "here at this size); --flower-max-work 0 runs it"
            )
            out["inprocess"].append({"n": n, "d": d, "dropped": c["dropped"], "skipped": why})
            print(f"Flower n={n} d={_fmt_d(d)} dropped={c['dropped']}: skipped ({why})", flush=True)
            continue
        frac = args.dropout if c["dropped"] else 0.0
        f, dt = timed(in_fresh_process, flower_cell, n, d, frac)
        f["fedops_client_s"], f["fedops_server_s"] = c["client_s"], c["server_s"]
        f["client_ratio"] = f["client_s"] / c["client_s"]
        f["server_ratio"] = f["server_s"] / c["server_s"]
        f["total_ratio"] = (n * f["client_s"] + f["server_s"]) / (n * c["client_s"] + c["server_s"])
        out["inprocess"].append(f)
        print(
            f"Flower n={n} d={_fmt_d(d)} dropped={f['dropped']}: client {_ms(f['client_s'])} ms "
            f"({f['client_ratio']:.1f}x fedops), server {f['server_s']:.3f} s "
            f"({f['server_ratio']:.1f}x fedops) [{dt:.1f} s]",
            flush=True,
        )
    if args.no_ray:
        out["ray"] = "--quick or --no-ray"
        return out
    n, d = args.ray_size
    base = next(
        (
            c
            for c in fedops_cells
            if c["n"] == n and c["d"] == d and not c["dropped"] and "skipped" not in c
        ),
        None,
    )
    if base is None:
        out["ray"] = f"no fedops figure for n={n}, d={d} to compare with"
        return out
    ray: dict[str, Any] = {"n": n, "d": d, "rounds": args.ray_rounds}
    for mode in ("secagg", "plain"):
        print(
            f"Flower Ray simulation ({mode}, n={n}, d={_fmt_d(d)}, {args.ray_rounds} rounds)...",
            flush=True,
        )
        ray[mode] = run_ray(mode, n, d, args.ray_rounds, args.ray_timeout)
    if ray["secagg"]["status"] == "ok" and ray["plain"]["status"] == "ok":

        def steady(r: dict) -> float:
            return statistics.median(r["fit_s"][1:] if len(r["fit_s"]) > 1 else r["fit_s"])

        ray["secagg_overhead_s"] = steady(ray["secagg"]) - steady(ray["plain"])
        ray["fedops_total_s"] = n * base["client_s"] + base["server_s"]
        ray["ratio"] = ray["secagg_overhead_s"] / ray["fedops_total_s"]
    out["ray"] = ray
    return out


def bytes_table(fedops_cells: list[dict], flower: dict | str, method: str) -> dict[str, Any]:
    cells = []
    for c in fedops_cells:
        if "skipped" in c or c["dropped"] or not c.get("sizes"):
            continue
        b: dict[str, Any] = {"n": c["n"], "d": c["d"], "plain": 4 * c["d"], "fedops": c["sizes"]}
        b["fedops_total"] = sum(c["sizes"].values())
        b["fedops_ratio"] = b["fedops_total"] / b["plain"]
        if isinstance(flower, dict):
            f = next(
                (
                    x
                    for x in flower["inprocess"]
                    if x["n"] == c["n"]
                    and x["d"] == c["d"]
                    and not x.get("dropped")
                    and "skipped" not in x
                ),
                None,
            )
            if f:
                b["flower"] = f["sizes"]
                b["flower_total"] = sum(f["sizes"].values())
                b["flower_ratio"] = b["flower_total"] / b["plain"]
        cells.append(b)
    return {"method": method, "cells": cells}


def _pairs(values: list[str]) -> list[tuple[int, int]]:
    out = []
    for v in values:
        n, d = v.lower().split("x")
        out.append((int(n), int(float(d))))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="d=100k only, Flower at n=100 only, no Ray (~1 min)"
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--params", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dropout", type=float, default=0.05, help="fraction dropping in stage 3")
    p.add_argument(
        "--dropout-cells",
        nargs="*",
        default=["100x100000", "1000x100000"],
        help="NxD sizes also run with dropouts",
    )
    p.add_argument(
        "--flower-dropout-cells",
        nargs="*",
        default=["100x100000"],
        help="NxD sizes Flower also runs with dropouts",
    )
    p.add_argument("--reps", type=int, default=3, help="repetitions (median) of small sizes")
    p.add_argument(
        "--rep-limit", type=float, default=1e7, help="repeat only sizes with n*d <= this"
    )
    p.add_argument(
        "--flower-max-work",
        type=float,
        default=1e8,
        help="skip Flower in-process above this n*d (0: no limit)",
    )
    p.add_argument("--no-flower", action="store_true")
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--ray-size", default="100x100000", help="NxD of the Ray simulation")
    p.add_argument("--ray-rounds", type=int, default=3)
    p.add_argument("--ray-timeout", type=float, default=300)
    args = p.parse_args(argv)
    if args.quick:
        args.params = [100_000]
        args.dropout_cells = ["100x100000"]
        args.no_ray = True
        args.flower_max_work = 1e7
    args.dropout_cells = _pairs(args.dropout_cells)
    args.flower_dropout_cells = _pairs(args.flower_dropout_cells)
    args.ray_size = _pairs([args.ray_size])[0]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    load_start = os.getloadavg()[0]
    print(
        f"SecAgg+ benchmark: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{mem_available_bytes() / 2**30:.1f} GiB available, Python {platform.python_version()}, "
        f"numpy {np.__version__}, load average {load_start:.2f}; each size in a fresh process",
        flush=True,
    )
    fedops_cells = run_fedops(args)
    flower: dict[str, Any] | str = (
        "--no-flower" if args.no_flower else run_flower(args, fedops_cells)
    )
    done = [c for c in fedops_cells if "skipped" not in c]
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "load_avg_start": load_start,
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "units": {str(c["d"]): c["units"] for c in done},
        "fedops": fedops_cells,
        "flower": flower,
        "bytes": bytes_table(fedops_cells, flower, done[0]["size_method"] if done else "-"),
    }
    report(results)
    print_summary(results)
    wall = time.perf_counter() - t0
    results["wall_s"] = wall
    results["machine"]["load_avg_end"] = os.getloadavg()[0]
    print(
        f"\ntotal {wall:.0f} s; load average at start {load_start:.2f}, at the end "
        f"{os.getloadavg()[0]:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
