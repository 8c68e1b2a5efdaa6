"""A hospital consortium whose data drifts: two hospitals replace their scanner mid-run.

Twenty hospitals hold label-skewed shares of scikit-learn's bundled 8x8 digit
scans (the same split as the built-in ``digits`` task). From ``SHIFT_ROUND``
on, hospitals ``SHIFTED_SITES`` image with a new scanner: lower contrast and a
brighter background (``x -> 0.6 x + 0.25``), a covariate shift. The task's
``load_data`` takes the round, so every agent reloads its data each round,
as a real site's data changes over time; the other hospitals' data stays put.

    fedops simulate +scenario=hospital_drift
"""

from __future__ import annotations

import numpy as np
from torch import nn

from fedops.tasks.digits import make_task

SHIFTED_SITES = (3, 11)
SHIFT_ROUND = 4

_BASE = make_task(model="mlp", partition="dirichlet", alpha=0.5, seed=0)


def build_model() -> nn.Module:
    return _BASE.build_model()


def new_scanner(x: np.ndarray) -> np.ndarray:
    """The replacement scanner's images: less contrast, brighter background."""
    return np.clip(0.6 * x + 0.25, 0.0, 1.0).astype(np.float32)


def load_data(site: int, num_sites: int, round: int):
    (x_train, y_train), (x_test, y_test) = _BASE.load_data(site, num_sites)
    if site in SHIFTED_SITES and round >= SHIFT_ROUND:
        x_train, x_test = new_scanner(x_train), new_scanner(x_test)
    return (x_train, y_train), (x_test, y_test)


def load_server_data():
    """The coordinator's held-out scans (old scanners): its quantiles are the drift bins."""
    return _BASE.load_server_data()
