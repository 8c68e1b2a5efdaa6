"""Stochastic quantization into Z_2^32, and model updates as integer vectors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.params import InvalidUpdate
from fedops.core.secagg.quantize import MODULUS, Quantizer
from fedops.core.secagg.update import Encoding, decode_mean, encode_update, vector_length

EPS = np.finfo(np.float64).eps


def sum_exact(words: list[np.ndarray]) -> np.ndarray:
    """The sum as Python ints (object array): no wrap-around by construction."""
    return np.sum(np.stack(words).astype(object), axis=0)


@st.composite
def quantized_sums(draw):
    clip = draw(st.floats(1e-3, 1e3))
    summands = draw(st.integers(1, 20))
    levels = draw(
        st.one_of(st.integers(1, 100), st.integers(1, (MODULUS - 1) // summands)),
        label="levels",
    )
    length = draw(st.integers(1, 40))
    values = draw(
        st.lists(
            st.lists(st.floats(-3 * clip, 3 * clip), min_size=length, max_size=length),
            min_size=summands,
            max_size=summands,
        )
    )
    return Quantizer(clip=clip, levels=levels), np.array(values), draw(st.integers(0, 2**32))


@settings(max_examples=150, deadline=None)
@given(case=quantized_sums())
def test_decoded_sum_is_within_the_documented_bound(case):
    q, values, seed = case
    count = len(values)
    rng = np.random.default_rng(seed)
    encoded = [q.encode(v, rng) for v in values]
    words = [w for w, _ in encoded]
    for w, _ in encoded:
        assert w.dtype == np.uint32
        assert int(w.max()) <= q.levels
    assert sum(c for _, c in encoded) == int(np.count_nonzero(np.abs(values) > q.clip))
    exact = sum_exact(words)
    assert max(exact) <= MODULUS - 1, "the sum of encodings wrapped"
    total = np.sum(np.stack(words), axis=0, dtype=np.uint32)
    assert np.array_equal(total.astype(object), exact)
    decoded = q.decode_sum(total, count)
    true = np.clip(values, -q.clip, q.clip).sum(axis=0)
    # the documented bound, plus float64 rounding (a few ulps of the clip per value)
    bound = count * q.step + 64 * count * EPS * q.clip
    assert np.all(np.abs(decoded - true) < bound)


@settings(max_examples=20, deadline=None)
@given(
    value=st.floats(-1.2, 1.2),
    levels=st.integers(1, 50),
    seed=st.integers(0, 2**32),
)
def test_stochastic_rounding_is_unbiased(value, levels, seed):
    q = Quantizer(clip=1.0, levels=levels)
    draws = 20_000
    words, _ = q.encode(np.full(draws, value), np.random.default_rng(seed))
    decoded = words.astype(np.float64) * q.step - q.clip
    clipped = min(max(value, -1.0), 1.0)
    # each draw is one of two neighbouring grid points: std <= step / 2
    assert int(words.max()) - int(words.min()) <= 1
    tolerance = 6 * (q.step / 2) / np.sqrt(draws) + 1e-12
    assert abs(decoded.mean() - clipped) < tolerance


def test_rounding_to_nearest_would_fail_the_unbiasedness_test():
    # guards the test above: it can tell stochastic from deterministic rounding
    q = Quantizer(clip=1.0, levels=10)
    words, _ = q.encode(np.full(20_000, 0.13), np.random.default_rng(0))
    assert set(np.unique(words)) == {5, 6}
    nearest = np.rint((0.13 + 1) / q.step) * q.step - 1
    assert abs(nearest - 0.13) > 6 * (q.step / 2) / np.sqrt(20_000)


@pytest.mark.parametrize("count", [1, 2, 3, 7, 100, 1000])
def test_count_summands_at_the_top_level_do_not_wrap(count):
    q = Quantizer.for_summands(2.5, count)
    assert q.levels == (MODULUS - 1) // count
    assert count * q.levels <= MODULUS - 1
    rng = np.random.default_rng(count)
    top, clipped = q.encode(np.array([2.5, 1e9, np.inf]), rng)
    assert top.tolist() == [q.levels] * 3
    assert clipped == 2
    bottom, _ = q.encode(np.array([-2.5, -1e9]), rng)
    assert bottom.tolist() == [0, 0]
    total = np.sum(np.tile(top, (count, 1)), axis=0, dtype=np.uint32)
    assert total.tolist() == [count * q.levels] * 3
    assert np.allclose(q.decode_sum(total, count), count * 2.5, rtol=0, atol=count * q.step)


def test_quantizer_arguments_are_checked():
    for clip in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="clip"):
            Quantizer(clip=clip, levels=10)
    for levels in (0, MODULUS):
        with pytest.raises(ValueError, match="levels"):
            Quantizer(clip=1.0, levels=levels)
    with pytest.raises(ValueError, match="summand"):
        Quantizer.for_summands(1.0, 0)
    assert Quantizer.for_summands(1.0, 1).levels == MODULUS - 1
    assert Quantizer(clip=1.0, levels=4).step == 0.5


# -- model updates -----------------------------------------------------------------------
def model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=4), "s": np.array(0.5)}


@settings(max_examples=60, deadline=None)
@given(
    examples=st.lists(st.integers(1, 10_000), min_size=1, max_size=12),
    clip=st.floats(0.01, 10),
    scale=st.floats(0.001, 5),
    cap=st.one_of(st.none(), st.integers(1, 10_000)),
    seed=st.integers(0, 2**32),
)
def test_encoded_updates_decode_to_the_weighted_mean(examples, clip, scale, cap, seed):
    rng = np.random.default_rng(seed)
    start = model(rng)
    n = len(examples)
    trained = [
        {k: v + rng.normal(scale=scale, size=v.shape) for k, v in start.items()} for _ in examples
    ]
    quantizer = Quantizer.for_summands(clip, n)
    max_weight = min(cap or max(examples), (MODULUS - 1) // n)
    encoding = Encoding(quantizer=quantizer, max_weight=max_weight)
    vectors = []
    for t, e in zip(trained, examples, strict=True):
        vec, clipped = encode_update(start, t, e, encoding, rng)
        assert vec.shape == (vector_length(start),) == (12 + 4 + 1 + 1,)
        assert vec[-1] == min(e, max_weight)
        deltas = np.concatenate([(t[k] - start[k]).ravel() for k in start])
        assert clipped == np.count_nonzero(np.abs(deltas) > clip) / deltas.size
        vectors.append(vec)
    total = np.sum(np.stack(vectors), axis=0, dtype=np.uint32)
    assert np.array_equal(total.astype(object), sum_exact(vectors))
    mean, weight = decode_mean(start, total, n, encoding)
    weights = [min(e, max_weight) for e in examples]
    assert weight == sum(weights)
    bound = n * quantizer.step * max_weight / weight + 64 * n * EPS * clip * max_weight / weight
    for k in start:
        expected = start[k] + sum(
            w * np.clip(t[k] - start[k], -clip, clip) for w, t in zip(weights, trained, strict=True)
        ) / sum(weights)
        assert mean[k].shape == start[k].shape
        assert np.all(np.abs(mean[k] - expected) < bound + 8 * EPS * np.abs(expected))


def test_dtypes_are_kept_and_integers_rounded():
    start = {"f": np.zeros(3, np.float32), "i": np.array([1, 2, 3], np.int64)}
    trained = {"f": np.array([0.1, -0.2, 0.3], np.float32), "i": np.array([2, 2, 5], np.int64)}
    encoding = Encoding(quantizer=Quantizer.for_summands(4.0, 1), max_weight=7)
    vec, clipped = encode_update(start, trained, 3, encoding, np.random.default_rng(0))
    assert clipped == 0
    mean, weight = decode_mean(start, vec, 1, encoding)
    assert weight == 3
    assert mean["f"].dtype == np.float32
    assert np.allclose(mean["f"], trained["f"], atol=1e-6)
    assert mean["i"].dtype == np.int64
    assert mean["i"].tolist() == [2, 2, 5]


def test_clipped_fraction_is_reported():
    start = {"a": np.zeros(8)}
    trained = {"a": np.array([0.0, 0.5, 1.0, 1.5, -2.0, -0.99, 3.0, 0.1])}
    encoding = Encoding(quantizer=Quantizer.for_summands(1.0, 2), max_weight=10)
    _, clipped = encode_update(start, trained, 10, encoding, np.random.default_rng(0))
    assert clipped == 3 / 8


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_updates_are_refused(bad):
    start = {"a": np.zeros(3)}
    trained = {"a": np.array([0.0, bad, 1.0])}
    encoding = Encoding(quantizer=Quantizer.for_summands(1.0, 2), max_weight=10)
    with pytest.raises(InvalidUpdate, match="NaN or Inf"):
        encode_update(start, trained, 5, encoding, np.random.default_rng(0))


def test_updates_need_an_example_and_matching_specs():
    start = {"a": np.zeros(3)}
    encoding = Encoding(quantizer=Quantizer.for_summands(1.0, 2), max_weight=10)
    with pytest.raises(InvalidUpdate, match="at least one example"):
        encode_update(start, {"a": np.ones(3)}, 0, encoding, np.random.default_rng(0))
    with pytest.raises(InvalidUpdate):
        encode_update(start, {"a": np.ones(4)}, 1, encoding, np.random.default_rng(0))


def test_decode_mean_checks_its_input():
    start = {"a": np.zeros(3)}
    encoding = Encoding(quantizer=Quantizer.for_summands(1.0, 2), max_weight=10)
    with pytest.raises(ValueError, match="shape"):
        decode_mean(start, np.zeros(3, np.uint32), 1, encoding)
    with pytest.raises(ValueError, match="no weight"):
        decode_mean(start, np.zeros(4, np.uint32), 1, encoding)
    for bad in (0, MODULUS):
        with pytest.raises(ValueError, match="max_weight"):
            Encoding(quantizer=encoding.quantizer, max_weight=bad)
