"""The load benchmark's task: a small logistic regression on generated data.

Every site draws its own 40 rows (60 features, 10 classes) from one fixed
linear model plus noise, seeded by its index, so a thousand sites start in
milliseconds with no download and no shared file.
"""

from __future__ import annotations

import numpy as np
from torch import nn

NUM_FEATURES = 60
NUM_CLASSES = 10
ROWS_PER_SITE = 40
SEED = 11


def build_model() -> nn.Module:
    return nn.Linear(NUM_FEATURES, NUM_CLASSES)


def _rows(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    weights = np.random.default_rng(SEED).normal(0.0, 1.0, (NUM_FEATURES, NUM_CLASSES))
    x = rng.normal(0.0, 1.0, (n, NUM_FEATURES)).astype(np.float32)
    y = np.argmax(x @ weights + rng.gumbel(0.0, 1.0, (n, NUM_CLASSES)), axis=1)
    return x, y.astype(np.int64)


def load_data(site: int, num_sites: int):
    if not 0 <= site < num_sites:
        raise ValueError(f"site must be in [0, {num_sites}), got {site}")
    x, y = _rows(ROWS_PER_SITE, np.random.default_rng([SEED, site]))
    cut = ROWS_PER_SITE * 3 // 4
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def load_server_data():
    return _rows(2000, np.random.default_rng([SEED, 1 << 20]))
