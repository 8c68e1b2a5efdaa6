"""Figures of a run's per-round metrics, for ``plots.py``'s PNG files and the HTML report.

Built on matplotlib's object API (``Figure``), not pyplot: no global backend is
switched, no window can open and no figure needs closing. Every reader here is
lenient: a field that is missing, null, NaN or not a number becomes NaN, which
matplotlib draws as a gap.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray

from fedops.core.monitoring.drift import PSI_MODERATE, PSI_SIGNIFICANT

Row = Mapping[str, Any]
Series = dict[str, list[float]]

DPI = 100
#: with more sites than this, a min-max band and the median replace one line per site
MAX_SITE_LINES = 20
#: the drift heatmap shows this many features and sites, those with the largest PSI
TOP_FEATURES = 20
TOP_SITES = 30
#: the defaults of ``fedops.core.monitoring.fairness.FairnessThresholds``; a run's own
#: thresholds, where its alerts carry them, take precedence (see ``fairness_thresholds``)
FAIRNESS_DEFAULTS: dict[str, float] = {
    "demographic_parity_difference": 0.1,
    "demographic_parity_ratio": 0.8,
    "equalized_odds_difference": 0.1,
    "equal_opportunity_difference": 0.1,
    "group_accuracy_gap": 0.1,
    "site_accuracy_gap": 0.15,
}


def number(value: Any) -> float:
    """A float to plot: missing, null, a bool or anything else not a number is NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def as_dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def label(text: Any, limit: int = 32) -> str:
    """``text`` as matplotlib draws it literally (``$`` would start mathtext), shortened."""
    s = str(text)
    s = s if len(s) <= limit else s[: limit - 3] + "..."
    return s.replace("$", r"\$")


def rounds_of(rows: Sequence[Row]) -> list[float]:
    return [number(r.get("round", i + 1)) for i, r in enumerate(rows)]


def column(rows: Sequence[Row], key: str) -> list[float]:
    return [number(r.get(key)) for r in rows]


def has_data(values: Sequence[float]) -> bool:
    return any(math.isfinite(v) for v in values)


def site_series(rows: Sequence[Row], section: str, field: str) -> Series:
    """``{site: value per round}`` from ``row[section][site][field]``."""
    sites = sorted({str(s) for r in rows for s in as_dict(r.get(section))})
    return {
        s: [number(as_dict(as_dict(r.get(section)).get(s)).get(field)) for r in rows] for s in sites
    }


def _psi_by_feature(entry: Mapping[str, Any]) -> dict[str, float]:
    """A site's PSI per feature; only its worst feature where ``by_feature`` is absent."""
    by_feature = as_dict(entry.get("by_feature"))
    if not by_feature and entry.get("psi_feature") is not None:
        by_feature = {str(entry["psi_feature"]): entry.get("psi")}
    return {
        str(f): v for f, v in ((f, number(v)) for f, v in by_feature.items()) if math.isfinite(v)
    }


def site_max_psi(rows: Sequence[Row]) -> Series:
    """Each site's largest PSI over its features, per round."""
    sites = sorted({str(s) for r in rows for s in as_dict(r.get("drift"))})
    out: Series = {}
    for site in sites:
        out[site] = []
        for r in rows:
            entry = as_dict(as_dict(r.get("drift")).get(site))
            values = [number(entry.get("psi")), *_psi_by_feature(entry).values()]
            finite = [v for v in values if math.isfinite(v)]
            out[site].append(max(finite) if finite else math.nan)
    return out


