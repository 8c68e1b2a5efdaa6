"""Built-in task: scikit-learn's bundled 8x8 digits (1797 images, 10 classes).

Needs no download. A fixed 15% is held out for the coordinator's global
evaluation; the rest is split across sites (IID or Dirichlet label skew), and
each site keeps 20% of its share as its own test split, so federated
evaluation runs on data the site never trained on.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from fedops.core import partition
from fedops.tasks.base import Task
from fedops.tasks.models import MODELS

TEST_FRACTION = 0.2
HOLDOUT_FRACTION = 0.15
HOLDOUT_SEED = 20240101


@cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)


@cache
def _holdout_split() -> tuple[np.ndarray, np.ndarray]:
    """(federated indices, held-out indices): fixed, whatever the sites."""
    n = len(_digits()[1])
    order = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    n_hold = round(n * HOLDOUT_FRACTION)
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])


def _site_indices(num_sites: int, part: str, alpha: float, seed: int) -> list[np.ndarray]:
    pool = _holdout_split()[0]
    labels = _digits()[1][pool]
    if part == "iid":
        parts = partition.iid(len(pool), num_sites, seed=seed)
    else:
        parts = partition.dirichlet(labels, num_sites, alpha=alpha, seed=seed)
    return [pool[p] for p in parts]


def _split(indices: np.ndarray, seed: int, site: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng([seed, site]).permutation(indices)
    n_test = max(1, round(len(order) * TEST_FRACTION))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def make_task(
    *, model: str = "logreg", partition: str = "dirichlet", alpha: float = 0.5, seed: int = 0
) -> Task:
    """The digits task with the given model and split of the data across sites."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {sorted(MODELS)}")
    if partition not in ("iid", "dirichlet"):
        raise ValueError(f"unknown partition {partition!r}; choose iid or dirichlet")

    def build_model():
        return MODELS[model](64, 10)

    def load_data(site: int, num_sites: int):
        if not 0 <= site < num_sites:
            raise ValueError(f"site must be in [0, {num_sites}), got {site}")
        x, y = _digits()
        idx = _site_indices(num_sites, partition, alpha, seed)[site]
        tr, te = _split(idx, seed, site)
        return (x[tr], y[tr]), (x[te], y[te])

    def load_server_data():
        x, y = _digits()
        held = _holdout_split()[1]
        return x[held], y[held]

    return Task(
        name=f"digits-{model}",
        build_model=build_model,
        load_data=load_data,
        load_server_data=load_server_data,
        options={"model": model, "partition": partition, "alpha": alpha, "seed": seed},
    )
