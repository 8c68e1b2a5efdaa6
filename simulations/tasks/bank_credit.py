"""A bank consortium scoring credit applications, with a sensitive attribute to watch.

The data is generated (no download): each applicant has income, debt ratio,
credit-history length, open accounts, recent missed payments and a postcode
score; a protected group attribute (0/1) is never a model input, but group 1
has lower incomes on average and the postcode score is a proxy for it, so a
model trained on these features approves the groups at different rates. The
test split carries the group ids as a third tensor, so each bank reports
per-group confusion counts and the coordinator measures demographic parity,
equalized odds and equal opportunity on the pooled counts every round.

    fedops simulate +scenario=bank_fairness
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

NUM_FEATURES = 6
#: applicants per bank: a few large banks and small ones (imbalanced sizes)
BANK_SIZES = (2400, 1600, 900, 500, 300)
SEED = 7


def build_model() -> nn.Module:
    return nn.Sequential(nn.Linear(NUM_FEATURES, 16), nn.ReLU(), nn.Linear(16, 2))


def _applicants(n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    group = (rng.random(n) < 0.35).astype(np.int64)
    income = rng.normal(0.0, 1.0, n) - 0.8 * group
    debt = rng.normal(0.0, 1.0, n) + 0.3 * group
    history = rng.normal(0.0, 1.0, n)
    accounts = rng.poisson(3, n) / 3.0 - 1.0
    missed = rng.poisson(0.5 + 0.3 * group, n).astype(np.float64)
    postcode = group + rng.normal(0.0, 0.7, n)
    x = np.stack([income, debt, history, accounts, missed, postcode], axis=1)
    logit = 1.4 * income - 1.0 * debt + 0.6 * history - 0.8 * missed + 0.3
    repaid = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)  # 1: approve
    return x.astype(np.float32), repaid, group


def load_data(site: int, num_sites: int):
    if not 0 <= site < num_sites:
        raise ValueError(f"site must be in [0, {num_sites}), got {site}")
    size = BANK_SIZES[site % len(BANK_SIZES)]
    x, y, g = _applicants(size, np.random.default_rng([SEED, site]))
    cut = int(0.8 * size)
    test = TensorDataset(
        torch.from_numpy(x[cut:]), torch.from_numpy(y[cut:]), torch.from_numpy(g[cut:])
    )
    return (x[:cut], y[:cut]), test


def load_server_data():
    x, y, _ = _applicants(2000, np.random.default_rng([SEED, 10_000]))
    return x, y
