"""The modes a workload runs in, and numpy's BLAS threads (set per mode's slot)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

try:  # optional: shows private_mean with numpy's BLAS on one thread beside the default
    from threadpoolctl import OpenBLASController, threadpool_info, threadpool_limits
except ImportError:  # pragma: no cover
    OpenBLASController = threadpool_info = threadpool_limits = None

#: mode -> (label, Hydra overrides on top of the workload's). A mode whose config does not
#: validate (not implemented yet, or not with this backend) is reported with validate's reason.
MODES: dict[str, tuple[str, list[str]]] = {
    "none": ("none (FedAvg)", []),
    "central": ("privacy=central", ["privacy=central"]),
    "central_poisson": (
        "privacy=central, as deployed (Poisson cohort from the CSPRNG)",
        ["privacy=central"],
    ),
    "central_adaptive": ("privacy=central_adaptive", ["privacy=central_adaptive"]),
    "distributed": (
        "privacy=distributed secagg=secaggplus",
        ["privacy=distributed", "secagg=secaggplus"],
    ),
    "secaggplus": ("secagg=secaggplus (no DP)", ["secagg=secaggplus"]),
    "central_blas1": ("privacy=central, 1 BLAS thread", ["privacy=central"]),
    "local": ("privacy=local (Opacus DP-SGD)", ["privacy=local"]),
}
#: modes whose slots run with numpy's BLAS limited to this many threads (threadpoolctl)
BLAS_LIMIT = {"central_blas1": 1}
#: DP modes that draw their own cohort (not handed the baseline's)
OWN_COHORT = {"central_poisson"}
SECTIONS = ("fit", "aggregate", "accounting")


def blas_setter(threads: int | None) -> Callable[[], None]:
    """Sets numpy's BLAS threads to ``threads`` (None: as they were at the start)."""
    if threadpool_info is None or threadpool_limits is None:
        return lambda: None
    if threads is None:
        threads = max(
            (p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=1
        )
    return lambda: set_blas_threads(threads)


def set_blas_threads(threads: int) -> None:
    """numpy's BLAS threads, process-wide. threadpoolctl (>= 3.6) lets only one thread set them
    and silently ignores the others; only one simulation runs at a time here, so take over."""
    assert threadpool_limits is not None
    with contextlib.suppress(AttributeError):
        OpenBLASController.clear_controlling_thread(force=True)  # type: ignore[attr-defined]
    threadpool_limits(threads, user_api="blas")


def blas_threads() -> str:
    """numpy's BLAS and its thread count (private_mean's norms used to go through BLAS)."""
    if threadpool_info is None:
        return "BLAS threads unknown (threadpoolctl is not installed)"
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    if not pools:
        return "no BLAS found"
    return "BLAS: " + ", ".join(
        f"{Path(p['filepath']).parent.name} {p['internal_api']} {p['num_threads']} threads"
        for p in pools
    )
