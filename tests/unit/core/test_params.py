"""Unit tests for fedops.core.params: specs, digests, checks and weighted averaging."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedops.core.params import (
    ALLOWED_DTYPES,
    InvalidUpdate,
    TensorSpec,
    check_finite,
    check_params_match,
    check_specs_match,
    digest,
    specs_of,
    total_bytes,
    weighted_average,
)


def _model() -> dict[str, np.ndarray]:
    return {
        "conv.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "conv.bias": np.zeros(2, dtype=np.float32),
        "steps": np.array(7, dtype=np.int64),
    }


# --- specs ------------------------------------------------------------------------------------


def test_specs_of_lists_name_dtype_and_shape_in_order():
    assert specs_of(_model()) == [
        TensorSpec(name="conv.weight", dtype="float32", shape=(2, 3)),
        TensorSpec(name="conv.bias", dtype="float32", shape=(2,)),
        TensorSpec(name="steps", dtype="int64", shape=()),
    ]


def test_nbytes_and_total_bytes_are_hand_computed():
    specs = specs_of(_model())
    # 6 * 4 + 2 * 4 + 1 * 8
    assert [s.nbytes for s in specs] == [24, 8, 8]
    assert total_bytes(specs) == 40
    assert TensorSpec(name="e", dtype="float64", shape=(0, 5)).nbytes == 0
    assert TensorSpec(name="b", dtype="bool", shape=(3, 3)).nbytes == 9


def test_nbytes_does_not_overflow_for_huge_declared_shapes():
    spec = TensorSpec(name="w", dtype="float32", shape=(2**32, 2**32))
    assert spec.nbytes == 2**64 * 4


def test_allowed_dtypes_are_exactly_the_plain_numeric_ones():
    assert {
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint32",  # masked SecAgg+ vectors
        "bool",
    } == ALLOWED_DTYPES


# --- check_specs_match ------------------------------------------------------------------------


def _variants() -> list[dict[str, np.ndarray]]:
    m = _model()
    renamed = {("conv.b" if k == "conv.bias" else k): v for k, v in m.items()}
    return [
        m,
        dict(list(m.items())[:2]),
        {**m, "extra": np.zeros(1, dtype=np.float32)},
        renamed,
        {**m, "conv.bias": m["conv.bias"].astype(np.float64)},
        {**m, "conv.weight": m["conv.weight"].reshape(3, 2)},
        dict(reversed(list(m.items()))),
    ]


@pytest.mark.parametrize("got", _variants())
def test_check_params_match_agrees_with_check_specs_match_message_for_message(got):
    """The fast path for matching updates refuses exactly what the spec check refuses."""
    expected = specs_of(_model())
    try:
        check_specs_match(expected, specs_of(got))
        want = None
    except InvalidUpdate as exc:
        want = str(exc)
    if want is None:
        check_params_match(expected, got)
    else:
        with pytest.raises(InvalidUpdate) as caught:
            check_params_match(expected, got)
        assert str(caught.value) == want


def test_check_specs_match_accepts_identical_specs():
    check_specs_match(specs_of(_model()), specs_of(_model()))


def test_check_specs_match_names_wrong_count():
    expected = specs_of(_model())
    with pytest.raises(
        InvalidUpdate, match=r"wrong number of tensors: got 2, the global model has 3"
    ):
        check_specs_match(expected, expected[:2])


def test_check_specs_match_names_wrong_name():
    got = specs_of(_model())
    got[1] = TensorSpec(name="conv.b", dtype="float32", shape=(2,))
    with pytest.raises(
        InvalidUpdate, match=re.escape("tensor name 'conv.b' where the model has 'conv.bias'")
    ):
        check_specs_match(specs_of(_model()), got)


def test_check_specs_match_names_tensor_with_wrong_dtype():
    bad = _model()
    bad["conv.bias"] = bad["conv.bias"].astype(np.float64)
    with pytest.raises(
        InvalidUpdate,
        match=re.escape("tensor 'conv.bias' has dtype float64, the model has float32"),
    ):
        check_specs_match(specs_of(_model()), specs_of(bad))


def test_check_specs_match_names_tensor_with_wrong_shape():
    bad = _model()
    bad["conv.weight"] = bad["conv.weight"].reshape(3, 2)
    with pytest.raises(
        InvalidUpdate,
        match=re.escape("tensor 'conv.weight' has shape (3, 2), the model has (2, 3)"),
    ):
        check_specs_match(specs_of(_model()), specs_of(bad))


def test_invalid_update_is_a_value_error():
    assert issubclass(InvalidUpdate, ValueError)


# --- check_finite -----------------------------------------------------------------------------


def test_check_finite_passes_finite_params():
    check_finite(_model())


def test_check_finite_names_tensor_and_counts_nan_and_inf():
    params = _model()
    params["conv.weight"] = np.array([[np.nan, 1.0, np.inf], [-np.inf, 0.0, np.nan]], np.float32)
    with pytest.raises(
        InvalidUpdate, match=re.escape("tensor 'conv.weight' has 4 non-finite values (NaN/Inf)")
    ):
        check_finite(params)


def test_check_finite_reports_the_first_bad_tensor_in_order():
    params = {
        "a": np.ones(3, np.float32),
        "b": np.array([np.inf], np.float16),
        "c": np.array([np.nan, np.nan], np.float64),
    }
    with pytest.raises(InvalidUpdate, match=re.escape("tensor 'b' has 1 non-finite values")):
        check_finite(params)


def test_check_finite_ignores_integer_and_bool_tensors():
    check_finite({"i": np.array([-1, 2**40], np.int64), "b": np.array([True, False])})


# --- digest -----------------------------------------------------------------------------------


def test_digest_is_stable_for_equal_params():
    assert digest(_model()) == digest(_model())
    assert re.fullmatch(r"blake3:[0-9a-f]{64}", digest(_model()))


def test_digest_changes_when_one_value_changes():
    changed = _model()
    changed["conv.weight"] = changed["conv.weight"].copy()
    changed["conv.weight"][1, 2] = np.nextafter(np.float32(5.0), np.float32(6.0))
    assert digest(changed) != digest(_model())


def test_digest_distinguishes_names_dtypes_shapes_and_order():
    base = {"w": np.zeros(4, np.float32)}
    assert digest(base) != digest({"v": np.zeros(4, np.float32)})
    assert digest(base) != digest({"w": np.zeros(4, np.int32)})  # same bytes, other dtype
    assert digest(base) != digest({"w": np.zeros((2, 2), np.float32)})  # same bytes, other shape
    two = {"a": np.zeros(1), "b": np.ones(1)}
    assert digest(two) != digest({"b": np.ones(1), "a": np.zeros(1)})


def test_digest_of_non_contiguous_view_equals_its_contiguous_copy():
    arr = np.arange(12, dtype=np.float64).reshape(3, 4)
    view = arr.T
    assert not view.flags.c_contiguous
    assert digest({"x": view}) == digest({"x": np.ascontiguousarray(view)})


# --- weighted_average -------------------------------------------------------------------------


def test_weighted_average_hand_computed():
    a = {"w": np.array([0.0, 10.0], np.float32), "b": np.array([1.0], np.float64)}
    b = {"w": np.array([4.0, 2.0], np.float32), "b": np.array([5.0], np.float64)}
    out = weighted_average([(a, 1.0), (b, 3.0)])
    # w: (0*1 + 4*3)/4 = 3, (10*1 + 2*3)/4 = 4; b: (1 + 15)/4 = 4
    np.testing.assert_array_equal(out["w"], np.array([3.0, 4.0], np.float32))
    np.testing.assert_array_equal(out["b"], np.array([4.0]))
    assert out["w"].dtype == np.float32
    assert out["b"].dtype == np.float64
    assert list(out) == ["w", "b"]


def test_weighted_average_rounds_integer_tensors_half_to_even_and_keeps_dtype():
    a = {"n": np.array([1, 2], np.int64)}
    b = {"n": np.array([2, 3], np.int64)}
    equal = weighted_average([(a, 1.0), (b, 1.0)])["n"]  # 1.5, 2.5 -> 2, 2
    np.testing.assert_array_equal(equal, np.array([2, 2]))
    assert equal.dtype == np.int64
    skewed = weighted_average([(a, 3.0), (b, 1.0)])["n"]  # 1.25, 2.25 -> 1, 2
    np.testing.assert_array_equal(skewed, np.array([1, 2]))


def test_weighted_average_ignores_zero_weight_updates():
    a = {"w": np.array([1.0])}
    b = {"w": np.array([1000.0])}
    np.testing.assert_array_equal(weighted_average([(a, 2.0), (b, 0.0)])["w"], [1.0])


def test_weighted_average_refuses_empty_and_non_positive_weights():
    with pytest.raises(ValueError, match="zero updates"):
        weighted_average([])
    with pytest.raises(ValueError, match="positive"):
        weighted_average([({"w": np.ones(1)}, 0.0), ({"w": np.ones(1)}, 0.0)])


_SHAPES = {"a": (3,), "b": (2, 2), "c": ()}


@st.composite
def _updates(draw):
    n = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    values = st.floats(-1e6, 1e6, allow_nan=False, width=32)
    updates = []
    for _ in range(n):
        params = {
            name: draw(hnp.arrays(dtype, shape, elements=values)) for name, shape in _SHAPES.items()
        }
        weight = draw(st.floats(0.0, 1e4, allow_nan=False))
        updates.append((params, weight))
    # at least one clearly positive weight so the total is > 0
    k = draw(st.integers(0, n - 1))
    updates[k] = (updates[k][0], draw(st.floats(1.0, 1e4)))
    perm = draw(st.permutations(range(n)))
    return updates, perm


def _assert_close(got: np.ndarray, want: np.ndarray, scale: float) -> None:
    rtol = 1e-6 if got.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-9 * scale + 1e-30)


@settings(max_examples=150, deadline=None)
@given(_updates())
def test_weighted_average_equals_np_average_and_ignores_order(case):
    updates, perm = case
    out = weighted_average(updates)
    permuted = weighted_average([updates[i] for i in perm])
    weights = np.array([w for _, w in updates])
    for name in _SHAPES:
        stacked = np.stack([np.asarray(p[name], np.float64) for p, _ in updates])
        scale = float(np.abs(stacked).max(initial=1.0))
        want = np.average(stacked, axis=0, weights=weights)
        assert out[name].dtype == updates[0][0][name].dtype
        assert out[name].shape == _SHAPES[name]
        _assert_close(out[name], want, scale)
        _assert_close(permuted[name], out[name].astype(np.float64), scale)


def test_dtype_name_is_numpys_name_of_every_allowed_dtype():
    from fedops.core.params import ALLOWED_DTYPES, dtype_name

    for name in sorted(ALLOWED_DTYPES):
        assert dtype_name(np.dtype(name)) == name
        assert dtype_name(np.dtype(name)) == name  # remembered, still the same
    assert dtype_name(np.dtype(">f4")) == np.dtype(">f4").name
