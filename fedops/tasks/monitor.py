"""A site's monitoring: its reference window, its sensitive groups, and its report.

The task contract allows a third tensor of sensitive-group ids on the test
split (``TensorDataset(X, y, group)`` or ``(X, y, group)``) or a
``sensitive_groups(X) -> ids`` function; training and evaluation never see
the group column. The first training window a site loads is its drift
reference for the whole run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from fedops.core.monitoring.profile import (
    MonitorSpec,
    ReportLimits,
    SiteReport,
    Window,
    site_report,
)
from fedops.core.training import Data

GroupsOf = Callable[[Any], Any]


def takes_round(load_data: Callable[..., Any]) -> bool:
    """Whether ``load_data`` takes a third argument, the round (its data can change).

    A third parameter counts when it is named ``round`` or has no default: an
    optional ``load_data(site, num_sites, data_dir="/data")`` keeps its default.
    """
    try:
        params = list(inspect.signature(load_data).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 3:
        third = positional[2]
        return third.name == "round" or third.default is inspect.Parameter.empty
    return any(p.kind is p.VAR_POSITIONAL for p in params)


def split_groups(data: Data) -> tuple[Data, np.ndarray | None]:
    """``(data without its group column, group ids)``; ids are None when there are none."""
    if isinstance(data, tuple) and len(data) == 3:
        x, y, g = data
        return (x, y), np.asarray(g).astype(np.int64).ravel()
    if isinstance(data, TensorDataset) and len(data.tensors) == 3:
        x, y, g = data.tensors
        return (x, y), g.numpy().astype(np.int64).ravel()
    return data, None


def window_of(data: Data, groups: np.ndarray | None = None) -> Window:
    """A data split as arrays (a generic Dataset is read once, in batches)."""
    if isinstance(data, tuple):
        x, y = data[0], data[1]
    elif isinstance(data, TensorDataset):
        x, y = data.tensors[0], data.tensors[1]
    else:
        xs, ys = [], []
        for bx, by in DataLoader(_as_dataset(data), batch_size=1024):
            xs.append(bx)
            ys.append(by)
        x, y = torch.cat(xs), torch.cat(ys)
    return Window(
        x=np.asarray(torch.as_tensor(x, dtype=torch.float32)),
        y=np.asarray(torch.as_tensor(y)).astype(np.int64).ravel(),
        groups=groups,
    )


def _as_dataset(data: Data) -> Dataset[Any]:
    assert not isinstance(data, tuple)
    return data


class SiteMonitor:
    """Keeps a site's reference window and answers monitoring requests."""

    def __init__(self, reference: Data, groups_of: GroupsOf | None = None) -> None:
        self.reference = window_of(reference)
        self.groups_of = groups_of

    def test_window(self, test: Data, groups: np.ndarray | None) -> Window:
        window = window_of(test, groups)
        if window.groups is None and self.groups_of is not None:
            ids = np.asarray(self.groups_of(torch.from_numpy(window.x))).astype(np.int64).ravel()
            if len(ids) != len(window.y):
                raise ValueError(
                    f"sensitive_groups() returned {len(ids)} ids for {len(window.y)} rows"
                )
            window = Window(x=window.x, y=window.y, groups=ids)
        if window.groups is not None and len(window.groups) != len(window.y):
            raise ValueError("the test split's group column has a different length")
        return window

    @torch.no_grad()
    def report(
        self,
        model: nn.Module,
        spec: MonitorSpec,
        current: Data,
        test: Window,
        limits: ReportLimits | None = None,
    ) -> SiteReport:
        model.eval()

        def predict(x: np.ndarray) -> np.ndarray:
            out = [
                torch.softmax(model(torch.from_numpy(x[i : i + 4096])), dim=1)
                for i in range(0, len(x), 4096)
            ]
            probs: np.ndarray = torch.cat(out).double().numpy() if out else np.zeros((0, 1))
            return probs

        return site_report(
            spec,
            predict,
            reference=self.reference,
            current=window_of(current),
            test=test,
            limits=limits,
        )
