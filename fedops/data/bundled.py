"""The datasets scikit-learn ships (digits, breast cancer) and the one way fedops splits them.

Defined once for the deployed built-in task (:mod:`fedops.tasks.digits`) and the
simulator's data sources (:mod:`fedops.data.sources`), so a simulated client and a
deployed site of the same configuration hold the same rows by construction.

The arrays are read from the CSV files in scikit-learn's package data without
importing scikit-learn: its import (with scipy and pandas) costs about 0.9 s of CPU,
which every site agent and coordinator paid at start for two small files. Where a
scikit-learn release keeps the files elsewhere, its ``load_*`` functions are used;
``tests/unit/data/test_bundled.py`` proves both give the same arrays.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np

#: each site keeps this fraction of its rows as its own test split
TEST_FRACTION = 0.2
#: this fraction of the rows is the coordinator's held-out set, whatever the sites
HOLDOUT_FRACTION = 0.15
HOLDOUT_SEED = 20240101


def _sklearn_data_file(name: str) -> Path | None:
    """Where scikit-learn keeps ``name``, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    return path if path.is_file() else None


@cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    """8x8 digits: (1797, 64) float32 features in [0, 1] and int64 labels 0..9."""
    path = _sklearn_data_file("digits.csv.gz")
    if path is not None:
        table = np.loadtxt(path, delimiter=",")
        raw, labels = table[:, :-1], table[:, -1]
    else:  # a scikit-learn that keeps its data files elsewhere
        from sklearn.datasets import load_digits

        raw, labels = load_digits(return_X_y=True)
    return (raw / 16.0).astype(np.float32), labels.astype(np.int64)


@cache
def breast_cancer_raw() -> tuple[np.ndarray, np.ndarray]:
    """Wisconsin breast cancer: (569, 30) float64 features as measured, int64 labels."""
    path = _sklearn_data_file("breast_cancer.csv")
    if path is not None:
        table = np.loadtxt(path, delimiter=",", skiprows=1)  # row 1: counts and class names
        return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_breast_cancer

    raw, labels = load_breast_cancer(return_X_y=True)
    return raw.astype(np.float64), labels.astype(np.int64)


def holdout_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(federated indices, held-out indices) of ``n`` rows: fixed, whatever the sites."""
    order = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    n_hold = round(n * HOLDOUT_FRACTION)
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])


def site_split(indices: np.ndarray, seed: int, site: int) -> tuple[np.ndarray, np.ndarray]:
    """One site's (train, test) indices of its share, seeded by (seed, site)."""
    order = np.random.default_rng([seed, site]).permutation(indices)
    n_test = max(1, round(len(order) * TEST_FRACTION))
    return np.sort(order[n_test:]), np.sort(order[:n_test])
