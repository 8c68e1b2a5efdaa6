"""Built-in federated datasets from scikit-learn's bundled data (no download).

Both follow the layout of the built-in digits task (``fedops.tasks.digits``), with the
same data and split functions (:mod:`fedops.data.bundled`): a fixed 15% of the rows is
held out for the coordinator's global evaluation, the rest is split across clients
(IID, or Dirichlet label skew), and each client keeps 20% of its share as its own test
split. ``tests/unit/data/test_sources.py`` proves that a simulated digits client sees
exactly the rows a deployed digits site loads.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from fedops.core import partition as partitioners
from fedops.data.bundled import breast_cancer_raw, holdout_split, site_split
from fedops.data.bundled import digits as _digits
from fedops.data.federated import FederatedData

PARTITIONS = ("iid", "dirichlet")
#: the fewest pooled rows a client needs: 2 for iid (one train, one test row), and
#: the Dirichlet partitioner's own minimum
MIN_ROWS = {"iid": 2, "dirichlet": 10}


def digits(*, num_clients: int, partition: str, alpha: float, seed: int) -> FederatedData:
    """scikit-learn's 8x8 digits (1797 images, 64 features in [0, 1], 10 classes).

    Client ``i``'s train/test rows equal ``fedops.tasks.digits.make_task(partition=,
    alpha=, seed=).load_data(i, num_clients)``, so a simulation and a deployment of the
    same configuration train on the same data.
    """
    x, y = _digits()
    return _federate("digits", x, y, 10, num_clients, partition, alpha, seed)


def breast_cancer(*, num_clients: int, partition: str, alpha: float, seed: int) -> FederatedData:
    """Wisconsin breast cancer (569 rows, 30 features, 2 classes), standardised.

    Means and standard deviations come from the federated pool only, so nothing about
    the coordinator's held-out rows leaks into the clients' features.
    """
    x, y = _breast_cancer()
    return _federate("breast_cancer", x, y, 2, num_clients, partition, alpha, seed)


@cache
def _breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    x, y = breast_cancer_raw()
    pool = holdout_split(len(x))[0]
    mean, std = x[pool].mean(axis=0), x[pool].std(axis=0)
    std[std == 0] = 1.0  # a constant feature stays 0 instead of becoming NaN
    return ((x - mean) / std).astype(np.float32), y


def _federate(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    num_clients: int,
    partition: str,
    alpha: float,
    seed: int,
) -> FederatedData:
    """Hold out the server rows, partition the pool, split each client, and flatten."""
    if partition not in PARTITIONS:
        raise ValueError(f"{name}: unknown partition {partition!r}; choose iid or dirichlet")
    pool, held = holdout_split(len(y))
    if num_clients < 1:
        raise ValueError(f"{name}: num_clients must be >= 1, got {num_clients}")
    most = len(pool) // MIN_ROWS[partition]
    if num_clients > most:
        raise partitioners.SplitError(
            f"{name}: {num_clients} clients is too many for its {len(pool)} federated rows; "
            f"a {partition} split allows at most {most} (each client needs "
            f"{MIN_ROWS[partition]} rows)"
        )
    if partition == "iid":
        parts = partitioners.iid(len(pool), num_clients, seed=seed)
    else:
        parts = partitioners.dirichlet(y[pool], num_clients, alpha=alpha, seed=seed)
    splits = [site_split(pool[p], seed, i) for i, p in enumerate(parts)]
    train = np.concatenate([tr for tr, _ in splits])
    test = np.concatenate([te for _, te in splits])
    return FederatedData(
        train_x=x[train],
        train_y=y[train],
        train_offsets=_offsets([len(tr) for tr, _ in splits]),
        test_x=x[test],
        test_y=y[test],
        test_offsets=_offsets([len(te) for _, te in splits]),
        num_classes=num_classes,
        server_x=x[held],
        server_y=y[held],
    )


def _offsets(sizes: list[int]) -> np.ndarray:
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return offsets
