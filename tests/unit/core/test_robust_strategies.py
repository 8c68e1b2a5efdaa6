"""Unit tests for fedops.core.strategies.robust: trimmed mean, median, Krum, multi-Krum.

Each rule is checked against a plain numpy / pure-Python reference on random
data, for kept dtypes and shapes, for Krum's ``n > 2f + 2`` precondition, and
for what it is for: one scaled update moves FedAvg far, not these.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedops.core.params import Params
from fedops.core.results import AggregationRefused, EvaluateResult, FitResult
from fedops.core.strategies import (
    STRATEGIES,
    FedAvg,
    Krum,
    Median,
    MultiKrum,
    TrimmedMean,
)
from fedops.core.strategies.robust import krum_scores, pairwise_sq_distances
from fedops.runtime.run import make_strategy
from fedops.runtime.schema import StrategyConfig


def _results(params: list[Params], num_examples: list[int] | None = None) -> list[FitResult]:
    counts = num_examples or [1] * len(params)
    return [
        FitResult(node_id=f"n{i}", params=p, num_examples=c)
        for i, (p, c) in enumerate(zip(params, counts, strict=True))
    ]


def _split(stacked: np.ndarray) -> list[FitResult]:
    """Row i of ``stacked`` becomes client i's tensor ``w``."""
    return _results([{"w": row} for row in stacked])


# values a model could hold; bounded so float64 sums stay exact enough to compare
_values = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


def _stacks(min_n: int = 1, max_n: int = 11) -> st.SearchStrategy[np.ndarray]:
    return st.tuples(
        st.integers(min_n, max_n), hnp.array_shapes(min_dims=0, max_dims=2, max_side=4)
    ).flatmap(lambda ns: hnp.arrays(np.float32, (ns[0], *ns[1]), elements=_values))


# ---- references -----------------------------------------------------------------


def _reference_trimmed_mean(stacked: np.ndarray, beta: float) -> np.ndarray:
    n = stacked.shape[0]
    k = math.floor(beta * n)
    columns = stacked.reshape(n, -1).astype(np.float64).T
    out = [float(np.mean(sorted(col)[k : n - k])) for col in columns]
    return np.array(out).reshape(stacked.shape[1:])


