"""Byzantine-robust aggregation: trimmed mean, median, Krum and multi-Krum.

For consortia where a member may be faulty or malicious (a *Byzantine*
client: it may send any update at all), FedAvg is fragile: one client can
move the mean arbitrarily far. These rules bound the influence of up to
``f`` such clients, under the assumptions each docstring states.

All four aggregate the clients' *parameters* (``FitResult.params``, the
trained models), not their differences from the global model; since every
client starts from the same global model ``w``, a rule that is
translation-equivariant (all of these are) gives the same result either way.
They are **unweighted**: ``num_examples`` is reported by the client itself, so
a Byzantine client could claim a huge count to dominate any weighting. For the
same reason their evaluation summary, and the round's ``train_loss``, are the
unweighted median across sites of each metric
(:func:`~fedops.core.results.median_metrics`), not a weighted mean.

Dtypes and shapes are kept. Statistics are computed in float64 and cast back;
integer and boolean tensors (e.g. BatchNorm's ``num_batches_tracked``) are
rounded to the nearest integer first, as in :func:`fedops.core.params.weighted_average`.

References:
    Yin, Chen, Ramchandran, Bartlett. "Byzantine-Robust Distributed Learning:
    Towards Optimal Statistical Rates", ICML 2018 (trimmed mean, median).
    Blanchard, El Mhamdi, Guerraoui, Stainer. "Machine Learning with
    Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017 (Krum,
    multi-Krum).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedops.core.params import Params, weighted_average
from fedops.core.results import (
    AggregationRefused,
    EvaluateResult,
    FitResult,
    StageResult,
    median_metrics,
)

#: the names under which :data:`fedops.core.strategies.STRATEGIES` registers these rules
ROBUST_STRATEGIES = ("trimmed_mean", "median", "krum", "multi_krum")


def _stack(results: Sequence[FitResult], name: str) -> np.ndarray:
    """Tensor ``name`` of every result, stacked along a new first axis, as float64."""
    try:
        arrays = [np.asarray(r.params[name], dtype=np.float64) for r in results]
    except KeyError:
        missing = next(r.node_id for r in results if name not in r.params)
        raise ValueError(f"result of {missing!r} has no tensor {name!r}") from None
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"tensor {name!r} has different shapes across results: {sorted(shapes)}")
    return np.stack(arrays)


def _cast_like(values: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``values`` (float64) in the dtype of ``ref``; integer kinds are rounded first."""
    rounded = np.rint(values) if ref.dtype.kind in "iub" else values
    return np.asarray(rounded.astype(ref.dtype))


