"""Shared by both frameworks' children and the parent's scoring: the model, the test rows,
the accuracy and the row order, so that both frameworks run the same computation."""

from __future__ import annotations

import functools

import numpy as np


def build_model(num_features: int, num_classes: int, seed: int):  # type: ignore[no-untyped-def]
    """The same freshly initialised logistic regression fedops builds for round 0."""
    import torch
    from torch import nn

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(num_features, num_classes))


@functools.cache
def test_rows(clients: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every client's test rows of the benchmark's federation (the same generator, seed)."""
    from fedops.data.synthetic import synthetic

    data = synthetic(num_clients=clients, alpha=1.0, beta=1.0, seed=seed)
    return data.test_x, data.test_y


def global_accuracy(params: dict[str, np.ndarray], test_x: np.ndarray, test_y: np.ndarray):  # type: ignore[no-untyped-def]
    """Accuracy over all clients' test rows = example-weighted mean of per-client accuracy."""
    import torch

    model = build_model(test_x.shape[1], int(params["1.bias"].shape[0]), 0)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})
    with torch.no_grad():
        pred = model(torch.from_numpy(np.ascontiguousarray(test_x))).argmax(1).numpy()
    return float((pred == test_y).mean())


def shuffle_order(n: int, seed: int, server_round: int, client: int):  # type: ignore[no-untyped-def]
    """The row order fedops uses for (run seed, round, client): same seeds, same permutation."""
    import torch

    s = int(np.random.SeedSequence([seed, server_round, client]).generate_state(2, np.uint64)[0])
    return torch.randperm(n, generator=torch.Generator().manual_seed(s >> 1))