def _reference_krum_scores(vectors: list[np.ndarray], f: int) -> list[float]:
    n = len(vectors)
    scores = []
    for i in range(n):
        dists = sorted(float(np.sum((vectors[i] - vectors[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(dists[: n - f - 2]))
    return scores


# ---- coordinate-wise rules against numpy -------------------------------------------


@settings(max_examples=60, deadline=None)
@given(_stacks())
def test_median_is_numpy_median_per_coordinate(stacked: np.ndarray):
    out = Median().aggregate_fit(1, {"w": stacked[0]}, _split(stacked))["w"]
    expected = np.median(stacked.astype(np.float64), axis=0).astype(np.float32)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32 and out.shape == stacked.shape[1:]


@settings(max_examples=60, deadline=None)
@given(_stacks(), st.floats(0.0, 0.49))
def test_trimmed_mean_is_the_sorted_trim_mean(stacked: np.ndarray, beta: float):
    rule = TrimmedMean(beta=beta)
    if beta > 0 and rule.trimmed(len(stacked)) == 0:  # would trim nothing: refused
        with pytest.raises(AggregationRefused):
            rule.aggregate_fit(1, {"w": stacked[0]}, _split(stacked))
        return
    out = rule.aggregate_fit(1, {"w": stacked[0]}, _split(stacked))["w"]
    expected = _reference_trimmed_mean(stacked, beta)
    np.testing.assert_allclose(out, expected.astype(np.float32), rtol=1e-6, atol=1e-4)
    assert out.dtype == np.float32 and out.shape == stacked.shape[1:]


def test_trimmed_mean_drops_floor_beta_n_at_each_end_hand_computed():
    values = np.array([[-50.0], [1.0], [2.0], [3.0], [4.0], [90.0]])
    # n = 6, beta = 0.2 -> floor(1.2) = 1 dropped at each end: mean(1, 2, 3, 4) = 2.5
    out = TrimmedMean(beta=0.2).aggregate_fit(1, {"w": values[0]}, _split(values))
    np.testing.assert_array_equal(out["w"], [2.5])
    # beta = 0 is the unweighted mean, whatever num_examples say
    results = _results([{"w": v} for v in values], num_examples=[100, 1, 1, 1, 1, 1])
    np.testing.assert_allclose(TrimmedMean(beta=0.0).aggregate_fit(1, {}, results)["w"], [50 / 6])


def test_robust_rules_ignore_claimed_num_examples():
    values = np.array([[0.0], [1.0], [2.0], [1000.0], [1.5]])
    honest = _results([{"w": v} for v in values])
    boasting = _results([{"w": v} for v in values], num_examples=[1, 1, 1, 10**9, 1])
    for rule in (Median(), TrimmedMean(beta=0.2), Krum(byzantine=1), MultiKrum(byzantine=1)):
        np.testing.assert_array_equal(
            rule.aggregate_fit(1, {}, honest)["w"], rule.aggregate_fit(1, {}, boasting)["w"]
        )


# ---- Krum against a brute force -------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    _stacks(min_n=3, max_n=10),
    st.integers(0, 3),
    st.one_of(st.none(), st.integers(1, 10)),
)
def test_krum_selects_the_best_brute_force_scores(stacked: np.ndarray, f: int, select: int | None):
    n = stacked.shape[0]
    f = min(f, (n - 3) // 2)  # n > 2f + 2
    m = n - f if select is None else min(select, n)
    results = _split(stacked)
    rule = Krum(byzantine=f, select=m if select is not None else None)
    vectors = [row.astype(np.float64).ravel() for row in stacked]
    brute = _reference_krum_scores(vectors, f)
    best = sorted(brute)[:m]
    chosen = rule.selected(results)
    assert len(chosen) == m == len(set(chosen))
    scale = max(1.0, max(brute))
    np.testing.assert_allclose(sorted(brute[i] for i in chosen), best, rtol=1e-9, atol=1e-9 * scale)
    out = rule.aggregate_fit(1, {"w": stacked[0]}, results)["w"]
    assert out.dtype == np.float32 and out.shape == stacked.shape[1:]
    expected = np.mean([stacked[i].astype(np.float64) for i in chosen], axis=0)
    np.testing.assert_allclose(out, expected.astype(np.float32), rtol=1e-6, atol=1e-3)
    order = sorted(range(n), key=lambda i: brute[i])
    if m < n and brute[order[m]] - brute[order[m - 1]] > 1e-6 * scale:  # no near-tie at the cut
        assert sorted(chosen) == sorted(order[:m])


def test_krum_distances_and_scores_hand_computed():
    vectors = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [10.0, 10.0], [0.5, 0.5]])
    dist = pairwise_sq_distances(vectors)
    assert dist[0, 1] == pytest.approx(1.0) and dist[2, 3] == pytest.approx(164.0)
    assert dist[1, 4] == pytest.approx(0.5) and np.all(np.diag(dist) == 0)
    # n = 5, f = 1: each score sums the n - f - 2 = 2 smallest distances to the others
    scores = krum_scores(dist, 1)
    assert scores[0] == pytest.approx(0.5 + 1.0)  # to [0.5,0.5] and [1,0]
    assert scores[3] == pytest.approx(164.0 + 180.5)  # to [0,2] and [0.5,0.5]
    results = _split(vectors)
    assert Krum(byzantine=1).selected(results) == [4]  # score 0.5 + 0.5 = 1.0
    np.testing.assert_array_equal(Krum(byzantine=1).aggregate_fit(1, {}, results)["w"], [0.5, 0.5])
    two = MultiKrum(byzantine=1, select=2).aggregate_fit(1, {}, results)["w"]
    np.testing.assert_allclose(two, [0.25, 0.25])  # [0.5, 0.5] and [0, 0]


@pytest.mark.parametrize(("f", "n"), [(0, 2), (1, 4), (2, 6), (3, 8)])
def test_krum_needs_more_than_2f_plus_2_results(f: int, n: int):
    results = _split(np.arange(n, dtype=np.float64).reshape(n, 1))
    for rule in (Krum(byzantine=f), MultiKrum(byzantine=f)):
        with pytest.raises(ValueError, match=rf"byzantine f={f} needs n > 2f \+ 2 = {n}.*n={n}"):
            rule.aggregate_fit(1, {}, results)
    more = _split(np.arange(n + 1, dtype=np.float64).reshape(n + 1, 1))
    Krum(byzantine=f).aggregate_fit(1, {}, more)  # n = 2f + 3 is enough


def test_multi_krum_cannot_select_more_than_it_has():
    results = _split(np.zeros((5, 1)))
    with pytest.raises(ValueError, match="select m=6 of only n=5"):
        Krum(byzantine=1, select=6).aggregate_fit(1, {}, results)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: TrimmedMean(beta=0.5), r"beta must be in \[0, 0.5\)"),
        (lambda: TrimmedMean(beta=-0.1), r"beta must be in \[0, 0.5\)"),
        (lambda: Krum(byzantine=-1), "byzantine"),
        (lambda: MultiKrum(select=0), "select"),
    ],
)
def test_constructors_refuse_bad_parameters(make: Any, match: str):
    with pytest.raises(ValueError, match=match):
        make()


# ---- dtypes, shapes, integer tensors ------------------------------------------------


def _model(rng: np.random.Generator, count: int) -> Params:
    return {
        "conv.weight": rng.normal(size=(2, 3, 2)).astype(np.float32),
        "bias": rng.normal(size=3).astype(np.float64),
        "half": rng.normal(size=2).astype(np.float16),
        "bn.num_batches_tracked": np.array(count, dtype=np.int64),
        "counts": np.array([count, 2 * count], dtype=np.int32),
        "mask": np.array([True, count % 2 == 0]),
    }


