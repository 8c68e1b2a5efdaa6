"""A user's task checked where it meets fedops, so a mistake is named, not a traceback.

``build_model`` must return a ``torch.nn.Module`` (a ``None`` surfaced as
``'NoneType' object has no attribute 'buffers'`` deep in the simulator), and
the labels ``load_data`` returns must be class indices the model can output
(an out-of-range label surfaced as an index error inside the stacked trainer).
Both checks wrap the user's functions once, at load time
(:func:`fedops.tasks.loader.load_task`); ``functools.wraps`` keeps their
signatures, which fedops inspects (a ``round`` argument).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from fedops.tasks.contract import TaskError


def checked_model(build_model: Callable[[], Any], spec: str) -> Callable[[], nn.Module]:
    @functools.wraps(build_model)
    def build() -> nn.Module:
        model = build_model()
        if not isinstance(model, nn.Module):
            raise TaskError(
                f"task {spec!r}: build_model() returned {_kind(model)}; it must "
                "return a torch.nn.Module"
            )
        return model

    return build


def checked_data(
    load_data: Callable[..., Any], build_model: Callable[[], nn.Module], spec: str
) -> Callable[..., Any]:
    """``load_data`` whose class labels are checked against the model's output width."""
    width: list[int | None] = []  # found once, from the first batch of inputs

    @functools.wraps(load_data)
    def load(site: int, num_sites: int, *rest: Any) -> Any:
        splits = load_data(site, num_sites, *rest)
        if not isinstance(splits, tuple | list) or len(splits) != 2:
            raise TaskError(
                f"task {spec!r}: load_data(site={site}) returned {type(splits).__name__}; it "
                "must return (train, test)"
            )
        for name, split in zip(("train", "test"), splits, strict=True):
            pair = _pair(split)
            if name == "train":
                rows = len(pair[1]) if pair is not None else _length(split)
                _check_not_empty(
                    rows, f"task {spec!r}: load_data(site={site}, num_sites={num_sites})"
                )
            if pair is None:
                continue  # a Dataset: checked where it is read
            x, y = pair
            if not width:
                width.append(_output_width(build_model, x))
            _check_labels(y, width[0], f"task {spec!r}: load_data(site={site}) {name} split")
        return splits

    return load


def _pair(split: Any) -> tuple[Any, np.ndarray] | None:
    if not isinstance(split, tuple | list) or len(split) < 2:
        return None
    y = split[1]
    labels = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return split[0], labels


def _output_width(build_model: Callable[[], nn.Module], x: Any) -> int | None:
    """How many classes the model scores (None when that cannot be told from two rows)."""
    try:
        rows = x[:2] if not isinstance(x, torch.Tensor) else x[:2].detach()
        batch = torch.as_tensor(np.asarray(rows), dtype=torch.float32)
        model = build_model()
        model.eval()
        with torch.no_grad():
            out = model(batch)
    except Exception:  # an input this probe cannot build: leave it to training to say
        return None
    if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[-1] < 2:
        return None
    return int(out.shape[-1])


def _check_not_empty(rows: int | None, where: str) -> None:
    """A site with no training rows would leave every round with a warning while the run
    reports "completed": almost always a split that does not fit the number of sites."""
    if rows == 0:
        raise TaskError(
            f"{where} returned an empty train split: every site needs training rows "
            "(too many sites for the data, or a split that leaves this site out?)"
        )


def _length(split: Any) -> int | None:
    try:
        return len(split)
    except TypeError:  # an iterable without a length: read as it comes
        return None


def _check_labels(y: np.ndarray, width: int | None, where: str) -> None:
    if y.size == 0 or not np.issubdtype(y.dtype, np.integer):
        return  # no rows, or not class labels (a regression target)
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        raise TaskError(f"{where}: label {lo} is negative; labels are class indices")
    if width is not None and hi >= width:
        raise TaskError(
            f"{where}: labels run up to {hi}, but build_model()'s model has {width} outputs "
            f"(labels must be 0..{width - 1})"
        )


def _kind(value: object) -> str:
    return "None" if value is None else type(value).__name__
