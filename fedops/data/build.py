"""Build a FederatedData from a user task, or a built-in dataset by name.

A user task speaks the deployment contract, ``load_data(site, num_sites) -> (train,
test)``; the vectorized simulation wants every client's rows in flat arrays. Calling
``load_data`` once per client and concatenating bridges the two, so a task written for
deployment simulates unchanged, on exactly the rows each site would load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from fedops.data import sources, synthetic
from fedops.data.federated import FederatedData

#: built-in datasets by the name a config uses; each takes keyword arguments only
DATASETS: dict[str, Callable[..., FederatedData]] = {
    "digits": sources.digits,
    "breast_cancer": sources.breast_cancer,
    "synthetic": synthetic.synthetic,
    "synthetic_iid": synthetic.synthetic_iid,
}


class TaskLike(Protocol):
    """What from_task reads of a ``fedops.tasks.Task`` (a Protocol: data sits below tasks)."""

    @property
    def name(self) -> str: ...
    @property
    def load_data(self) -> Callable[[int, int], tuple[Any, Any]]: ...


def from_task(task: TaskLike, num_clients: int) -> FederatedData:
    """Every client's data from ``task.load_data(i, num_clients)``, flattened.

    Each split must be an ``(X, y)`` pair of numpy arrays or torch tensors; features
    become float32 and labels int64. ``num_classes`` is the largest label seen (clients
    and server) plus one. Server rows come from ``task.load_server_data()`` if defined.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    train: list[tuple[np.ndarray, np.ndarray]] = []
    test: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(num_clients):
        loaded = task.load_data(i, num_clients)
        if not isinstance(loaded, tuple | list) or len(loaded) != 2:
            raise ValueError(
                f"task {task.name!r}: load_data({i}, {num_clients}) must return (train, test), "
                f"got {type(loaded).__name__}"
            )
        train.append(_pair(task.name, loaded[0], f"load_data({i}) train"))
        test.append(_pair(task.name, loaded[1], f"load_data({i}) test"))

    server_x = server_y = None
    load_server = getattr(task, "load_server_data", None)
    if load_server is not None:
        server_x, server_y = _pair(task.name, load_server(), "load_server_data()")

    shapes = {x.shape[1:] for x, _ in train + test}
    if server_x is not None:
        shapes.add(server_x.shape[1:])
    if len(shapes) > 1:
        raise ValueError(f"task {task.name!r}: clients' features differ in shape: {shapes}")
    labels = [y for _, y in train + test] + ([server_y] if server_y is not None else [])
    top = max((int(y.max()) for y in labels if len(y)), default=-1)
    train_x, train_y, train_off = _concat(train)
    test_x, test_y, test_off = _concat(test)
    return FederatedData(
        train_x=train_x,
        train_y=train_y,
        train_offsets=train_off,
        test_x=test_x,
        test_y=test_y,
        test_offsets=test_off,
        num_classes=top + 1,
        server_x=server_x,
        server_y=server_y,
    )


def _pair(name: str, data: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """An (X, y) pair as (float32, int64) numpy arrays, or a ValueError that says why not."""
    if _is_dataset(data):
        raise ValueError(
            f"task {name!r} returns torch Datasets ({where}); the vectorized backend needs "
            "(X, y) arrays: use simulation.backend=sequential or process"
        )
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise ValueError(
            f"task {name!r}: {where} must be an (X, y) pair of arrays or tensors, "
            f"got {type(data).__name__}"
        )
    x = _numpy(data[0]).astype(np.float32, copy=False)
    raw_y = _numpy(data[1])
    if raw_y.ndim != 1 or len(raw_y) != len(x):
        raise ValueError(
            f"task {name!r}: {where} has {len(x)} rows but labels of shape {raw_y.shape}; "
            "labels must be one class index per row"
        )
    y = raw_y.astype(np.int64, copy=False)
    if np.any(y != raw_y) or (len(y) and y.min() < 0):
        raise ValueError(f"task {name!r}: {where} labels must be non-negative class indices")
    return x, y


def _numpy(value: Any) -> np.ndarray:
    """A numpy view of an array or (CPU or GPU, grad or not) torch tensor."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor, torch-free check
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _is_dataset(data: Any) -> bool:
    try:
        from torch.utils.data import Dataset
    except ImportError:  # pragma: no cover - torch is a dependency of fedops
        return False
    return isinstance(data, Dataset)


def _concat(
    pairs: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    offsets = np.zeros(len(pairs) + 1, dtype=np.int64)
    np.cumsum([len(y) for _, y in pairs], out=offsets[1:])
    x = np.concatenate([x for x, _ in pairs])
    y = np.concatenate([y for _, y in pairs])
    return x, y, offsets