ALL_RULES = [
    TrimmedMean(beta=0.2),
    Median(),
    Krum(byzantine=1),
    MultiKrum(byzantine=1),
    MultiKrum(byzantine=1, select=2),
]


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: f"{r.name}-{getattr(r, 'select', '')}")
def test_dtypes_shapes_and_order_are_kept_with_integer_tensors(rule: Any):
    rng = np.random.default_rng(0)
    models = [_model(rng, count) for count in (10, 13, 1000, 11, 12, 57)]
    out = rule.aggregate_fit(3, models[0], _results(models))
    assert list(out) == list(models[0])
    for name, ref in models[0].items():
        assert out[name].dtype == ref.dtype, name
        assert out[name].shape == ref.shape, name
        assert np.all(np.isfinite(out[name].astype(np.float64)))
    # integer tensors stay integers within the clients' range
    assert 10 <= int(out["bn.num_batches_tracked"]) <= 1000


def test_integer_counters_are_rounded_like_fedavg():
    values = [np.array(v, dtype=np.int64) for v in (1, 2, 4, 7)]
    out = Median().aggregate_fit(1, {}, _results([{"n": v} for v in values]))["n"]
    assert out.dtype == np.int64 and int(out) == 3  # median 3.0
    out = TrimmedMean(beta=0.25).aggregate_fit(1, {}, _results([{"n": v} for v in values]))["n"]
    assert int(out) == 3  # mean(2, 4) = 3


def test_krum_distances_ignore_integer_counters():
    # the honest sites ran different numbers of batches; only the float weights matter
    rng = np.random.default_rng(1)
    honest = [
        {"w": (1.0 + 0.01 * rng.normal(size=4)).astype(np.float32), "t": np.array(c, np.int64)}
        for c in (5, 500, 50000, 7, 9)
    ]
    attacker = {"w": np.full(4, -9.0, np.float32), "t": np.array(6, np.int64)}
    results = _results([*honest, attacker])
    assert 5 not in Krum(byzantine=1).selected(results)
    assert 5 not in MultiKrum(byzantine=1).selected(results)


def test_without_results_the_model_is_unchanged():
    current = {"w": np.ones(2)}
    for rule in ALL_RULES:
        assert rule.aggregate_fit(1, current, []) is current


def test_client_facing_parts_take_no_claimed_count_into_account():
    # the evaluation summary is the unweighted median across sites: a site's own
    # claimed count (here 2**40) cannot set the run's reported accuracy
    evals = [
        EvaluateResult(node_id="a", num_examples=1, metrics={"accuracy": 0.9}),
        EvaluateResult(node_id="b", num_examples=1, metrics={"accuracy": 0.8}),
        EvaluateResult(node_id="c", num_examples=1 << 40, metrics={"accuracy": 0.0}),
    ]
    for rule in ALL_RULES:
        assert rule.fit_config(1) == {}
        assert rule.aggregate_evaluate(1, evals) == {"accuracy": 0.8}


# ---- registry and make_strategy -------------------------------------------------------


def _made(name: str, **options: object) -> object:
    return make_strategy(StrategyConfig(name=name, **options))  # type: ignore[arg-type]


def test_registered_names_and_make_strategy():
    for name in ("trimmed_mean", "median", "krum", "multi_krum"):
        assert STRATEGIES[name]().name == name
        assert _made(name).name == name  # type: ignore[attr-defined]
    assert _made("trimmed_mean", trim_fraction=0.3) == TrimmedMean(beta=0.3)
    assert _made("krum", byzantine=2) == Krum(byzantine=2, select=1)
    assert _made("multi_krum", byzantine=2, select=4) == MultiKrum(byzantine=2, select=4)
    assert _made("multi_krum").select is None  # type: ignore[attr-defined]  # n - f
    assert _made("fedavg", mu=5.0, byzantine=3) == FedAvg()  # options it does not read
    assert _made("krum", select=3) == Krum(byzantine=1, select=1)  # krum keeps one model


# ---- robustness: one scaled update ----------------------------------------------------


@pytest.mark.parametrize("scale", [-10.0, 100.0], ids=["sign-flip-x10", "boost-x100"])
def test_one_scaled_update_moves_fedavg_but_not_the_robust_rules(scale: float):
    rng = np.random.default_rng(42)
    d = 200
    global_w = rng.normal(size=d)
    direction = rng.normal(size=d)  # the update the honest sites agree on, roughly
    honest = [global_w + direction + 0.1 * rng.normal(size=d) for _ in range(9)]
    attacker = global_w + scale * (honest[0] - global_w)
    params = [{"w": w.astype(np.float32)} for w in (*honest, attacker)]
    results = _results(params, num_examples=[50] * 10)
    target = np.mean(honest, axis=0)
    size = float(np.linalg.norm(direction))

    def error(rule: Any) -> float:
        out = rule.aggregate_fit(1, {"w": global_w.astype(np.float32)}, results)["w"]
        return float(np.linalg.norm(out.astype(np.float64) - target)) / size

    assert error(FedAvg()) > 0.9  # off by about |scale - 1| / 10 of the update
    for rule in ALL_RULES:
        assert error(rule) < 0.1, rule
    assert error(MultiKrum(byzantine=1)) < 1e-6  # exactly the 9 honest models
