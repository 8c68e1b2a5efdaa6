"""(a) fedops' SecAgg+ round, driven in memory through the real state machines, and the
crypto floor it is compared with."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from harness import median_time, timed

from fedops.core.secagg import graph
from fedops.core.secagg.client import SecAggClient
from fedops.core.secagg.policy import SecAggPolicy
from fedops.core.secagg.server import DEFAULT_COMMITTEE, SecAggServer
from fedops.core.secagg.update import decode_mean, encode_update
from fedops.crypto import Crypto, Identity, TrustedKeys
from secagg_parts.workload import (
    CLIENT_STAGES,
    SIZE_SAMPLE,
    Workload,
    flat,
    make_workload,
    pick_dropped,
    reply_sizer,
)

SERVER_PARTS = ("setup", "keys", "shares", "masked", "consistency", "reveal", "finish", "decode")


@dataclass
class Tally:
    """One round's seconds: per client (index i) and stage, per server stage; and the sizes
    of the first surviving clients' replies (when a sizer is given)."""

    n: int
    dropped: frozenset[int]
    sizer: Callable[[Any], int] | None
    client_s: dict[str, np.ndarray] = field(init=False)
    server_s: dict[str, float] = field(init=False)
    sizes: dict[str, list[int]] = field(init=False)

    def __post_init__(self) -> None:
        self.client_s = {s: np.zeros(self.n + 1) for s in CLIENT_STAGES}
        self.server_s = dict.fromkeys(SERVER_PARTS, 0.0)
        self.sizes = {s: [] for s in ("keys", "shares", "masked", "reveal")}

    def size(self, stage: str, i: int, reply: Any) -> None:
        sampled = self.sizer is not None and len(self.sizes[stage]) < SIZE_SAMPLE
        if sampled and i not in self.dropped:
            self.sizes[stage].append(self.sizer(reply))

    def client(self, stage: str, i: int, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        out, dt = timed(fn, *args, **kw)
        self.client_s[stage][i] += dt
        return out

    def server(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        out, dt = timed(fn, *args)
        self.server_s[stage] += dt
        return out


def set_up(
    work: Workload, crypto: Crypto, t: Tally
) -> tuple[SecAggServer, dict[int, SecAggClient]]:
    """The server and every client. Every site signs its keys and the survivor set
    (Ed25519), as a site facing a malicious coordinator does; the keys are made outside the
    timings."""
    cohort = [f"site-{i}" for i in range(1, work.n + 1)]
    identities = {name: Identity.generate() for name in cohort}
    trusted = TrustedKeys({name: ident.key.public_key() for name, ident in identities.items()})
    server = t.server(
        "setup",
        lambda: SecAggServer(
            context=b"bench", cohort=cohort, vector_length=work.d + 1, clip=1.0, crypto=crypto
        ),
    )
    clients = {}
    for i in range(1, work.n + 1):
        setup = t.server("setup", server.setup_for, i)
        name = cohort[i - 1]
        clients[i] = t.client(
            "advertise",
            i,
            SecAggClient,
            setup,
            crypto,
            sign=identities[name].sign,
            verify=trusted,
            identity=name,
        )
    return server, clients


def share_keys(
    work: Workload, server: SecAggServer, clients: dict[int, SecAggClient], t: Tally
) -> dict[int, Any]:
    """Stages 1 (advertise keys) and 2 (share keys); the server's mask requests."""
    for i in range(1, work.n + 1):
        keys = t.client("advertise", i, clients[i].advertise, work.weights[i])
        t.size("keys", i, keys)
        t.server("keys", server.receive_keys, i, keys)
    reqs = t.server("keys", server.close_keys)
    for i in reqs:
        shares = t.client("share", i, clients[i].share, reqs[i])
        t.size("shares", i, shares)
        t.server("shares", server.receive_shares, i, shares)
    return t.server("shares", server.close_shares)


def mask_inputs(
    work: Workload,
    server: SecAggServer,
    clients: dict[int, SecAggClient],
    masks: dict[int, Any],
    t: Tally,
    seed: int,
) -> dict[int, Any]:
    """Stage 3: encode and mask each update; the dropped clients vanish here."""
    rng = np.random.default_rng(seed)
    for i in masks:
        if i in t.dropped:
            continue
        enc = masks[i].encoding
        vec, _ = t.client(
            "encode", i, encode_update, work.start, work.trained_for(i), work.weights[i], enc, rng
        )
        masked = t.client("mask", i, clients[i].mask, masks[i], vec)
        t.size("masked", i, masked)
        t.server("masked", server.receive_masked, i, masked)
    return t.server("masked", server.close_masked)


def check_and_unmask(
    server: SecAggServer, clients: dict[int, SecAggClient], checks: dict[int, Any], t: Tally
) -> Any:
    """Stages 4 (the consistency check) and 5 (unmask: verifies the neighbours' signatures
    first); the server's result."""
    for i in checks:
        signature = t.client("consistency", i, clients[i].sign_survivors, checks[i])
        t.server("consistency", server.receive_signature, i, signature)
    unmasks = t.server("consistency", server.close_consistency)
    for i in unmasks:
        reveal = t.client("unmask", i, clients[i].unmask, unmasks[i])
        t.size("reveal", i, reveal)
        t.server("reveal", server.receive_reveal, i, reveal)
    return t.server("finish", server.finish)


def round_figures(work: Workload, server: SecAggServer, result: Any, t: Tally) -> dict[str, Any]:
    """Decode the mean (timed), check it against the true one, and summarize the round."""
    params, _ = t.server(
        "decode", decode_mean, work.start, result.total, len(result.survivors), result.encoding
    )
    survivors = list(result.survivors)
    error = float(np.max(np.abs(flat(params) - work.expected_mean(survivors))))
    per_client = sum(t.client_s[s][survivors] for s in CLIENT_STAGES)
    k = server.degree
    pairs = sum(sum(1 for v in server.graph[u] if v in result.survivors) for u in sorted(t.dropped))
    return {
        "n": work.n,
        "d": work.d,
        "k": k,
        "threshold": graph.default_threshold(k),
        "survivors": len(survivors),
        "dropped": len(t.dropped),
        "dropped_pairs": pairs,
        "client_s": float(np.mean(per_client)),
        "client_stage_s": {s: float(np.mean(t.client_s[s][survivors])) for s in CLIENT_STAGES},
        "server_s": float(sum(t.server_s.values())),
        "server_stage_s": t.server_s,
        "max_error": error,
        "sizes": {s: float(np.mean(v)) for s, v in t.sizes.items() if v},
    }


def fedops_round(
    work: Workload,
    crypto: Crypto,
    dropped: frozenset[int] = frozenset(),
    sizer: Callable[[Any], int] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """One in-memory SecAgg+ round; per-client stage times, server stage times, sizes."""
    t = Tally(work.n, dropped, sizer)
    server, clients = set_up(work, crypto, t)
    masks = share_keys(work, server, clients, t)
    checks = mask_inputs(work, server, clients, masks, t, seed)
    result = check_and_unmask(server, clients, checks, t)
    return round_figures(work, server, result, t)


# --------------------------------------------------------------------------------------
# The crypto floor
# --------------------------------------------------------------------------------------
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
        "expand_s": median_time(lambda: crypto.expand(seed, words), reps),
        "add_s": median_time(add, reps),
        "exchange_s": median_time(lambda: own.exchange(peer), reps, inner=200),
        "sign_s": median_time(lambda: signer.sign(message), reps, inner=200),
        "verify_s": median_time(lambda: public.verify(signature, message), reps, inner=200),
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
# One size, in a fresh process
# --------------------------------------------------------------------------------------
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


def median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The first round's record with each timing replaced by the median over ``runs``."""
    c = dict(runs[0])
    if len(runs) > 1:
        med = statistics.median
        c["client_s"] = med(r["client_s"] for r in runs)
        c["server_s"] = med(r["server_s"] for r in runs)
        for key in ("client_stage_s", "server_stage_s"):
            c[key] = {s: med(r[key][s] for r in runs) for s in runs[0][key]}
        c["max_error"] = max(r["max_error"] for r in runs)
    return c


def add_floor_ratios(c: dict[str, Any], units: dict[str, float], n: int) -> None:
    """The floors of this round and fedops' ratios to them."""
    c["client_floor"] = client_floor(units, c["k"], n)
    c["server_floor"] = server_floor(units, c["survivors"], c["dropped_pairs"])
    client_floor_s = sum(c["client_floor"].values())
    c["client_ratio"] = c["client_s"] / client_floor_s
    c["client_ratio_no_encode"] = (c["client_s"] - c["client_stage_s"]["encode"]) / client_floor_s
    c["client_ratio_semi_honest"] = c["client_s"] / semi_honest(c["client_floor"])
    c["server_ratio"] = c["server_s"] / sum(c["server_floor"].values())


def fedops_cell(n: int, d: int, fraction: float, reps: int) -> dict[str, Any]:
    """Child process: warm up, time the floor's units, run ``reps`` rounds, keep medians."""
    crypto = Crypto()
    sizer, method = reply_sizer()
    fedops_round(make_workload(16, 1000), crypto, sizer=sizer)  # warm-up
    units = unit_costs(d + 1, crypto)
    work = make_workload(n, d)
    dropped = pick_dropped(n, fraction) if fraction else frozenset()
    c = median_round([fedops_round(work, crypto, dropped, sizer) for _ in range(reps)])
    c["reps"] = reps
    c["units"] = units
    c["size_method"] = method
    add_floor_ratios(c, units, n)
    stages = c["client_stage_s"]
    checking = stages["consistency"] + stages["unmask"]  # sign, verify the quorum, reveal
    c["train_s"] = local_training_s(n, d)
    c["consistency_share"] = checking / c["client_s"]
    c["consistency_share_round"] = checking / (c["client_s"] + c["train_s"])
    return c
