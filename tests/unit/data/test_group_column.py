"""A group column in every client's test split or in none: the one check
(:func:`fedops.data.build.group_column`) the in-memory build and the per-round partial
federation share, with one message, and the ``read`` splits ``from_task`` reuses."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fedops.data.build import from_task, group_column, load_split
from fedops.data.partial import load_site, partial_federation
from fedops.tasks.contract import Task

MESSAGE = "'toy': some clients' test splits carry a group column and some do not"


def _load(grouped: set[int]) -> Task:
    """Sites in ``grouped`` add a group column to their test split."""

    def load_data(site: int, num_sites: int) -> tuple[Any, Any]:
        x = np.full((3, 2), site, np.float32)
        y = np.arange(3) % 2
        test = (x, y, np.zeros(3, np.int64)) if site in grouped else (x, y)
        return (x, y), test

    return Task(name="toy", build_model=lambda: torch.nn.Linear(2, 2), load_data=load_data)


def test_group_column_is_all_or_none() -> None:
    x, y = np.zeros((2, 1), np.float32), np.zeros(2, np.int64)
    assert group_column("toy", [(x, y, y), (x, y, y)]) is True
    assert group_column("toy", [(x, y, None)]) is False
    with pytest.raises(ValueError, match=MESSAGE):
        group_column("toy", [(x, y, y), (x, y, None)])


@pytest.mark.parametrize("grouped", [{1}, {0, 2}])
def test_both_paths_refuse_a_partial_group_column_alike(grouped: set[int]) -> None:
    task = _load(grouped)
    with pytest.raises(ValueError, match=MESSAGE) as whole:
        from_task(task, 3)
    sites = {s: load_site(task, s, 3) for s in range(3)}
    with pytest.raises(ValueError, match=MESSAGE) as partial:
        partial_federation("toy", {s: sites[s] for s in (1, 2)}, 3, like=sites[0])
    assert str(whole.value) == str(partial.value)


@pytest.mark.parametrize("grouped", [set(), {0, 1, 2}])
def test_all_or_none_pass_both_paths(grouped: set[int]) -> None:
    task = _load(grouped)
    whole = from_task(task, 3)
    sites = {s: load_site(task, s, 3) for s in range(3)}
    held = partial_federation("toy", {1: sites[1]}, 3, like=sites[0])
    assert (whole.test_groups is None) == (held.test_groups is None) == (not grouped)


def test_from_task_reuses_the_splits_already_read() -> None:
    calls: list[int] = []
    task = _load(set())
    load_data = task.load_data

    def counted(site: int, num_sites: int) -> tuple[Any, Any]:
        calls.append(site)
        return load_data(site, num_sites)

    task = Task(name="toy", build_model=task.build_model, load_data=counted)
    read = {s: load_split(task, s, 4) for s in (0, 3)}
    data = from_task(task, 4, read=read)
    assert calls == [0, 3, 1, 2]  # the two read, then the others once
    assert data.train_x[:, 0].tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3  # site order
