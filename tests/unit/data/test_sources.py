"""Unit tests for fedops.data.sources: the built-in digits and breast cancer datasets."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits

from fedops.data import FederatedData, bundled, sources
from fedops.tasks import digits as digits_task


def _assert_partition_of(data: FederatedData, n: int, held: int) -> None:
    """Train, test and server rows together are the dataset, each row exactly once."""
    assert len(data.server_x) == held
    assert len(data.train_x) + len(data.test_x) + held == n
    for x in (data.train_x, data.test_x, data.server_x):
        assert x.dtype == np.float32
    for y in (data.train_y, data.test_y, data.server_y):
        assert y.dtype == np.int64 and y.min() >= 0 and y.max() < data.num_classes
    assert np.all(np.diff(data.test_offsets) >= 1), "every client has a test row"


@pytest.mark.parametrize(
    ("num_clients", "partition", "alpha", "seed"),
    [(1, "iid", 0.5, 0), (5, "iid", 0.5, 3), (8, "dirichlet", 0.3, 0), (20, "dirichlet", 1.0, 7)],
)
def test_digits_clients_see_exactly_what_a_deployed_site_loads(num_clients, partition, alpha, seed):
    data = sources.digits(num_clients=num_clients, partition=partition, alpha=alpha, seed=seed)
    task = digits_task.make_task(partition=partition, alpha=alpha, seed=seed)
    assert data.num_clients == num_clients and data.num_classes == 10
    for site in range(num_clients):
        (tr_x, tr_y), (te_x, te_y) = task.load_data(site, num_clients)
        x, y = data.client_train(site)
        np.testing.assert_array_equal(x, tr_x)
        np.testing.assert_array_equal(y, tr_y)
        x, y = data.client_test(site)
        np.testing.assert_array_equal(x, te_x)
        np.testing.assert_array_equal(y, te_y)
    server_x, server_y = task.load_server_data()
    np.testing.assert_array_equal(data.server_x, server_x)
    np.testing.assert_array_equal(data.server_y, server_y)


def test_digits_layout():
    data = sources.digits(num_clients=10, partition="dirichlet", alpha=0.5, seed=0)
    _assert_partition_of(data, 1797, round(1797 * 0.15))
    every = (load_digits().data / 16.0).astype(np.float32)
    rows = np.concatenate([data.train_x, data.test_x, data.server_x])
    np.testing.assert_array_equal(_sorted_rows(rows), _sorted_rows(every))  # each row once
    assert data.num_features == 64
    assert data.train_x.min() >= 0.0 and data.train_x.max() <= 1.0
    for k in range(10):
        n_test = np.diff(data.test_offsets)[k]
        assert n_test == max(1, round((n_test + data.train_sizes()[k]) * 0.2))


def test_dirichlet_skews_labels_more_than_iid():
    def label_spread(data: FederatedData) -> float:
        shares = [np.bincount(data.client_train(k)[1], minlength=10) for k in range(10)]
        p = np.array(shares, dtype=float)
        p /= p.sum(axis=1, keepdims=True)
        return float(np.abs(p - p.mean(axis=0)).sum(axis=1).mean())

    iid = sources.digits(num_clients=10, partition="iid", alpha=0.5, seed=0)
    skew = sources.digits(num_clients=10, partition="dirichlet", alpha=0.1, seed=0)
    assert label_spread(skew) > 3 * label_spread(iid)


def test_breast_cancer_is_standardised_on_the_federated_pool():
    data = sources.breast_cancer(num_clients=4, partition="iid", alpha=0.5, seed=1)
    _assert_partition_of(data, 569, round(569 * 0.15))
    assert data.num_classes == 2 and data.num_features == 30
    pool = np.concatenate([data.train_x, data.test_x]).astype(np.float64)
    np.testing.assert_allclose(pool.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(pool.std(axis=0), 1.0, atol=1e-5)
    # the held-out rows went through the same transform, without shaping it
    assert np.abs(data.server_x.mean(axis=0)).max() > 1e-3
    raw = load_breast_cancer()
    pool_y = np.concatenate([data.train_y, data.test_y])
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([pool_y, data.server_y])), np.bincount(raw.target)
    )


def test_breast_cancer_rows_are_the_raw_rows_scaled_by_pool_statistics_only():
    raw = load_breast_cancer().data
    data = sources.breast_cancer(num_clients=3, partition="dirichlet", alpha=1.0, seed=0)
    pool, held = bundled.holdout_split(len(raw))
    assert len(np.intersect1d(pool, held)) == 0 and len(pool) + len(held) == len(raw)
    mean, std = raw[pool].mean(axis=0), raw[pool].std(axis=0)
    assert not np.allclose(mean, raw.mean(axis=0)), "pool-only statistics are distinguishable"
    expected = ((raw - mean) / std).astype(np.float32)
    np.testing.assert_allclose(data.server_x, expected[held], atol=1e-5)
    clients = np.concatenate([data.train_x, data.test_x])
    np.testing.assert_allclose(_sorted_rows(clients), _sorted_rows(expected[pool]), atol=1e-5)


def _sorted_rows(x: np.ndarray) -> np.ndarray:
    return x[np.lexsort(x.T[::-1])]


def test_same_seed_same_split_other_seed_other_split():
    kwargs = {"num_clients": 6, "partition": "dirichlet", "alpha": 0.5}
    a = sources.breast_cancer(**kwargs, seed=0)
    b = sources.breast_cancer(**kwargs, seed=0)
    c = sources.breast_cancer(**kwargs, seed=1)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    np.testing.assert_array_equal(a.train_offsets, b.train_offsets)
    assert not np.array_equal(a.train_offsets, c.train_offsets)
    np.testing.assert_array_equal(a.server_x, c.server_x)  # the hold-out never moves


@pytest.mark.parametrize("build", [sources.digits, sources.breast_cancer])
def test_bad_partition_and_too_many_clients_are_refused(build):
    with pytest.raises(ValueError, match="unknown partition 'shards'"):
        build(num_clients=2, partition="shards", alpha=0.5, seed=0)
    with pytest.raises(ValueError, match="num_clients must be >= 1"):
        build(num_clients=0, partition="iid", alpha=0.5, seed=0)
    with pytest.raises(ValueError, match="too many"):
        build(num_clients=1000, partition="iid", alpha=0.5, seed=0)
    with pytest.raises(ValueError, match="too many"):
        build(num_clients=200, partition="dirichlet", alpha=0.5, seed=0)
