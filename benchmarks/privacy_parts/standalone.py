"""Where the overhead comes from: server-side DP and the accountant on their own."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fedops.core.privacy import accountant as acct
from fedops.core.privacy.accountant import RoundEvent
from fedops.core.privacy.central import AdaptiveClipping, private_mean
from fedops.core.results import FitResult
from fedops.core.strategies.fedavg import FedAvg
from privacy_parts.modes import threadpool_limits


def interleaved_medians(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    """Median seconds of each function: one warm-up call each, then ``reps`` rounds in which
    every function runs once, in an order that rotates (drift hits them alike)."""
    for fn in fns.values():
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t)
    return {n: statistics.median(ts) for n, ts in times.items()}


def server_dp_cost(
    shapes: dict[str, np.ndarray], n: int, reps: int, seed: int = 0
) -> dict[str, float]:
    """private_mean (fixed, adaptive) and FedAvg.aggregate_fit over ``n`` updates."""
    rng = np.random.default_rng(seed)
    current = {k: v.astype(np.float32) for k, v in shapes.items()}
    trained = [
        {k: (v + rng.normal(0, 0.01, v.shape)).astype(np.float32) for k, v in current.items()}
        for _ in range(n)
    ]
    results = [
        FitResult(node_id=str(i), params=p, num_examples=10 + i % 7) for i, p in enumerate(trained)
    ]
    fedavg = FedAvg()
    noise_rng = np.random.default_rng(seed + 1)

    def dp(adaptive: AdaptiveClipping | None) -> Callable[[], Any]:
        return lambda: private_mean(
            current,
            trained,
            denominator=float(n),
            clip_norm=1.0,
            noise_multiplier=1.0,
            rng=noise_rng,
            adaptive=adaptive,
        )

    fns = {
        "fedavg_s": lambda: fedavg.aggregate_fit(1, current, results),
        "central_s": dp(None),
        "central_adaptive_s": dp(AdaptiveClipping()),
    }
    out = interleaved_medians(fns, reps)
    if threadpool_limits is not None:  # the same with numpy's BLAS on one thread
        with threadpool_limits(1, user_api="blas"):
            one = interleaved_medians(fns, reps)
        out.update({f"{k[:-2]}_blas1_s": v for k, v in one.items()})
    return out


#: (key, sampling, accountant) of each ε timing (one-round PLDs cached, as in the driver)
ACCOUNTING = (
    ("pld", "poisson", "pld"),  # the headline
    ("known", "known", "pld"),  # the no-amplification bound beside it
    ("rdp", "poisson", "rdp"),
)


def accountant_cost(rounds: list[int], q: float, reps: int) -> list[dict[str, float]]:
    """One ε computation after each number of rounds at σ = 1, δ = 1e-5, bypassing the
    per-history cache (the driver's history is new every round); and, once, the one-round
    Poisson PLD's construction (cached per event: paid in the first round only)."""
    uncached = acct._epsilon.__wrapped__

    def history(sampling: str, r: int) -> tuple[tuple[RoundEvent, int], ...]:
        rate = q if sampling == "poisson" else 1.0
        return ((RoundEvent(noise_multiplier=1.0, sampling=sampling, sample_rate=rate), r),)

    def one(h: tuple[tuple[RoundEvent, int], ...], accountant: str) -> Callable[[], float]:
        return lambda: float(uncached(h, 1e-5, accountant))

    fns: dict[str, Callable[[], Any]] = {
        f"{key}/{r}": one(history(sampling, r), accountant)
        for r in rounds
        for key, sampling, accountant in ACCOUNTING
    }
    event = history("poisson", 1)[0][0]
    build = acct._pld_one_round.__wrapped__
    fns["build"] = lambda: build(event, acct.PLD_INTERVAL)
    medians = interleaved_medians(fns, reps)
    keys = [key for key, *_ in ACCOUNTING]
    return [
        {
            "rounds": r,
            "pld_build_s": medians["build"],
            **{f"{k}_s": medians[f"{k}/{r}"] for k in keys},
            **{f"{k}_epsilon": fns[f"{k}/{r}"]() for k in keys},
        }
        for r in rounds
    ]