def drift_matrix(rows: Sequence[Row]) -> tuple[list[str], list[str], NDArray[np.float64]]:
    """Sites x features, each cell the largest PSI over rounds; worst sites and features first."""
    best: dict[tuple[str, str], float] = {}
    for r in rows:
        for site, entry in as_dict(r.get("drift")).items():
            for feature, value in _psi_by_feature(as_dict(entry)).items():
                key = (str(site), feature)
                best[key] = max(best.get(key, -math.inf), value)
    site_max: dict[str, float] = {}
    feature_max: dict[str, float] = {}
    for (site, feature), value in best.items():
        site_max[site] = max(site_max.get(site, -math.inf), value)
        feature_max[feature] = max(feature_max.get(feature, -math.inf), value)
    sites = sorted(site_max, key=lambda s: (-site_max[s], s))
    features = sorted(feature_max, key=lambda f: (-feature_max[f], f))
    matrix = np.full((len(sites), len(features)), np.nan)
    for (site, feature), value in best.items():
        matrix[sites.index(site), features.index(feature)] = value
    return sites, features, matrix


def fairness_thresholds(rows: Sequence[Row]) -> dict[str, float]:
    """The defaults, overridden by the thresholds the run's own alerts report."""
    out = dict(FAIRNESS_DEFAULTS)
    for r in rows:
        alerts = r.get("fairness_alerts")
        for alert in alerts if isinstance(alerts, list) else []:
            value = number(as_dict(alert).get("threshold"))
            if math.isfinite(value):
                out[str(as_dict(alert).get("metric"))] = value
    return out


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _marker(n: int) -> dict[str, Any]:
    return {"marker": "o", "markersize": 3} if n <= 50 else {}


def _style(ax: Axes, ylabel: str, legend_outside: bool = False) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if not handles:
        return
    if legend_outside:
        ncol = 1 if len(handles) <= 12 else 2
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, ncol=ncol)
    else:
        ax.legend(fontsize=8)


def metric_figure(
    rows: Sequence[Row], keys: Sequence[str], ylabel: str, figsize: tuple[float, float] = (6, 4)
) -> Figure:
    """One line per key that has a value in some round."""
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    rounds = rounds_of(rows)
    for key in keys:
        values = column(rows, key)
        if has_data(values):
            ax.plot(rounds, values, label=key, **_marker(len(rows)))
    _style(ax, ylabel)
    return fig


def _site_lines(ax: Axes, rounds: list[float], series: Series, highlight: Sequence[str]) -> None:
    """One line per site, or for many sites the min-max band, the median and ``highlight``."""
    if len(series) <= MAX_SITE_LINES:
        for site, values in series.items():
            ax.plot(rounds, values, label=label(site), linewidth=1.2, **_marker(len(rounds)))
        return
    data = np.array(list(series.values()), dtype=float)
    with warnings.catch_warnings():  # a round where no site has a value: NaN, said quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, mid, hi = (f(data, axis=0) for f in (np.nanmin, np.nanmedian, np.nanmax))
    ax.fill_between(rounds, lo, hi, alpha=0.25, label=f"min-max of {len(series)} sites")
    ax.plot(rounds, mid, linewidth=2, label="median")
    for site in highlight:
        ax.plot(rounds, series[site], linewidth=1, linestyle="--", label=label(site))


def site_figure(series: Series, rows: Sequence[Row], highlight: Sequence[str] = ()) -> Figure:
    """Per-site accuracy of the global model per round."""
    fig = Figure(figsize=(8.5, 4), layout="constrained")
    ax = fig.subplots()
    _site_lines(ax, rounds_of(rows), series, highlight)
    _style(ax, "accuracy (global model, site's data)", legend_outside=True)
    return fig


def drift_rounds_figure(series: Series, rows: Sequence[Row]) -> Figure:
    """Each site's largest PSI per round, the pooled PSI and the PSI levels."""
    fig = Figure(figsize=(8.5, 4), layout="constrained")
    ax = fig.subplots()
    rounds = rounds_of(rows)
    top = sorted(series, key=lambda s: -max(filter(math.isfinite, series[s]), default=0))[:3]
    _site_lines(ax, rounds, series, top)
    pooled = [number(as_dict(r.get("drift_pooled")).get("psi")) for r in rows]
    if has_data(pooled):
        ax.plot(rounds, pooled, color="black", linewidth=2, label="pooled (all sites)")
    for level, name, color in (
        (PSI_MODERATE, "moderate", "orange"),
        (PSI_SIGNIFICANT, "significant", "red"),
    ):
        ax.axhline(level, color=color, linestyle=":", label=f"{name} ({level:g})")
    ax.set_ylim(bottom=0)
    _style(ax, "largest PSI over features", legend_outside=True)
    return fig


