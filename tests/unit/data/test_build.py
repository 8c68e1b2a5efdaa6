"""Unit tests for fedops.data.build: FederatedData from a user task, and the registry."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from fedops.data import FederatedData
from fedops.data.build import DATASETS, from_task
from fedops.tasks import digits as digits_task
from fedops.tasks.contract import Task


def _rows(site: int, n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows that encode who made them: x[:, 0] = site, x[:, 1] = row number."""
    x = np.stack([np.full(n, site), np.arange(offset, offset + n), np.ones(n)], axis=1)
    return x.astype(np.float64), (np.arange(n) + site) % 3


def _task(load_data, load_server_data=None) -> Task:
    return Task(
        name="toy",
        build_model=lambda: torch.nn.Linear(3, 3),
        load_data=load_data,
        load_server_data=load_server_data,
    )


def test_numpy_clients_are_concatenated_in_order_with_offsets():
    def load_data(site: int, num_sites: int):
        assert num_sites == 4
        return _rows(site, site + 2), _rows(site, 1, offset=100)

    data = from_task(_task(load_data), 4)
    np.testing.assert_array_equal(data.train_offsets, [0, 2, 5, 9, 14])
    np.testing.assert_array_equal(data.test_offsets, [0, 1, 2, 3, 4])
    assert data.train_x.dtype == np.float32 and data.train_y.dtype == np.int64
    assert data.test_x.dtype == np.float32 and data.test_y.dtype == np.int64
    for site in range(4):
        x, y = data.client_train(site)
        expected_x, expected_y = _rows(site, site + 2)
        np.testing.assert_array_equal(x, expected_x)
        np.testing.assert_array_equal(y, expected_y)
        assert data.client_test(site)[0][0, 1] == 100
    assert data.num_classes == 3
    assert data.server_x is None and data.server_y is None


def test_tensors_become_numpy_and_server_data_is_kept():
    def load_data(site: int, num_sites: int):
        x, y = _rows(site, 3)
        pair = (torch.tensor(x, requires_grad=True), torch.tensor(y))
        return pair, [torch.tensor(x[:1]), torch.tensor(y[:1], dtype=torch.int32)]

    def load_server_data():
        return torch.zeros(5, 3), torch.tensor([0, 1, 2, 3, 6])

    data = from_task(_task(load_data, load_server_data), 2)
    assert isinstance(data.train_x, np.ndarray) and data.train_x.dtype == np.float32
    assert data.test_y.dtype == np.int64 and data.server_y.dtype == np.int64
    np.testing.assert_array_equal(data.client_train(1)[0], _rows(1, 3)[0])
    assert data.server_x.shape == (5, 3) and data.server_x.dtype == np.float32
    assert data.num_classes == 7, "the largest label anywhere, server included, plus one"


def test_a_builtin_task_round_trips_to_the_same_rows():
    task = digits_task.make_task(partition="iid", seed=2)
    data = from_task(task, 3)
    for site in range(3):
        (tr_x, tr_y), (te_x, te_y) = task.load_data(site, 3)
        for got, want in zip(
            (*data.client_train(site), *data.client_test(site)),
            (tr_x, tr_y, te_x, te_y),
            strict=True,
        ):
            np.testing.assert_array_equal(got, want)
    assert data.num_classes == 10 and len(data.server_x) == round(1797 * 0.15)


class _Items(Dataset):
    """A map-style Dataset of (x, y) items, as a user writes one."""

    def __init__(self, x: np.ndarray, y: np.ndarray, bad: int | None = None) -> None:
        self.x, self.y, self.bad = x, y, bad

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        if i == self.bad:
            return {"x": self.x[i]}
        return torch.from_numpy(self.x[i]), int(self.y[i])


