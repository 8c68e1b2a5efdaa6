"""A task's data split as flat arrays, whatever form ``load_data`` gave it in.

The task contract lets a split be an ``(X, y)`` pair of arrays or tensors, a
``TensorDataset`` or any map-style ``Dataset`` of ``(x, y)`` items (the test split
may carry a third column of sensitive-group ids). The batched simulation needs
every client's rows in one array, so a Dataset is read here once, item by item,
and an item that is not an ``(x, y)`` pair of consistent shape is refused by its
index: a user finds the bad row instead of a stacking error from numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: (features float32, labels int64, sensitive-group ids int64 or None)
Split = tuple[np.ndarray, np.ndarray, np.ndarray | None]


class DataError(ValueError):
    """A task's data is not what fedops can train on; the message names the task, the
    split and why (the simulation refuses the task with it, as a ``task:`` error)."""


def split_arrays(name: str, data: Any, where: str, *, groups_ok: bool = False) -> Split:
    """``data`` as (float32 features, int64 labels, group ids or None), or a
    :class:`DataError` naming the task, the split and why. ``groups_ok``: a third column
    (test splits). Features read item by item from a Dataset are checked finite here
    (arrays and tensors were, where the task was loaded:
    :mod:`fedops.tasks.task_checks`)."""
    widths = (2, 3) if groups_ok else (2,)
    columns = _columns(name, data, where, widths)
    x = _numpy(columns[0]).astype(np.float32, copy=False)
    if not isinstance(data, tuple | list) and getattr(data, "tensors", None) is None:
        check_finite(x, f"task {name!r}: {where}")
    y = _labels(name, _numpy(columns[1]), len(x), where)
    groups = None
    if len(columns) == 3:
        groups = _numpy(columns[2]).astype(np.int64).ravel()
        if len(groups) != len(x):
            raise DataError(f"task {name!r}: {where} has {len(x)} rows but {len(groups)} group ids")
    return x, y, groups


def _columns(name: str, data: Any, where: str, widths: tuple[int, ...]) -> tuple[Any, ...]:
    """The split's columns (X, y[, groups]): a pair, a TensorDataset or an item-wise read."""
    if isinstance(data, tuple | list) and len(data) in widths:
        return tuple(data)
    tensors = getattr(data, "tensors", None)  # a TensorDataset, without importing torch here
    if isinstance(tensors, tuple) and len(tensors) in widths:
        return tensors
    if _is_map_dataset(data):
        return _read_items(name, data, where)
    shape = " or ".join(f"{w}-tuple" for w in widths)
    raise DataError(
        f"task {name!r}: {where} must be an (X, y) pair of arrays or tensors ({shape}), "
        f"a TensorDataset or a map-style Dataset of (x, y) items, got {type(data).__name__}"
    )


def _is_map_dataset(data: Any) -> bool:
    """A torch map-style Dataset (``__getitem__`` by index and ``__len__``), not iterable-only."""
    try:
        from torch.utils.data import Dataset, IterableDataset
    except ImportError:  # pragma: no cover - torch is a dependency of fedops
        return False
    return (
        isinstance(data, Dataset)
        and not isinstance(data, IterableDataset)
        and hasattr(data, "__len__")
    )


def _read_items(name: str, data: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Every ``(x, y)`` item of a map-style Dataset, stacked (read once, in index order)."""
    xs: list[np.ndarray] = []
    ys: list[Any] = []
    for i in range(len(data)):
        item = data[i]
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise DataError(
                f"task {name!r}: {where} item {i} is a {type(item).__name__}"
                f"{f' of {len(item)}' if isinstance(item, tuple | list) else ''}; each item "
                "of a Dataset must be an (x, y) pair of tensors or arrays"
            )
        x, y = _numpy(item[0]), _numpy(item[1])
        if xs and x.shape != xs[0].shape:
            raise DataError(
                f"task {name!r}: {where} item {i} has x of shape {x.shape}, item 0 "
                f"{xs[0].shape}; every item's x must have the same shape"
            )
        if y.size != 1:
            raise DataError(
                f"task {name!r}: {where} item {i} has a label of shape {y.shape}; "
                "a label must be one class index"
            )
        xs.append(x)
        ys.append(y.reshape(()))
    if not xs:
        return np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    return np.stack(xs), np.stack(ys)


def _labels(name: str, raw: np.ndarray, rows: int, where: str) -> np.ndarray:
    if raw.ndim != 1 or len(raw) != rows:
        raise DataError(
            f"task {name!r}: {where} has {rows} rows but labels of shape {raw.shape}; "
            "labels must be one class index per row"
        )
    y = raw.astype(np.int64, copy=False)
    if np.any(y != raw):
        odd = raw[y != raw][0].item()
        raise DataError(
            f"task {name!r}: {where} labels must be integers (class indices 0, 1, ...), "
            f"got {odd!r} ({raw.dtype} labels)"
        )
    if len(y) and y.min() < 0:
        raise DataError(
            f"task {name!r}: {where} has label {y.min()}; labels are class indices, from 0"
        )
    return y


def check_finite(x: np.ndarray, where: str) -> None:
    """:class:`DataError` naming ``where`` and the first row when ``x`` holds NaN or an
    infinity: training on it makes every loss NaN, and the site's updates are refused
    round after round with nothing saying why (one pass, over a float array only)."""
    if not np.issubdtype(x.dtype, np.floating) or x.size == 0 or np.isfinite(x).all():
        return
    rows = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1) if x.ndim else np.array([True])
    row = int(np.argmax(rows))
    bad = int(rows.sum())
    raise DataError(
        f"{where}: features hold NaN or infinity ({bad} row{'s' if bad > 1 else ''}, the "
        f"first: row {row}); fedops trains on finite numbers only: drop or impute them "
        "in load_data"
    )


def _numpy(value: Any) -> np.ndarray:
    """A numpy view of an array, a number or a (CPU or GPU, grad or not) torch tensor."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor, torch-free check
        value = value.detach().cpu().numpy()
    return np.asarray(value)