def drift_heatmap(sites: list[str], features: list[str], matrix: NDArray[np.float64]) -> Figure:
    """Sites x features coloured by PSI, the PSI levels marked on the colour bar."""
    ns, nf = matrix.shape
    fig = Figure(
        figsize=(max(6.0, 3.0 + 0.45 * nf), max(3.0, 1.8 + 0.32 * ns)), layout="constrained"
    )
    ax = fig.subplots()
    finite = matrix[np.isfinite(matrix)]
    vmax = max(2 * PSI_SIGNIFICANT, float(finite.max()) if finite.size else 0.0)
    cmap = matplotlib.colormaps["YlOrRd"].with_extremes(bad="#e0e0e0")
    image = ax.imshow(matrix, cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(nf), [label(f, 24) for f in features], rotation=50, ha="right", fontsize=8)
    ax.set_yticks(range(ns), [label(s, 24) for s in sites], fontsize=8)
    ax.set_xlabel("feature")
    bar = fig.colorbar(image, ax=ax, label="largest PSI over rounds")
    for level in (PSI_MODERATE, PSI_SIGNIFICANT):
        bar.ax.axhline(level, color="black", linewidth=1.2)
    if ns * nf <= 600:
        for (i, j), value in np.ndenumerate(matrix):
            if math.isfinite(value):
                color = "white" if value > 0.6 * vmax else "black"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6.5, color=color)
    return fig


def fairness_series(rows: Sequence[Row]) -> Series:
    """Each fairness metric with a value in some round, the known metrics first."""
    recorded = [k for r in rows for k in as_dict(r.get("fairness"))]
    data = {
        str(n): [number(as_dict(r.get("fairness")).get(n)) for r in rows]
        for n in dict.fromkeys([*FAIRNESS_DEFAULTS, *recorded])
    }
    return {n: values for n, values in data.items() if has_data(values)}


def _threshold_lines(ax: Axes, colors: Mapping[str, str], thresholds: Mapping[str, float]) -> None:
    """One dotted line per threshold value: the metric's colour, or grey when it is shared."""
    by_value: dict[float, list[str]] = {}
    for name in colors:
        if name in thresholds:
            by_value.setdefault(thresholds[name], []).append(name)
    for value, names in by_value.items():
        color = colors[names[0]] if len(names) == 1 else "grey"
        ax.axhline(value, color=color, linestyle=":", linewidth=1.3, label=f"threshold {value:g}")


def fairness_figure(rows: Sequence[Row], thresholds: Mapping[str, float]) -> Figure | None:
    """Gap metrics (alert above the line) and the parity ratio (alert below it); None if empty."""
    data = fairness_series(rows)
    gaps, ratios = [n for n in data if "ratio" not in n], [n for n in data if "ratio" in n]
    panels = [p for p in (gaps, ratios) if p]
    if not panels:
        return None
    fig = Figure(figsize=(5.5 * len(panels) + 1, 4), layout="constrained")
    rounds = rounds_of(rows)
    for ax, panel in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        colors = {
            name: ax.plot(rounds, data[name], label=name, **_marker(len(rows)))[0].get_color()
            for name in panel
        }
        _threshold_lines(ax, colors, thresholds)
        ratio = panel is ratios
        _style(ax, "ratio (alert below dotted line)" if ratio else "gap (alert above dotted line)")
    return fig


def epsilon_figure(rows: Sequence[Row]) -> Figure:
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(rounds_of(rows), column(rows, "epsilon"), color="purple", **_marker(len(rows)))
    ax.set_ylim(bottom=0)
    _style(ax, r"$\varepsilon$ spent so far")
    return fig
