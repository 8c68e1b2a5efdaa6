"""Some clients of a federation in flat arrays, the others present with no rows.

When every client's data does not fit in memory, the batched simulation holds only the
clients a round uses (:mod:`fedops.simulation.lazy_federation`). It still indexes them
by their place in the whole federation: a :class:`FederatedData` of ``num_sites``
clients whose offsets give the held clients their rows and every other client none.
Node ids, shuffle seeds, faults and privacy ledgers then stay those of the whole
federation, and the backend's arrays and offsets work unchanged (an offset per client
is 8 bytes: 0.8 MB for 100,000 clients).

A site is loaded exactly as :func:`fedops.data.build.from_task` loads it (the same
``load_data`` call, the same :func:`fedops.data.materialize.split_arrays` reading and
the same error messages naming the task, the site and why), and checked against the
first site loaded: one feature shape, and a group column in every test split or in none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedops.data.build import TaskLike, group_column, load_split
from fedops.data.federated import FederatedData
from fedops.data.materialize import DataError, Split


@dataclass(frozen=True, slots=True)
class SiteRows:
    """One site's training and test split as arrays (test group ids or None)."""

    train: Split
    test: Split

    @property
    def nbytes(self) -> int:
        """Bytes of its arrays: what holding this site costs."""
        arrays = (*self.train, *self.test)
        return sum(a.nbytes for a in arrays if a is not None)

    def train_only(self) -> SiteRows:
        """The training rows alone (a drift reference reads no test row)."""
        x, y, groups = self.test
        return SiteRows(self.train, (x[:0], y[:0], None if groups is None else groups[:0]))


def load_site(
    task: TaskLike, site: int, num_sites: int, server_round: int | None = None
) -> SiteRows:
    """The site's splits as :func:`fedops.data.build.from_task` reads them
    (:func:`fedops.data.build.load_split`: the same call, checks and messages)."""
    return SiteRows(*load_split(task, site, num_sites, server_round))


def site_rows(data: FederatedData, client: int) -> SiteRows:
    """Client ``client``'s rows of ``data`` (views, no copy): a held client kept for the
    next holding without loading it again."""
    a, b = data.train_offsets[client], data.train_offsets[client + 1]
    c, d = data.test_offsets[client], data.test_offsets[client + 1]
    groups = None if data.test_groups is None else data.test_groups[c:d]
    return SiteRows(
        (data.train_x[a:b], data.train_y[a:b], None), (data.test_x[c:d], data.test_y[c:d], groups)
    )


def partial_federation(
    name: str, sites: Mapping[int, SiteRows], num_sites: int, like: SiteRows
) -> FederatedData:
    """The clients ``sites`` (by index) of a federation of ``num_sites``, every other
    client without rows. ``like``: the first site loaded, whose feature shape and group
    column every site must share (as :func:`fedops.data.build.from_task` checks across all
    clients); ``name``: the task's, for the error."""
    shape = like.train[0].shape[1:]
    for site, rows in sites.items():
        for x, y, _ in (rows.train, rows.test):
            if len(y) and x.shape[1:] != shape:
                raise DataError(
                    f"task {name!r}: clients' features differ in shape: "
                    f"{ {shape, x.shape[1:]} } (load_data({site}) against the first site's)"
                )
    grouped = group_column(name, [like.test, *(rows.test for rows in sites.values())])
    order = sorted(sites)
    train = [sites[s].train for s in order]
    test = [sites[s].test for s in order]
    top = max((int(y.max()) for _, y, _ in train + test if len(y)), default=-1)
    train_x, train_y, train_off, _ = _spread(train, order, num_sites, shape)
    test_x, test_y, test_off, groups = _spread(test, order, num_sites, shape)
    return FederatedData(
        train_x=train_x,
        train_y=train_y,
        train_offsets=train_off,
        test_x=test_x,
        test_y=test_y,
        test_offsets=test_off,
        num_classes=max(top + 1, 1),
        test_groups=groups if grouped else None,
    )


def _spread(
    splits: list[Split], order: list[int], num_sites: int, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The splits of the sites ``order`` (ascending) concatenated, with offsets over all
    ``num_sites`` clients (an absent client's rows: none)."""
    sizes = np.zeros(num_sites, dtype=np.int64)
    sizes[order] = [len(y) for _, y, _ in splits]
    offsets = np.zeros(num_sites + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    if not splits:
        x = np.zeros((0, *shape), np.float32)
        return x, np.zeros(0, np.int64), offsets, None
    x = np.concatenate([x.reshape(len(y), *shape) for x, y, _ in splits])
    y = np.concatenate([y for _, y, _ in splits])
    groups = [g for _, _, g in splits if g is not None]
    return x, y, offsets, np.concatenate(groups) if len(groups) == len(splits) else None