def _per_coordinate(
    results: Sequence[FitResult], reduce: Callable[[np.ndarray], np.ndarray]
) -> Params:
    """Apply ``reduce`` (an ``(n, *shape) -> shape`` statistic) to every tensor."""
    first = results[0].params
    return {name: _cast_like(reduce(_stack(results, name)), ref) for name, ref in first.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Robust:
    """What every robust rule shares: no client hyperparameters, and training and
    evaluation summaries that no site's claimed count can steer (medians across sites)."""

    name: str = "robust"

    def fit_config(self, server_round: int) -> dict[str, float]:
        return {}

    def aggregate_evaluate(
        self, server_round: int, results: Sequence[EvaluateResult]
    ) -> dict[str, float]:
        # only reported, never fed back into the model; yet one site's claimed count
        # must not set the run's reported accuracy: unweighted, per site
        return median_metrics(results)

    def aggregate_fit_metrics(
        self, server_round: int, results: Sequence[FitResult | StageResult]
    ) -> dict[str, float]:
        # replaces the example-weighted mean train_loss (see fit_metrics), which one
        # site claiming 2**40 examples would set: the median across sites instead
        median = median_metrics(results)
        return {"train_loss": median["train_loss"]} if "train_loss" in median else {}


def _median(stacked: np.ndarray) -> np.ndarray:
    return np.asarray(np.median(stacked, axis=0))


@dataclass(frozen=True, slots=True, kw_only=True)
class TrimmedMean(_Robust):
    """Coordinate-wise β-trimmed mean (Yin et al. 2018).

    With ``n`` results and ``k = floor(beta * n)``: for every coordinate, sort
    the ``n`` values, drop the ``k`` largest and the ``k`` smallest, and take
    the (unweighted) mean of the remaining ``n - 2k``.

    How ``f`` enters: the rule tolerates ``f`` Byzantine clients per round when
    every coordinate drops at least that many values at each end, i.e.
    ``floor(beta * n) >= f`` (Yin et al.'s bound assumes ``beta >= f / n``). With
    ``beta = 0`` it is the plain unweighted mean; ``beta`` must be below 0.5
    so at least one value survives. With ``beta > 0`` but too few results to drop
    one value at each end (``n < min_results()``, e.g. after dropouts) it raises
    :class:`~fedops.core.results.AggregationRefused` rather than return the plain
    mean, which one site could set to anything.

    Example:
        >>> r = [FitResult(node_id=str(v), params={"w": np.array([v])}, num_examples=1)
        ...      for v in (1.0, 2.0, 3.0, 100.0)]
        >>> TrimmedMean(beta=0.25).aggregate_fit(1, {"w": np.array([0.0])}, r)["w"]
        array([2.5])
    """

    options: ClassVar[Mapping[str, str]] = {"trim_fraction": "beta"}
    name: str = "trimmed_mean"
    beta: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.beta < 0.5:
            raise ValueError(f"TrimmedMean beta must be in [0, 0.5), got {self.beta}")

    def trimmed(self, n: int) -> int:
        """How many values are dropped at *each* end of every coordinate with ``n`` results."""
        return math.floor(self.beta * n)

    def min_results(self) -> int:
        """The fewest results that drop at least one value at each end (1 for ``beta = 0``)."""
        if self.beta == 0:
            return 1
        n = math.ceil(1 / self.beta)
        while self.trimmed(n) < 1:  # 1 / beta rounded down in floating point
            n += 1
        return n

    def aggregate_fit(
        self, server_round: int, current: Params, results: Sequence[FitResult]
    ) -> Params:
        if not results:
            return current
        n = len(results)
        k = self.trimmed(n)
        if k == 0 and self.beta > 0:
            raise AggregationRefused(
                f"{self.name} with trim_fraction={self.beta:g} drops no value of {n} "
                f"result(s) (floor({self.beta:g} x {n}) = 0): untrimmed, one site sets the "
                f"mean; it needs at least {self.min_results()} results"
            )

        def trimmed_mean(stacked: np.ndarray) -> np.ndarray:
            return np.asarray(np.sort(stacked, axis=0)[k : n - k].mean(axis=0))

        return _per_coordinate(results, trimmed_mean)


@dataclass(frozen=True, slots=True, kw_only=True)
class Median(_Robust):
    """Coordinate-wise median (Yin et al. 2018).

    Every coordinate of the result is the median of that coordinate over the
    ``n`` results (the mean of the two middle values when ``n`` is even).

    How ``f`` enters: no parameter; the median of a coordinate stays between
    honest values as long as the Byzantine clients are a minority,
    ``f < n / 2`` (Yin et al.'s analysis assumes ``f / n`` bounded below 1/2).

    Example:
        >>> r = [FitResult(node_id=str(v), params={"w": np.array([v])}, num_examples=1)
        ...      for v in (1.0, 2.0, 100.0)]
        >>> Median().aggregate_fit(1, {"w": np.array([0.0])}, r)["w"]
        array([2.])
    """

    name: str = "median"

    def aggregate_fit(
        self, server_round: int, current: Params, results: Sequence[FitResult]
    ) -> Params:
        if not results:
            return current
        return _per_coordinate(results, _median)


def _flatten(results: Sequence[FitResult]) -> np.ndarray:
    """One float64 row per result: its floating-point tensors, concatenated in model order.

    Integer and boolean tensors (counters such as ``num_batches_tracked``) are
    left out of the distances: they are not trained, and a counter that grows
    with a site's number of batches would otherwise dominate the geometry.
    A model with no floating-point tensor at all is compared on all of them.
    """
    names = [name for name, arr in results[0].params.items() if arr.dtype.kind in "fc"]
    if not names:
        names = list(results[0].params)
    columns = [_stack(results, name).reshape(len(results), -1) for name in names]
    if not columns:
        return np.zeros((len(results), 0))
    return np.concatenate(columns, axis=1)


def pairwise_sq_distances(vectors: np.ndarray) -> np.ndarray:
    """``D[i, j] = ||x_i - x_j||^2`` for the rows of ``vectors`` (float64, ``D[i, i] = 0``).

    Computed through the Gram matrix (one BLAS product, memory of ``vectors``
    only) after subtracting the coordinate-wise median, which keeps the
    cancellation error small even when one row is far from all others.
    """
    centred = vectors - np.median(vectors, axis=0) if len(vectors) else vectors
    gram = centred @ centred.T
    sq = np.diag(gram)
    dist = sq[:, None] + sq[None, :] - 2.0 * gram
    np.fill_diagonal(dist, 0.0)
    return np.asarray(np.maximum(dist, 0.0))


def krum_scores(sq_dist: np.ndarray, byzantine: int) -> np.ndarray:
    """Krum's score of every row: the sum of its ``n - f - 2`` smallest distances to others."""
    n = sq_dist.shape[0]
    k = n - byzantine - 2
    others = np.sort(sq_dist + np.diag(np.full(n, np.inf)), axis=1)[:, :k]
    return np.asarray(others.sum(axis=1))


@dataclass(frozen=True, slots=True, kw_only=True)
class Krum(_Robust):
    """Krum and multi-Krum (Blanchard et al. 2017).

    With ``n`` results ``V_1 .. V_n`` (each client's tensors flattened into
    one vector) and at most ``f`` Byzantine clients (``byzantine``), the score
    of ``V_i`` is ``sum ||V_i - V_j||^2`` over the ``n - f - 2`` vectors ``V_j``
    (``j != i``) closest to ``V_i``. Krum (``select=1``) returns the model with
    the lowest score; multi-Krum (``select=m > 1``) returns the unweighted mean
    of the ``m`` lowest-scoring models. ``select=None`` takes ``m = n - f``
    (the most models that can all be honest). Ties go to the earlier result.

    How ``f`` enters: the score looks at the ``n - f - 2`` nearest neighbours
    and the guarantee needs ``n > 2f + 2``; a round with fewer results (or fewer
    than ``select``) raises :class:`~fedops.core.results.AggregationRefused` (a
    :class:`ValueError`) naming ``n`` and ``f``.

    Distances use the floating-point tensors only (see :func:`_flatten`);
    every tensor of the selected models, integers included, is returned
    (averaged and rounded for ``m > 1``). Costs ``O(n^2 d)`` for ``d`` parameters.
    """

    options: ClassVar[Mapping[str, str]] = {"byzantine": "byzantine"}
    name: str = "krum"
    byzantine: int = 1
    select: int | None = 1

    def __post_init__(self) -> None:
        if self.byzantine < 0:
            raise ValueError(f"Krum byzantine (f) must be >= 0, got {self.byzantine}")
        if self.select is not None and self.select < 1:
            raise ValueError(f"Krum select (m) must be >= 1, got {self.select}")

    def min_results(self) -> int:
        """The fewest results a round needs: ``2f + 3`` (``n > 2f + 2``)."""
        return 2 * self.byzantine + 3

    def selected(self, results: Sequence[FitResult]) -> list[int]:
        """Indices of the results Krum keeps, best score first."""
        n, f = len(results), self.byzantine
        if n <= 2 * f + 2:
            raise AggregationRefused(
                f"{self.name} with byzantine f={f} needs n > 2f + 2 = {2 * f + 2} results, "
                f"got n={n}; use fewer byzantine or more clients per round"
            )
        m = n - f if self.select is None else self.select
        if m > n:
            raise AggregationRefused(f"{self.name} cannot select m={m} of only n={n} results")
        scores = krum_scores(pairwise_sq_distances(_flatten(results)), f)
        order = np.argsort(scores, kind="stable")
        return [int(i) for i in order[:m]]

    def aggregate_fit(
        self, server_round: int, current: Params, results: Sequence[FitResult]
    ) -> Params:
        if not results:
            return current
        chosen = [results[i] for i in self.selected(results)]
        if len(chosen) == 1:
            return {name: np.array(arr, copy=True) for name, arr in chosen[0].params.items()}
        return weighted_average([(r.params, 1.0) for r in chosen])


@dataclass(frozen=True, slots=True, kw_only=True)
class MultiKrum(Krum):
    """Multi-Krum: :class:`Krum` averaging the ``select`` best models (default ``n - f``)."""

    options: ClassVar[Mapping[str, str]] = {"byzantine": "byzantine", "select": "select"}
    name: str = "multi_krum"
    select: int | None = None
