"""Monitoring requests and site reports between their core values and protobuf.

A report is checked before the coordinator uses it: every histogram must have
the bins the request defined, counts must be plausible, and the statistics a
site sends must be the ones its own counts give (they are recomputed here, so
a site cannot report drift its histograms do not show). Any failure raises
:class:`~fedops.core.params.InvalidUpdate` with the reason.
"""

from __future__ import annotations

import math

import numpy as np

from fedops.core.monitoring.drift import FeatureDrift, drift_report
from fedops.core.monitoring.fairness import GroupCounts
from fedops.core.monitoring.profile import (
    LABEL,
    OUTPUT_EDGES,
    PREDICTION,
    MonitorSpec,
    SiteReport,
)
from fedops.core.params import InvalidUpdate
from fedops.v1 import fedops_pb2 as pb
from fedops.wire.codec import shown

MAX_FEATURES = 4096
MAX_BINS = 1024
MAX_GROUPS = 1024
MAX_COUNT = 1 << 40
#: recomputed statistics may differ from a site's by float rounding only
TOLERANCE = 1e-9


def spec_to_proto(spec: MonitorSpec) -> pb.MonitorRequest:
    return pb.MonitorRequest(
        edges=[pb.FeatureEdges(name=n, edges=e.tolist()) for n, e in spec.edges.items()],
        num_classes=spec.num_classes,
        positive_label=spec.positive_label,
    )


def spec_from_proto(msg: pb.MonitorRequest) -> MonitorSpec:
    if len(msg.edges) > MAX_FEATURES:
        raise InvalidUpdate(f"a monitoring request with {len(msg.edges)} features")
    if not 2 <= msg.num_classes <= MAX_BINS:
        raise InvalidUpdate(
            f"monitoring request: num_classes must be >= 2 and <= {MAX_BINS}, got {msg.num_classes}"
        )
    edges = {}
    for f in msg.edges:
        e = np.asarray(f.edges, np.float64)
        # e[1:] > e[:-1], not diff > 0: the difference of two infinities is NaN
        if not 2 <= len(e) <= MAX_BINS + 1 or not np.all(e[1:] > e[:-1]):
            raise InvalidUpdate(f"bin edges of feature {shown(f.name)} are not increasing")
        if f.name in edges:
            raise InvalidUpdate(f"feature {shown(f.name)} appears twice in the request")
        edges[f.name] = e
    try:
        return MonitorSpec(
            edges=edges, num_classes=msg.num_classes, positive_label=msg.positive_label
        )
    except ValueError as exc:
        raise InvalidUpdate(f"monitoring request: {exc}") from exc


def report_to_proto(report: SiteReport) -> pb.SiteReport:
    return pb.SiteReport(
        drift=[
            pb.DriftStatistic(feature=d.feature, psi=d.psi, js=d.js, ks=d.ks, ks_pvalue=d.ks_pvalue)
            for d in report.drift
        ],
        histograms=[
            pb.Histogram(
                name=name,
                reference=report.reference[name].tolist(),
                current=report.current[name].tolist(),
            )
            for name in report.reference
        ],
        fairness=[
            pb.GroupConfusion(group=g, n=c.n, tp=c.tp, fp=c.fp, tn=c.tn, fn=c.fn, correct=c.correct)
            for g, c in sorted(report.fairness.items())
        ],
    )


def expected_bins(spec: MonitorSpec) -> dict[str, int]:
    """Histogram name -> number of bins, for every histogram a report must carry."""
    if spec.edges:
        bins = {name: len(e) - 1 for name, e in spec.edges.items()}
    else:
        bins = {f"output{k}": len(OUTPUT_EDGES) - 1 for k in range(spec.num_classes)}
    return {**bins, LABEL: spec.num_classes, PREDICTION: spec.num_classes}


def report_from_proto(msg: pb.SiteReport, spec: MonitorSpec) -> SiteReport:
    """Check a site's report against the request it answers; recompute its drift."""
    bins = expected_bins(spec)
    names = [h.name for h in msg.histograms]
    if sorted(names) != sorted(bins):
        raise InvalidUpdate(
            f"the report's histograms ({len(names)}) are not the {len(bins)} requested"
        )
    reference, current = {}, {}
    for h in msg.histograms:
        reference[h.name] = _counts(h.name, h.reference, bins[h.name])
        current[h.name] = _counts(h.name, h.current, bins[h.name])
    for window, counts in (("reference", reference), ("current", current)):
        rows = {int(c.sum()) for c in counts.values()}
        if len(rows) != 1:
            raise InvalidUpdate(
                f"the {window} histograms count different numbers of rows ({sorted(rows)[:4]})"
            )
    drift = _checked_drift(msg, reference, current)
    return SiteReport(drift=drift, reference=reference, current=current, fairness=_fairness(msg))


def _counts(name: str, values: object, bins: int) -> np.ndarray:
    c = np.asarray(values, np.int64)
    if c.shape != (bins,):
        raise InvalidUpdate(f"histogram {name!r} has {c.size} bins, the request defines {bins}")
    total = sum(int(v) for v in c.tolist())  # Python ints: an int64 sum could wrap around
    if np.any(c < 0) or not 0 < total <= MAX_COUNT:
        raise InvalidUpdate(f"histogram {name!r} has negative, empty or implausible counts")
    return c


def _checked_drift(
    msg: pb.SiteReport, reference: dict[str, np.ndarray], current: dict[str, np.ndarray]
) -> tuple[FeatureDrift, ...]:
    names = list(reference)
    ours = {
        d.feature: d
        for d in drift_report(names, [reference[n] for n in names], [current[n] for n in names])
    }
    if len(msg.drift) != len(ours) or {d.feature for d in msg.drift} != set(ours):
        raise InvalidUpdate("the report's drift statistics do not cover its histograms")
    for d in msg.drift:
        mine = ours[d.feature]
        for stat in ("psi", "js", "ks", "ks_pvalue"):
            theirs, expected = getattr(d, stat), getattr(mine, stat)
            if not math.isfinite(theirs) or abs(theirs - expected) > TOLERANCE * max(
                1.0, abs(expected)
            ):
                raise InvalidUpdate(
                    f"drift statistic {stat} of {d.feature!r} is {theirs!r}, but the site's "
                    f"own histograms give {expected!r}"
                )
    return tuple(ours[n] for n in names)


def _fairness(msg: pb.SiteReport) -> dict[int, GroupCounts]:
    if len(msg.fairness) > MAX_GROUPS:
        raise InvalidUpdate(f"fairness counts for {len(msg.fairness)} groups")
    out: dict[int, GroupCounts] = {}
    for g in msg.fairness:
        cells = (g.tp, g.fp, g.tn, g.fn)
        if (
            g.group in out
            or min(*cells, g.correct) < 0
            or sum(cells) != g.n
            or g.correct > g.n
            or g.n > MAX_COUNT
        ):
            raise InvalidUpdate(f"fairness counts of group {g.group} are inconsistent")
        out[g.group] = GroupCounts(n=g.n, tp=g.tp, fp=g.fp, tn=g.tn, fn=g.fn, correct=g.correct)
    return out
