"""Build a FederatedData from a user task, or a built-in dataset by name.

A user task speaks the deployment contract, ``load_data(site, num_sites) -> (train,
test)``; the vectorized simulation wants every client's rows in flat arrays. Calling
``load_data`` once per client and concatenating bridges the two, so a task written for
deployment simulates unchanged, on exactly the rows each site would load.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fedops.data import sources, synthetic
from fedops.data.federated import FederatedData
from fedops.data.materialize import DataError, Split, split_arrays

#: built-in datasets by the name a config uses; each takes keyword arguments only
DATASETS: dict[str, Callable[..., FederatedData]] = {
    "digits": sources.digits,
    "breast_cancer": sources.breast_cancer,
    "synthetic": synthetic.synthetic,
    "synthetic_iid": synthetic.synthetic_iid,
}


@dataclass(frozen=True)
class ReadBudget:
    """The bytes :func:`from_task` may read before it gives up: an estimate from a few
    sites can miss one far larger than them, and the in-memory build would then read (and
    hold) everything before anyone sees the federation does not fit.

    The bytes read so far times ``factor`` (bytes held per byte read: 2 where a second
    copy is kept, e.g. a drift reference beside each round's window) are compared with
    ``max_bytes`` after each site. What is read is counted, not projected: the total only
    grows, so a federation that fits is never stopped, and one that does not is stopped
    holding about ``max_bytes`` (and the site that tipped it over), not everything."""

    max_bytes: int
    factor: int = 1

    def check(self, sites_read: int, bytes_read: int) -> None:
        """:class:`DataOverBudget` if ``bytes_read`` (of ``sites_read`` sites) is over."""
        if bytes_read * self.factor > self.max_bytes:
            raise DataOverBudget(sites_read, bytes_read, bytes_read * self.factor)


class DataOverBudget(Exception):
    """:func:`from_task` stopped reading: the federation is over its :class:`ReadBudget`.

    What it read is dropped; the caller decides what to do instead (load per round)."""

    def __init__(self, sites_read: int, bytes_read: int, need: int) -> None:
        super().__init__(f"{sites_read} sites read, {bytes_read} bytes: ~{need} bytes needed")
        self.sites_read = sites_read
        #: bytes of the sites' arrays as read (before ``factor``)
        self.bytes_read = bytes_read
        #: ``bytes_read`` times the budget's ``factor``: the figure over ``max_bytes``
        self.need = need


class TaskLike(Protocol):
    """What from_task reads of a ``fedops.tasks.Task`` (a Protocol: data sits below tasks)."""

    @property
    def name(self) -> str: ...
    @property
    def load_data(self) -> Callable[..., tuple[Any, Any]]: ...


def load_split(
    task: TaskLike, site: int, num_sites: int, server_round: int | None = None
) -> tuple[Split, Split]:
    """``task.load_data(site, num_sites[, server_round])`` read into arrays: the site's
    (train, test) splits, or a ValueError naming the task, the site and why."""
    extra = () if server_round is None else (server_round,)
    loaded = task.load_data(site, num_sites, *extra)
    if not isinstance(loaded, tuple | list) or len(loaded) != 2:
        raise DataError(
            f"task {task.name!r}: load_data({site}, {num_sites}) must return (train, test), "
            f"got {type(loaded).__name__}"
        )
    train = split_arrays(task.name, loaded[0], f"load_data({site}) train")
    test = split_arrays(task.name, loaded[1], f"load_data({site}) test", groups_ok=True)
    return train, test


def from_task(
    task: TaskLike,
    num_clients: int,
    server_round: int | None = None,
    *,
    read: Mapping[int, tuple[Split, Split]] | None = None,
    budget: ReadBudget | None = None,
) -> FederatedData:
    """Every client's data from ``task.load_data(i, num_clients)``, flattened.

    ``server_round`` (a task whose data changes per round): ``load_data(i, num_clients,
    server_round)``, what each deployed site loads for that round. Each split is an ``(X,
    y)`` pair, a ``TensorDataset`` or a map-style Dataset of ``(x, y)`` items (read once:
    :mod:`fedops.data.materialize`); a test split may add a third column of group ids.
    Features become float32 and labels int64. ``num_classes`` is the largest label seen
    (clients and server) plus one. Server rows come from ``task.load_server_data()``.
    ``read``: splits of some clients (by index) the caller already read with
    :func:`load_split` for the same round (to size the federation), not read again.
    ``budget``: :class:`DataOverBudget` as soon as the sites read (``read`` among them)
    put the federation over it (the rows read go with the exception once handled); None:
    read everything.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    read = read or {}
    train: list[Split] = []
    test: list[Split] = []
    sites_read, bytes_read = len(read), sum(split_bytes(*split) for split in read.values())
    for i in range(num_clients):
        if i in read:
            a, b = read[i]
        else:
            a, b = load_split(task, i, num_clients, server_round)
            sites_read, bytes_read = sites_read + 1, bytes_read + split_bytes(a, b)
            if budget is not None:
                budget.check(sites_read, bytes_read)
        train.append(a)
        test.append(b)

    server: list[Split] = []
    load_server = getattr(task, "load_server_data", None)
    if load_server is not None:
        server.append(split_arrays(task.name, load_server(), "load_server_data()"))
    shape = _feature_shape(task.name, train + test + server)
    grouped = group_column(task.name, test)
    top = max((int(y.max()) for _, y, _ in train + test + server if len(y)), default=-1)
    train_x, train_y, train_off, _ = _concat(train, shape)
    test_x, test_y, test_off, test_groups = _concat(test, shape)
    return FederatedData(
        train_x=train_x,
        train_y=train_y,
        train_offsets=train_off,
        test_x=test_x,
        test_y=test_y,
        test_offsets=test_off,
        num_classes=top + 1,
        server_x=server[0][0] if server else None,
        server_y=server[0][1] if server else None,
        test_groups=test_groups if grouped else None,
    )


def split_bytes(*splits: Split) -> int:
    """Bytes of the splits' arrays (group ids included): what holding them costs."""
    return sum(a.nbytes for split in splits for a in split if a is not None)


def group_column(name: str, tests: Iterable[Split]) -> bool:
    """Whether the test splits carry a group column, all of them or none (else a
    ValueError naming task ``name``): fairness statistics compare groups across every
    client, so a federation where only some sites say who is in which group has none to
    compare. The one check :func:`from_task` and
    :func:`fedops.data.partial.partial_federation` share, with one message."""
    grouped = {groups is not None for _, _, groups in tests}
    if len(grouped) > 1:
        raise DataError(
            f"task {name!r}: some clients' test splits carry a group column and some "
            "do not; give every client's test split one, or none"
        )
    return grouped == {True}


def _feature_shape(name: str, splits: list[Split]) -> tuple[int, ...]:
    """The one shape of a row's features (empty splits, read from empty Datasets, aside)."""
    shapes = {x.shape[1:] for x, y, _ in splits if len(y)}
    if len(shapes) > 1:
        raise DataError(f"task {name!r}: clients' features differ in shape: {shapes}")
    return next(iter(shapes)) if shapes else splits[0][0].shape[1:]


def _concat(
    splits: list[Split], shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    offsets = np.zeros(len(splits) + 1, dtype=np.int64)
    np.cumsum([len(y) for _, y, _ in splits], out=offsets[1:])
    x = np.concatenate([x.reshape(len(y), *shape) for x, y, _ in splits])
    y = np.concatenate([y for _, y, _ in splits])
    groups = [g for _, _, g in splits if g is not None]
    return x, y, offsets, np.concatenate(groups) if len(groups) == len(splits) else None
