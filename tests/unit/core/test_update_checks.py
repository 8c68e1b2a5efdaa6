"""The coordinator's per-update checks: ``check_reported`` against a copy of its earlier
implementation (it returns early when every metric is finite; it must refuse exactly what
the old one refused, with byte-identical messages and the same exceptions), and edge cases
of ``check_params_match`` and ``check_finite``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.params import (
    InvalidUpdate,
    check_finite,
    check_params_match,
    specs_of,
)
from fedops.core.results import MAX_NUM_EXAMPLES, check_reported

# --- the oracle: check_reported before its early return, verbatim ----------------------


def old_check_reported(*, num_examples: int, metrics: Mapping[str, float], training: bool) -> None:
    low = 1 if training else 0
    if not low <= num_examples <= MAX_NUM_EXAMPLES:
        raise InvalidUpdate(
            f"num_examples {num_examples} is out of range [{low}, {MAX_NUM_EXAMPLES}]"
        )
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if bad:
        raise InvalidUpdate(f"metrics {bad} are not finite")


def outcome(check: Callable[..., None], *args: Any, **kwargs: Any) -> tuple[str, str]:
    """What a check did: ``("ok", "")`` or the exception's type and exact message."""
    try:
        check(*args, **kwargs)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return "ok", ""


# --- check_params_match ---------------------------------------------------------------------


def test_params_match_accepts_a_big_endian_twin_as_before() -> None:
    model = {"w": np.zeros(3, dtype="<f4")}
    twin = {"w": np.zeros(3, dtype=">f4")}  # dtype.name is float32 either way
    assert outcome(check_params_match, specs_of(model), twin) == ("ok", "")


# --- check_finite --------------------------------------------------------------------------


def test_finite_counts_every_bad_value_of_the_first_bad_tensor() -> None:
    huge = np.full(4, np.finfo(np.float16).max, dtype=np.float16)  # its sum overflows
    bad = np.array([1.0, np.nan, np.inf, -np.inf], dtype=np.float32)
    params = {"huge": huge, "empty": np.zeros(0, np.float32), "bad": bad, "later": bad}
    expected = ("InvalidUpdate", "tensor 'bad' has 3 non-finite values (NaN/Inf)")
    assert outcome(check_finite, params) == expected


# --- check_reported ------------------------------------------------------------------------

odd_keys = st.one_of(st.text(max_size=3), st.integers(-2, 2), st.tuples(st.integers(0, 1)))
odd_values = st.one_of(
    st.floats(),  # NaN and ±Inf included
    st.integers(-(10**400), 10**400),  # too large for a float: OverflowError
    st.booleans(),
    st.sampled_from([np.float32("nan"), np.float64("inf"), np.int64(3), "1.0", None, b""]),
)
counts = st.one_of(  # mostly in range, so that the metrics are looked at
    st.integers(1, 5),
    st.integers(0, 5),
    st.integers(1, 5),
    st.sampled_from([-1, MAX_NUM_EXAMPLES, MAX_NUM_EXAMPLES + 1, 10**30, 2.5, math.nan]),
)


@settings(max_examples=600, deadline=None)
@given(
    num_examples=counts,
    metrics=st.dictionaries(odd_keys, odd_values, max_size=5),
    training=st.booleans(),
    proxy=st.booleans(),
)
def test_reported_refuses_what_the_old_check_refused(
    num_examples: Any, metrics: dict[Any, Any], training: bool, proxy: bool
) -> None:
    given_metrics: Mapping[Any, Any] = MappingProxyType(metrics) if proxy else metrics
    kwargs = {"num_examples": num_examples, "metrics": given_metrics, "training": training}
    assert outcome(check_reported, **kwargs) == outcome(old_check_reported, **kwargs)


def test_reported_names_every_bad_metric_sorted() -> None:
    metrics = {"z": math.inf, "a": 1.0, "m": math.nan, "b": -math.inf}
    expected = ("InvalidUpdate", "metrics ['b', 'm', 'z'] are not finite")
    kwargs = {"num_examples": 3, "metrics": metrics, "training": True}
    assert outcome(check_reported, **kwargs) == outcome(old_check_reported, **kwargs) == expected
