"""The plain per-client FedAvg loop the simulator's benchmarks measure against.

One definition for every baseline (``vs_floor.py`` on linear models, ``vs_floor_cnn.py``
on CNNs), so a change to the reference loop changes both comparisons alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def plain_fedavg_round(
    data: Any,
    model: Any,
    state: dict[str, Any],
    *,
    lr: float,
    batch: int,
    shuffle_seed: Callable[[int], int],
) -> dict[str, Any]:
    """One FedAvg round as the plain per-client loop a user would write (the baselines the
    simulator is measured against): each client trains one epoch of SGD from ``state`` in
    the order ``shuffle_seed(client)`` draws, and the models are averaged by example count."""
    acc = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in state.items()}
    loss_fn, total = nn.CrossEntropyLoss(), 0
    for c in range(data.num_clients):
        x, y = (torch.from_numpy(a) for a in data.client_train(c))
        model.load_state_dict(state)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(shuffle_seed(c)))
        for lo in range(0, len(x), batch):
            idx = order[lo : lo + batch]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        for k, v in model.state_dict().items():
            acc[k] += v.double() * len(x)
        total += len(x)
    return {k: (v / total).float() for k, v in acc.items()}
