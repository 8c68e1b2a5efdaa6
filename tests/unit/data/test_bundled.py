"""The bundled datasets read without scikit-learn equal scikit-learn's own loaders."""

from __future__ import annotations

import numpy as np
import pytest
from fresh_imports import loaded_after
from sklearn.datasets import load_breast_cancer, load_digits

from fedops.data import bundled


@pytest.fixture
def without_the_files(monkeypatch):
    """A scikit-learn that keeps its data files elsewhere: the loaders' fallback."""
    monkeypatch.setattr(bundled, "_sklearn_data_file", lambda name: None)
    bundled.digits.cache_clear()
    bundled.breast_cancer_raw.cache_clear()
    yield
    bundled.digits.cache_clear()
    bundled.breast_cancer_raw.cache_clear()


def _check_digits() -> None:
    x, y = bundled.digits()
    reference = load_digits()
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (1797, 64)
    np.testing.assert_array_equal(x, (reference.data / 16.0).astype(np.float32))
    np.testing.assert_array_equal(y, reference.target)
    assert x.min() >= 0.0 and x.max() <= 1.0


def _check_breast_cancer() -> None:
    x, y = bundled.breast_cancer_raw()
    reference = load_breast_cancer()
    assert x.dtype == np.float64 and y.dtype == np.int64 and x.shape == (569, 30)
    np.testing.assert_array_equal(x, reference.data)
    np.testing.assert_array_equal(y, reference.target)


def test_the_files_read_directly_equal_scikit_learns_loaders():
    assert bundled._sklearn_data_file("digits.csv.gz") is not None
    _check_digits()
    _check_breast_cancer()


def test_without_the_files_scikit_learns_loaders_give_the_same(without_the_files):
    _check_digits()
    _check_breast_cancer()


def test_loading_digits_does_not_import_scikit_learn():
    # what a site agent and a coordinator of the digits task pay at start
    code = (
        "from fedops.tasks.digits import make_task\n"
        "(x, y), _ = make_task().load_data(0, 2)\nassert len(y) > 0"
    )
    assert loaded_after(code, ("sklearn", "scipy.stats")) == []


@pytest.mark.parametrize("n", [1, 7, 569, 1797])
def test_the_holdout_and_site_splits_partition_their_rows(n):
    pool, held = bundled.holdout_split(n)
    assert len(held) == round(n * bundled.HOLDOUT_FRACTION)
    np.testing.assert_array_equal(np.sort(np.concatenate([pool, held])), np.arange(n))
    np.testing.assert_array_equal(bundled.holdout_split(n)[1], held)  # fixed
    if len(pool):
        train, test = bundled.site_split(pool, seed=3, site=1)
        assert len(test) == max(1, round(len(pool) * bundled.TEST_FRACTION))
        np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), pool)
