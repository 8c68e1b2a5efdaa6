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
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fedops.tasks.contract import TaskError
from fedops.tasks.split_checks import check_rows, check_shape


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
    load_data: Callable[..., Any],
    build_model: Callable[[], nn.Module],
    spec: str,
    *,
    own_train: bool = False,
) -> Callable[..., Any]:
    """``load_data`` whose splits are checked as they load (:mod:`fedops.tasks.split_checks`:
    one row of features per label, finite features, one feature shape across sites and
    splits) and whose class labels are checked against the model's output width. The
    first rows also go through a fresh model: one it cannot take is refused here, at
    start-up, not in the first round. ``own_train``: the task trains with its own
    ``train()``, which may feed the model otherwise (and take non-class targets): then
    the model probe and whole-number labels are not required."""
    seen: dict[str, Any] = {}  # "width": the model's output width, "shape": the first rows'

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
            part = f"load_data(site={site}) {name} split"
            where = f"task {spec!r}: {part}"
            check_rows(x, y, where)
            check_shape(seen, x, y, where, part)
            if "width" not in seen:
                seen["width"] = _output_width(build_model, x, None if own_train else where)
            _check_labels(y, seen["width"], where, whole=not own_train)
        return splits

    return load


def _pair(split: Any) -> tuple[Any, np.ndarray] | None:
    """A split's (features, labels as numpy): an (X, y[, groups]) pair or a TensorDataset."""
    tensors = getattr(split, "tensors", None)
    if isinstance(tensors, tuple) and len(tensors) >= 2:
        split = tensors
    if not isinstance(split, tuple | list) or len(split) < 2:
        return None
    y = split[1]
    labels = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return split[0], labels


def _output_width(build_model: Callable[[], nn.Module], x: Any, where: str | None) -> int | None:
    """How many classes the model scores (None when that cannot be told from two rows).
    ``where``: the split, named in the :class:`TaskError` when the model fails on its
    first two rows as the default training loop feeds them (float32); None: leave that
    to the task's own training."""
    try:
        rows = x[:2] if not isinstance(x, torch.Tensor) else x[:2].detach()
        batch = torch.as_tensor(np.asarray(rows), dtype=torch.float32)
    except Exception:  # an input this probe cannot build: leave it to training to say
        return None
    try:
        model = build_model()
        model.eval()
        with torch.no_grad():
            out = model(batch)
    except TaskError:
        raise
    except Exception as exc:
        if where is None:
            return None
        raise TaskError(
            f"{where}: build_model()'s model fails on its first rows (features of shape "
            f"{tuple(batch.shape[1:])}): {type(exc).__name__}: {str(exc)[:300]}; does the "
            "model's input size match the data?"
        ) from None
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


def _check_labels(y: np.ndarray, width: int | None, where: str, *, whole: bool = False) -> None:
    """Class labels the model can output; ``whole``: float labels must be whole numbers
    (the default loop's cross-entropy would cut 0.5 to class 0); else they are taken for
    a regression target and left alone."""
    if y.size and whole and np.issubdtype(y.dtype, np.floating):
        odd = y[~np.isfinite(y) | (y != np.round(y))]
        if odd.size:
            raise TaskError(
                f"{where}: labels must be integers (class indices 0, 1, ...), got "
                f"{odd.flat[0].item()!r} ({y.dtype} labels)"
            )
        y = y.astype(np.int64)
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


def checked_metrics(function: Callable[..., Any], spec: str) -> Callable[..., Any]:
    """The task's ``train`` or ``evaluate``, whose result must be a dict of metrics (a
    string surfaced as ``'str' object has no attribute 'items'`` in fedops' own code)."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        metrics = function(*args, **kwargs)
        if not isinstance(metrics, Mapping):
            raise TaskError(
                f"task {spec!r}: {function.__name__}() must return a dict of metrics, got "
                f"{_kind(metrics)}"
            )
        return metrics

    return run


def checked_server_data(load_server_data: Callable[[], Any], spec: str) -> Callable[[], Any]:
    """``load_server_data`` whose result must be an (X, y) pair of arrays or tensors or a
    torch Dataset, with one label per row and finite features, as a site's split."""

    @functools.wraps(load_server_data)
    def load() -> Any:
        data = load_server_data()
        pair = _pair(data)
        if pair is None and not isinstance(data, torch.utils.data.Dataset):
            raise TaskError(
                f"task {spec!r}: load_server_data() returned {_kind(data)}; it must return "
                "an (X, y) pair of arrays or tensors, or a torch Dataset"
            )
        if pair is not None:
            check_rows(pair[0], pair[1], f"task {spec!r}: load_server_data()")
        return data

    return load
