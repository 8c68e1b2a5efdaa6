"""Shared by both frameworks' children and the parent's scoring: the data, the model, the
test rows, the accuracy and the row order, so that both frameworks run the same computation.

Two workloads (``--model``): ``logreg``, logistic regression on Synthetic(1, 1); ``cnn``,
the two-conv CNN on generated 28x28 images of ``vs_floor_cnn.py`` (its ``cnn`` and
``images``, imported, so that every benchmark measures the same model and data)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np


def federation(model: str, clients: int, seed: int) -> Any:
    """The benchmark's ``FederatedData``: Synthetic(1, 1), or the CNN's generated images."""
    if model == "cnn":
        from vs_floor_cnn import images

        return images(clients, seed)
    from fedops.data.synthetic import synthetic

    return synthetic(num_clients=clients, alpha=1.0, beta=1.0, seed=seed)


def make_model(model: str, num_features: int, num_classes: int) -> Any:
    """A fresh (unseeded) ``model``: the CNN, or logistic regression ``num_features -> classes``."""
    from torch import nn

    if model == "cnn":
        from vs_floor_cnn import cnn

        return cnn()
    return nn.Sequential(nn.Flatten(), nn.Linear(num_features, num_classes))


def build_model(num_features: int, num_classes: int, seed: int, model: str = "logreg") -> Any:
    """The same freshly initialised model fedops builds for round 0 (``torch.manual_seed``)."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make_model(model, num_features, num_classes)


@functools.cache
def test_rows(clients: int, seed: int, model: str = "logreg") -> tuple[np.ndarray, np.ndarray]:
    """Every client's test rows of the benchmark's federation (the same generator, seed)."""
    data = federation(model, clients, seed)
    return data.test_x, data.test_y


def global_accuracy(
    params: dict[str, np.ndarray], test_x: np.ndarray, test_y: np.ndarray, model: str = "logreg"
) -> float:
    """Accuracy over all clients' test rows = example-weighted mean of per-client accuracy."""
    import torch

    last_bias = max((k for k in params if k.endswith(".bias")), key=lambda k: int(k.split(".")[0]))
    classes = int(params[last_bias].shape[0])
    net = build_model(int(np.prod(test_x.shape[1:])), classes, 0, model)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})
    with torch.no_grad():
        pred = net(torch.from_numpy(np.ascontiguousarray(test_x))).argmax(1).numpy()
    return float((pred == test_y).mean())


def shuffle_order(n: int, seed: int, server_round: int, client: int) -> Any:
    """The row order fedops uses for (run seed, round, client): same seeds, same permutation."""
    import torch

    s = int(np.random.SeedSequence([seed, server_round, client]).generate_state(2, np.uint64)[0])
    return torch.randperm(n, generator=torch.Generator().manual_seed(s >> 1))
