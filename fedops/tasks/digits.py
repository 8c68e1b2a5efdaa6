"""Built-in task: scikit-learn's bundled 8x8 digits (1797 images, 10 classes).

Needs no download. A fixed 15% is held out for the coordinator's global
evaluation; the rest is split across sites (IID or Dirichlet label skew), and
each site keeps 20% of its share as its own test split, so federated
evaluation runs on data the site never trained on.
"""

from __future__ import annotations

import numpy as np

from fedops.core import partition
from fedops.data.bundled import digits as _digits
from fedops.data.bundled import holdout_split, site_split
from fedops.tasks.contract import Task
from fedops.tasks.models import MODELS


def _site_indices(num_sites: int, part: str, alpha: float, seed: int) -> list[np.ndarray]:
    pool = holdout_split(len(_digits()[1]))[0]
    labels = _digits()[1][pool]
    if part == "iid":
        parts = partition.iid(len(pool), num_sites, seed=seed)
    else:
        parts = partition.dirichlet(labels, num_sites, alpha=alpha, seed=seed)
    return [pool[p] for p in parts]


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
        tr, te = site_split(idx, seed, site)
        return (x[tr], y[tr]), (x[te], y[te])

    def load_server_data():
        x, y = _digits()
        held = holdout_split(len(y))[1]
        return x[held], y[held]

    return Task(
        name=f"digits-{model}",
        build_model=build_model,
        load_data=load_data,
        load_server_data=load_server_data,
        options={"model": model, "partition": partition, "alpha": alpha, "seed": seed},
    )
