"""Unit tests for fedops.data.synthetic: FedProx's Synthetic(alpha, beta) generator."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fedops.data import FederatedData
from fedops.data.synthetic import device_sizes, synthetic, synthetic_iid


def _sizes(data: FederatedData) -> np.ndarray:
    return data.train_sizes() + np.diff(data.test_offsets)


def _label_counts(data: FederatedData) -> np.ndarray:
    """[clients, classes] label counts over each client's train rows."""
    device = np.repeat(np.arange(data.num_clients), data.train_sizes())
    counts = np.zeros((data.num_clients, data.num_classes))
    np.add.at(counts, (device, data.train_y), 1)
    return counts


def _mean_label_entropy(data: FederatedData) -> float:
    """Mean entropy (nats) of each client's label distribution: lower means more skew."""
    p = _label_counts(data)
    p /= p.sum(axis=1, keepdims=True)
    logp = np.log(p, out=np.zeros_like(p), where=p > 0)
    return float(-(p * logp).sum(axis=1).mean())


def _feature_shift(data: FederatedData) -> float:
    """Variance across clients of each client's mean feature value (its B_k, near enough)."""
    sums = np.add.reduceat(data.train_x.astype(np.float64), data.train_offsets[:-1], axis=0)
    return float((sums / data.train_sizes()[:, None]).mean(axis=1).var())


def _assert_consistent(data: FederatedData, clients: int, features: int, classes: int) -> None:
    assert data.num_clients == clients
    assert data.num_features == features
    assert data.num_classes == classes
    assert data.train_x.dtype == np.float32 and data.test_x.dtype == np.float32
    assert data.train_y.dtype == np.int64 and data.test_y.dtype == np.int64
    assert data.train_offsets.dtype == np.int64 and data.test_offsets.dtype == np.int64
    assert data.train_x.shape == (data.train_offsets[-1], features)
    assert data.test_x.shape == (data.test_offsets[-1], features)
    assert np.all(np.diff(data.train_offsets) >= 1), "every client has a train row"
    for y in (data.train_y, data.test_y):
        assert y.min() >= 0 and y.max() < classes
    assert data.server_x is None and data.server_y is None


def test_shapes_dtypes_and_offsets():
    data = synthetic(num_clients=30, alpha=0.5, beta=0.5, num_features=12, num_classes=4, seed=3)
    _assert_consistent(data, 30, 12, 4)
    x, y = data.client_train(7)
    a, b = data.train_offsets[7], data.train_offsets[8]
    np.testing.assert_array_equal(x, data.train_x[a:b])
    np.testing.assert_array_equal(y, data.train_y[a:b])


def test_train_test_split_per_client():
    data = synthetic(num_clients=200, alpha=1, beta=1, seed=0, test_fraction=0.25)
    sizes = _sizes(data)
    np.testing.assert_array_equal(np.diff(data.test_offsets), np.rint(sizes * 0.25))
    no_test = synthetic(num_clients=20, alpha=1, beta=1, seed=0, test_fraction=0.0)
    assert len(no_test.test_x) == 0 and no_test.num_clients == 20


def test_a_single_row_client_keeps_it_for_training():
    data = synthetic(
        num_clients=5, alpha=0, beta=0, min_samples=1, max_samples=1, test_fraction=0.9
    )
    np.testing.assert_array_equal(data.train_sizes(), np.ones(5))
    assert len(data.test_x) == 0


def test_same_seed_same_data_other_seed_other_data():
    kwargs = {"num_clients": 40, "alpha": 1.0, "beta": 1.0}
    a, b, c = synthetic(**kwargs, seed=5), synthetic(**kwargs, seed=5), synthetic(**kwargs, seed=6)
    for field in ("train_x", "train_y", "train_offsets", "test_x", "test_y", "test_offsets"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.train_offsets, c.train_offsets)
    n = min(len(a.train_x), len(c.train_x))
    assert not np.array_equal(a.train_x[:n], c.train_x[:n])


