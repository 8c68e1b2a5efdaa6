"""Drift between a reference profile and current data, from histograms on shared bin edges.

The coordinator distributes bin edges (from a reference profile), every site
counts its data into them, and only the counts leave the site. Because all
statistics below are functions of counts, the pooled drift of a federation is
simply the drift of the summed histograms.

* PSI (population stability index): ``Σ (a - e)·ln(a / e)`` over bin
  proportions; < 0.1 no drift, 0.1-0.25 moderate, > 0.25 significant.
* Jensen-Shannon distance (base 2, in [0, 1]); alert above 0.1.
* Two-sample Kolmogorov-Smirnov statistic ``max |F_ref - F_cur|`` over the
  bin edges (exact when every distinct value has its own bin, a lower bound
  otherwise) and its asymptotic p-value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedops.core.monitoring.rows import SMOOTHING, RowDrift, bin_index, drift_rows

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
JS_ALERT = 0.1

Counts = NDArray[np.int64]


def bin_edges(reference: NDArray[np.floating], bins: int = 10) -> NDArray[np.float64]:
    """Quantile edges of ``reference`` (unique), open at both ends: ``[-inf, …, inf]``."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    values = np.asarray(reference, np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("the reference has no finite values")
    inner = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    edges: NDArray[np.float64] = np.concatenate([[-np.inf], inner, [np.inf]])
    return edges


def histogram(values: NDArray[np.floating], edges: NDArray[np.float64]) -> Counts:
    """Counts of ``values`` per bin ``[edges[i], edges[i+1])`` (the last bin is closed)."""
    idx = bin_index(np.asarray(values, np.float64).ravel(), edges)
    return np.bincount(idx, minlength=len(edges) - 1).astype(np.int64)


def _proportions(counts: Counts) -> NDArray[np.float64]:
    c = np.asarray(counts, np.float64)
    total = c.sum()
    if total <= 0:
        raise ValueError("a histogram with no observations has no distribution")
    out: NDArray[np.float64] = c / total
    return out


def psi(reference: Counts, current: Counts) -> float:
    """Population stability index between two histograms on the same bins."""
    _same_bins(reference, current)
    e = _proportions(reference) + SMOOTHING
    a = _proportions(current) + SMOOTHING
    return float(np.sum((a - e) * np.log(a / e)))


def psi_level(value: float) -> str:
    if value < PSI_MODERATE:
        return "none"
    return "moderate" if value <= PSI_SIGNIFICANT else "significant"


def js_distance(reference: Counts, current: Counts) -> float:
    """Jensen-Shannon distance (square root of the divergence, base 2)."""
    _same_bins(reference, current)
    p, q = _proportions(reference), _proportions(current)
    m = (p + q) / 2

    def kl(x: NDArray[np.float64]) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def ks(reference: Counts, current: Counts) -> tuple[float, float]:
    """``(statistic, asymptotic p-value)`` of the two-sample KS test from histograms."""
    _same_bins(reference, current)
    n, m = int(np.sum(reference)), int(np.sum(current))
    cdf_r = np.cumsum(reference) / max(n, 1)
    cdf_c = np.cumsum(current) / max(m, 1)
    d = float(np.max(np.abs(cdf_r - cdf_c)))
    if n == 0 or m == 0 or d == 0.0:
        return d, 1.0  # identical distributions: Kolmogorov's survival function at 0 is 1
    # Imported here: scipy.stats costs ~60 MB, paid only by runs that monitor drift.
    from scipy.stats import kstwo

    # as scipy's ks_2samp(method="asymp"): Kolmogorov's distribution at the effective size
    p = float(kstwo.sf(d, max(1, round(n * m / (n + m)))))
    return d, min(1.0, max(0.0, p))


def _same_bins(a: Counts, b: Counts) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"histograms on different bins: {np.shape(a)} vs {np.shape(b)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class FeatureDrift:
    feature: str
    psi: float
    level: str
    js: float
    ks: float
    ks_pvalue: float

    @property
    def alert(self) -> bool:
        return self.level == "significant" or self.js > JS_ALERT


def feature_drift(name: str, reference: Counts, current: Counts) -> FeatureDrift:
    if np.array_equal(reference, current) and np.sum(reference) > 0:
        # no drift, and exactly what the statistics below give for equal counts; a site
        # whose data never changes reports this for every feature, every round, and the
        # statistics (a KS p-value above all) cost a federation's monitoring most of its time
        return FeatureDrift(feature=name, psi=0.0, level="none", js=0.0, ks=0.0, ks_pvalue=1.0)
    value = psi(reference, current)
    statistic, pvalue = ks(reference, current)
    return FeatureDrift(
        feature=name,
        psi=value,
        level=psi_level(value),
        js=js_distance(reference, current),
        ks=statistic,
        ks_pvalue=pvalue,
    )


def drift_report(
    names: Sequence[str], reference: Sequence[Counts], current: Sequence[Counts]
) -> list[FeatureDrift]:
    """One :class:`FeatureDrift` per feature (or per label / prediction class histogram).

    Equal to :func:`feature_drift` of each feature (``rows.drift_rows``' property tests),
    computed for all features with the same number of bins at once."""
    if not len(names) == len(reference) == len(current):
        raise ValueError("one name, one reference and one current histogram per feature")
    for r, c in zip(reference, current, strict=True):
        _same_bins(r, c)
    by_bins: dict[int, list[int]] = {}
    for j, r in enumerate(reference):
        by_bins.setdefault(int(np.size(r)), []).append(j)
    out: list[FeatureDrift | None] = [None] * len(names)
    for group in by_bins.values():
        stats = drift_rows([reference[j] for j in group], [current[j] for j in group])
        for j, drift in zip(group, drift_list([names[j] for j in group], stats), strict=True):
            out[j] = drift
    return [d for d in out if d is not None]


def drift_list(names: Sequence[str], stats: RowDrift) -> list[FeatureDrift]:
    """:class:`FeatureDrift` values from one row of statistics per name."""
    columns = (stats.psi.tolist(), stats.js.tolist(), stats.ks.tolist(), stats.ks_pvalue.tolist())
    return [
        FeatureDrift(feature=n, psi=v, level=psi_level(v), js=j, ks=k, ks_pvalue=p)
        for n, v, j, k, p in zip(names, *columns, strict=True)
    ]


def pooled(histograms: Sequence[Counts]) -> Counts:
    """The federation's histogram: the sum of the sites' (same bins)."""
    if not histograms:
        raise ValueError("no histograms to pool")
    for h in histograms[1:]:
        _same_bins(histograms[0], h)
    total: Counts = np.sum(np.stack([np.asarray(h, np.int64) for h in histograms]), axis=0)
    return total


def pooled_many(windows: Sequence[Mapping[str, Counts]], names: Sequence[str]) -> list[Counts]:
    """:func:`pooled` of each name's histograms over ``windows`` (one per site), all names
    summed in one pass: equal to it (integer sums), without a call per name."""
    if not windows:
        raise ValueError("no histograms to pool")
    if not names:
        return []
    arrays = [w[n] for w in windows for n in names]
    shapes = [a.shape for a in arrays[: len(names)]]
    if any(len(s) != 1 for s in shapes) or shapes * len(windows) != [a.shape for a in arrays]:
        raise ValueError("histograms on different bins")
    total = np.concatenate(arrays, dtype=np.int64).reshape(len(windows), -1).sum(axis=0)
    return np.split(total, np.cumsum([s[0] for s in shapes])[:-1])
