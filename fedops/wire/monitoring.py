"""Monitoring requests and site reports between their core values and protobuf.

A report is checked before the coordinator uses it: every histogram must have
the bins the request defined, counts must be plausible, and the statistics a
site sends must be the ones its own counts give (they are recomputed here, so
a site cannot report drift its histograms do not show). Any failure raises
:class:`~fedops.core.params.InvalidUpdate` with the reason. The rules past decoding
are :mod:`fedops.core.monitoring.checks`', which the batched simulation applies to its
in-process reports without the protobuf round trip.
"""

from __future__ import annotations

import numpy as np

from fedops.core.monitoring.checks import (
    MAX_COUNT,
    MAX_GROUPS,
    STATISTICS,
    TOLERANCE,
    count_faults,
    drift_faults,
    expected_bins,
    fairness_fault,
)
from fedops.core.monitoring.drift import FeatureDrift, drift_list
from fedops.core.monitoring.fairness import GroupCounts
from fedops.core.monitoring.profile import MonitorSpec, SiteReport
from fedops.core.monitoring.rows import RowDrift
from fedops.core.params import InvalidUpdate
from fedops.v1 import fedops_pb2 as pb
from fedops.wire.codec import shown

__all__ = [
    "MAX_BINS",
    "MAX_COUNT",
    "MAX_FEATURES",
    "MAX_GROUPS",
    "TOLERANCE",
    "expected_bins",
    "report_from_proto",
    "report_to_proto",
    "spec_from_proto",
    "spec_to_proto",
]

MAX_FEATURES = 4096
MAX_BINS = 1024


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
    windows = {"reference": _one(reference), "current": _one(current)}
    _raise(count_faults(names, windows)[0])
    drift = _checked_drift(msg, names, windows)
    return SiteReport(drift=drift, reference=reference, current=current, fairness=_fairness(msg))


def _counts(name: str, values: object, bins: int) -> np.ndarray:
    c = np.asarray(values, np.int64)
    if c.shape != (bins,):
        raise InvalidUpdate(f"histogram {name!r} has {c.size} bins, the request defines {bins}")
    return c


def _one(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each histogram as the single row the checks take."""
    return {name: c[None, :] for name, c in counts.items()}


def _raise(fault: str | None) -> None:
    if fault is not None:
        raise InvalidUpdate(fault)


def _checked_drift(
    msg: pb.SiteReport, names: list[str], windows: dict[str, dict[str, np.ndarray]]
) -> tuple[FeatureDrift, ...]:
    sent = {d.feature: d for d in msg.drift}
    if len(msg.drift) != len(names) or set(sent) != set(names):
        raise InvalidUpdate("the report's drift statistics do not cover its histograms")
    claimed = {
        n: RowDrift(*(np.array([getattr(sent[n], stat)], np.float64) for stat in STATISTICS))
        for n in names
    }
    faults, ours = drift_faults(names, windows["reference"], windows["current"], claimed)
    _raise(faults[0])
    return tuple(d for n in names for d in drift_list([n], ours[n]))


def _fairness(msg: pb.SiteReport) -> dict[int, GroupCounts]:
    if len(msg.fairness) > MAX_GROUPS:
        raise InvalidUpdate(f"fairness counts for {len(msg.fairness)} groups")
    _raise(fairness_fault([(g.group, g) for g in msg.fairness]))
    return {
        g.group: GroupCounts(n=g.n, tp=g.tp, fp=g.fp, tn=g.tn, fn=g.fn, correct=g.correct)
        for g in msg.fairness
    }
