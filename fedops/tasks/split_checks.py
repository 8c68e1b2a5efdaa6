"""A task's (X, y) split checked as ``load_data`` returns it, cheaply, before training.

Each check is one pass over arrays already in memory, run at every load (a task whose
data changes per round is checked each round): one label per row of features, finite
features (a NaN makes every training loss NaN, and the site's updates are then refused
round after round with nothing naming the input) and one feature shape per row across
the splits and sites a process loads (the simulation's sites: a model cannot take both).
A mistake is a :class:`TaskError` naming the task, the site and the split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedops.data.materialize import DataError, check_finite
from fedops.tasks.contract import TaskError

__all__ = ["check_rows", "check_shape"]


def check_rows(x: Any, y: np.ndarray, where: str) -> None:
    """As many labels as rows of features, and finite features."""
    rows = _rows(x)
    if rows is not None and y.ndim >= 1 and len(y) != rows:
        raise TaskError(
            f"{where} has {rows} rows of features but {len(y)} labels (labels of shape "
            f"{y.shape}); X and y must have one row per example"
        )
    try:
        if isinstance(x, torch.Tensor):
            if x.is_floating_point() and not bool(torch.isfinite(x.detach()).all()):
                check_finite(x.detach().cpu().numpy(), where)  # names the rows
        else:
            check_finite(np.asarray(x), where)
    except DataError as exc:
        raise TaskError(str(exc)) from None


def check_shape(seen: dict[str, Any], x: Any, y: np.ndarray, where: str, part: str) -> None:
    """The same features per row as the first split loaded (``seen["shape"]``, kept with
    the ``part`` that gave it); a split without rows says nothing of its shape."""
    if y.ndim == 0 or len(y) == 0:
        return
    shape = tuple(x.shape[1:]) if hasattr(x, "shape") else np.shape(x)[1:]
    if "shape" not in seen:
        seen["shape"] = (shape, part)
        return
    first, first_part = seen["shape"]
    if shape != first:
        raise TaskError(
            f"{where} has features of shape {shape} per row, but {first_part} has {first}: "
            "every site and split must give the model the same features"
        )


def _rows(x: Any) -> int | None:
    try:
        return len(x)
    except TypeError:
        return None