def test_sizes_follow_a_heavy_tailed_power_law():
    sizes = _sizes(synthetic(num_clients=1000, alpha=0, beta=0, seed=0, num_features=4))
    assert sizes.min() >= 50, "every device has at least min_samples rows"
    assert sizes.max() / np.median(sizes) > 5
    top = np.sort(sizes)[::-1]
    assert top[:100].sum() > 0.5 * sizes.sum(), "a tenth of the devices hold most rows"


def test_size_distribution_is_configurable():
    rng = np.random.default_rng(0)
    sizes = device_sizes(rng, 5000, mean_log=2.0, sigma_log=0.0, min_samples=3)
    np.testing.assert_array_equal(sizes, np.full(5000, int(np.exp(2.0)) + 3))
    capped = synthetic(num_clients=300, alpha=1, beta=1, seed=1, min_samples=20, max_samples=80)
    sizes = _sizes(capped)
    assert sizes.min() >= 20 and sizes.max() == 80


def test_one_in_alpha_beta_makes_clients_more_heterogeneous_than_zero():
    kwargs = {"num_clients": 400, "seed": 0, "max_samples": 400}
    homo = synthetic(alpha=0.0, beta=0.0, **kwargs)
    hetero = synthetic(alpha=1.0, beta=1.0, **kwargs)
    # beta shifts each client's inputs by B_k ~ N(0, beta): ~1/60 of the variance at 0
    assert _feature_shift(hetero) > 10 * _feature_shift(homo)
    assert _feature_shift(homo) < 0.1
    # and the shifted, separately modelled clients see more skewed labels
    assert _mean_label_entropy(hetero) < _mean_label_entropy(homo) - 0.03


def test_iid_variant_shares_one_model_and_one_input_distribution():
    kwargs = {"num_clients": 60, "seed": 2, "max_samples": 300, "num_features": 20}
    iid = synthetic_iid(**kwargs)
    non = synthetic(alpha=1.0, beta=1.0, **kwargs)
    _assert_consistent(iid, 60, 20, 10)
    # one linear model labels every device: a linear fit on the pool classifies every
    # device's held-out rows well; with per-device models no single fit can
    accuracies = []
    for data in (iid, non):
        model = LogisticRegression(C=100.0, max_iter=2000).fit(data.train_x, data.train_y)
        per_client = [
            model.score(*data.client_test(k))
            for k in range(data.num_clients)
            if data.test_offsets[k + 1] > data.test_offsets[k]
        ]
        accuracies.append(np.array(per_client))
    assert accuracies[0].min() > 0.75 and accuracies[0].mean() > 0.9
    assert accuracies[1].mean() < accuracies[0].mean() - 0.2
    # same inputs everywhere: the labels mix over classes far more evenly
    assert _mean_label_entropy(iid) > _mean_label_entropy(non) + 0.5
    assert _feature_shift(iid) < 0.1


def test_iid_flag_overrides_alpha_and_beta():
    a = synthetic(num_clients=10, alpha=0.0, beta=0.0, seed=4, iid=True)
    b = synthetic_iid(num_clients=10, seed=4)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    np.testing.assert_array_equal(a.train_y, b.train_y)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_clients": 0}, "num_clients"),
        ({"alpha": -1.0}, "alpha"),
        ({"num_classes": 1}, "num_classes"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"min_samples": 0}, "min_samples"),
        ({"min_samples": 10, "max_samples": 5}, "max_samples"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic(**{"num_clients": 3, "alpha": 1.0, "beta": 1.0, **kwargs})


@pytest.mark.slow
def test_ten_thousand_devices_take_memory_proportional_to_their_rows():
    data = synthetic(num_clients=10_000, alpha=1.0, beta=1.0, seed=0)
    _assert_consistent(data, 10_000, 60, 10)
    rows = len(data.train_x) + len(data.test_x)
    assert rows == _sizes(data).sum() and _sizes(data).min() >= 50
    assert data.train_x.nbytes + data.test_x.nbytes == rows * 60 * 4, "float32, no padding"
    assert data.train_y.nbytes + data.test_y.nbytes == rows * 8
    for x in (data.train_x, data.test_x):
        assert x.base is None and x.flags.c_contiguous, "own buffers, not views of a bigger one"
    assert np.isfinite(data.train_x).all()
    assert len(np.unique(data.train_y)) == 10