def test_datasets_are_read_once_into_the_same_arrays_as_pairs():
    def pairs(site: int, num_sites: int):
        rng = np.random.default_rng(site)
        x = rng.normal(size=(5 + site, 3)).astype(np.float32)
        y = rng.integers(0, 4, 5 + site)
        g = rng.integers(0, 2, 5 + site)
        return (x, y), (x[:3], y[:3], g[:3])

    def tensor_datasets(site: int, num_sites: int):
        (x, y), (tx, ty, tg) = pairs(site, num_sites)
        t = torch.from_numpy
        return TensorDataset(t(x), t(y)), TensorDataset(t(tx), t(ty), t(tg))

    def items(site: int, num_sites: int):
        (x, y), (tx, ty, tg) = pairs(site, num_sites)
        return _Items(x, y), (tx, ty, tg)

    want = from_task(_task(pairs), 3)
    assert want.test_groups is not None and len(want.test_groups) == len(want.test_y)
    for load in (tensor_datasets, items):
        got = from_task(_task(load), 3)
        for name in ("train_x", "train_y", "train_offsets", "test_x", "test_y", "test_groups"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
        assert got.train_x.dtype == np.float32 and got.train_y.dtype == np.int64


def test_a_dataset_item_that_is_not_an_x_y_pair_is_named():
    x, y = np.zeros((4, 3), np.float32), np.zeros(4, np.int64)
    with pytest.raises(ValueError, match=r"'toy'.*load_data\(1\) train item 2 is a dict"):
        from_task(_task(lambda site, n: (_Items(x, y, bad=2 if site else None), (x, y))), 2)
    ragged = _Items(x, y)
    ragged.x = [np.zeros(3), np.zeros(3), np.zeros(2), np.zeros(3)]  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"item 2 has x of shape \(2,\)"):
        from_task(_task(lambda site, n: (ragged, (x, y))), 1)


@pytest.mark.parametrize(
    ("result", "match"),
    [
        (None, "must return \\(train, test\\)"),
        ((np.zeros((2, 3)), (np.zeros((2, 3)), np.zeros(2))), "must be an \\(X, y\\) pair"),
        (((np.zeros((2, 3)), np.zeros(3)),) * 2, "labels of shape"),
        (((np.zeros((2, 3)), np.array([0.0, 1.5])),) * 2, "class indices"),
        (((np.zeros((2, 3)), np.array([0, -1])),) * 2, "class indices"),
    ],
)
def test_malformed_load_data_is_refused(result, match):
    with pytest.raises(ValueError, match=match):
        from_task(_task(lambda site, n: result), 2)


def test_clients_with_different_feature_shapes_are_refused():
    def load_data(site: int, num_sites: int):
        pair = (np.zeros((2, 3 + site)), np.zeros(2, dtype=int))
        return pair, pair

    with pytest.raises(ValueError, match="differ in shape"):
        from_task(_task(load_data), 2)
    with pytest.raises(ValueError, match="num_clients"):
        from_task(_task(load_data), 0)


def test_registry_builds_every_dataset_by_name_from_keywords():
    assert {"digits", "breast_cancer", "synthetic"} <= DATASETS.keys()
    for build in DATASETS.values():
        params = inspect.signature(build).parameters
        assert all(p.kind is p.KEYWORD_ONLY or p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {"num_clients": 3, "seed": 0}
    built = {
        "digits": DATASETS["digits"](partition="iid", alpha=0.5, **kwargs),
        "breast_cancer": DATASETS["breast_cancer"](partition="dirichlet", alpha=1.0, **kwargs),
        "synthetic": DATASETS["synthetic"](alpha=1.0, beta=1.0, max_samples=100, **kwargs),
        "synthetic_iid": DATASETS["synthetic_iid"](max_samples=100, **kwargs),
    }
    for name, data in built.items():
        assert isinstance(data, FederatedData) and data.num_clients == 3, name
    assert (built["digits"].num_features, built["breast_cancer"].num_features) == (64, 30)
    assert built["synthetic"].num_features == 60
