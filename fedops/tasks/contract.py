"""The task contract a user file or module fulfils."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from fedops.core.training import Data
from fedops.tasks.builtin import TaskError

__all__ = ["LoadData", "Task", "TaskError"]

#: ``load_data(site, num_sites)`` or ``load_data(site, num_sites, round)``
LoadData = Callable[..., tuple[Data, Data]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """What fedops needs to train a model federatedly.

    Attributes:
        name: shown in logs and recorded in the run summary.
        build_model: returns a fresh ``torch.nn.Module``; every party must
            build the same architecture.
        load_data: ``load_data(site, num_sites) -> (train, test)``, each a
            torch ``Dataset`` or an ``(X, y)`` pair of arrays/tensors. With a
            third argument ``round`` agents call it again every round (0 at
            startup: that first window is the site's drift reference), so a
            site's data can change over time. The test split may carry a third
            tensor of sensitive-group ids (``(X, y, group)``).
        train: optional ``train(model, train_data, config) -> metrics`` that
            replaces the default loop (``config`` is a ``TrainConfig``).
        evaluate: optional ``evaluate(model, test_data) -> {"loss", "accuracy"}``.
        load_server_data: optional held-out data the coordinator evaluates on
            (its feature quantiles also become the drift monitor's bins).
        sensitive_groups: optional ``sensitive_groups(X) -> group ids`` for
            fairness statistics, when the test split has no group column.
        digest: sha256 of the task's source, recorded so parties can compare.
    """

    name: str
    build_model: Callable[[], nn.Module]
    load_data: LoadData
    train: Callable[..., dict[str, float]] | None = None
    evaluate: Callable[..., dict[str, float]] | None = None
    load_server_data: Callable[[], Data] | None = None
    sensitive_groups: Callable[..., object] | None = None
    digest: str = ""
    options: dict[str, Any] | None = None
