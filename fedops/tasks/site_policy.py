"""A site's own rules, enforced at the site: the coordinator is never trusted to follow them.

A consortium member states what it agreed to (in its startup kit's policy,
or with the client's flags): which task code it runs (by sha256 digest), how
many rounds, how much privacy loss (``max_epsilon`` at δ ``max_delta``, checked
per round by :class:`~fedops.tasks.site.Site` against its persisted ledger), and
whether it consents at all. Consent can be withdrawn while the agent runs by
editing a small JSON file; the agent then declines, records why in its audit
log, and leaves the run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedops.core.monitoring.profile import ReportLimits
from fedops.core.privacy.accountant import check_delta
from fedops.core.secagg.policy import SecAggPolicy
from fedops.tasks.contract import Task
from fedops.tasks.fit_settings import TrainCaps

#: kit policy keys (and ``fedops client --secagg-*`` flags) -> SecAggPolicy fields
SECAGG_RULES = {
    "secagg_min_cohort": "min_cohort",
    "secagg_min_degree": "min_degree",
    "secagg_max_colluders": "max_colluders",
    "secagg_min_noise_multiplier": "min_noise_multiplier",
    "secagg_max_l2_clip": "max_l2_clip",
}


#: kit policy keys (and ``fedops client`` flags) capping the run's training settings
TRAIN_CAPS = ("max_epochs", "max_batch_size", "max_lr")


class PolicyViolation(Exception):
    """A task or round the site's policy forbids; the message names the rule."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SitePolicy:
    """Args:
    max_epsilon: the most record-level ε this site may spend (local DP), over every
        run it ever trained in (its ledger composes them all).
    max_run_epsilon: the most ε one run may spend at this site (a standing site's
        per-run budget, ``--max-run-epsilon``); ``max_epsilon`` still bounds the sum.
    max_delta: the δ this site accounts its local DP at; a coordinator may ask for a
        smaller one, never a larger (``--dp-delta``, kit rule ``max_delta``).
    dp_public_records: the record count local DP is planned and accounted with in
        place of the true one, which then stays hidden (``--dp-public-records``).
    require_secagg: train only under secure aggregation (``--require-secagg``); implied
        by a distributed-DP noise floor, which a plain fit would bypass.
    report_limits: the smallest bin and the most bins of a monitoring report
        (``monitoring_min_count``, ``monitoring_max_cells``).
    max_rounds: the last round this site takes part in.
    allowed_tasks: sha256 digests of task code this site agreed to run (empty: any).
    consent_file: JSON ``{"consent": true|false}``, read before every task.
    secagg: the floors this site holds a secure-aggregation round to (``secagg_*`` rules).
    train_caps: the largest epochs, batch size and learning rate the run may ask this site
        to train with (``max_epochs``, ``max_batch_size``, ``max_lr``; ``--max-epochs`` ...).
    """

    max_epsilon: float | None = None
    max_run_epsilon: float | None = None
    max_delta: float = 1e-5
    dp_public_records: int | None = None
    require_secagg: bool = False
    report_limits: ReportLimits = field(default_factory=ReportLimits)
    max_rounds: int | None = None
    allowed_tasks: Sequence[str] = field(default_factory=tuple)
    consent_file: Path | None = None
    consent: bool = True
    secagg: SecAggPolicy = field(default_factory=SecAggPolicy)
    train_caps: TrainCaps = field(default_factory=TrainCaps)

    def __post_init__(self) -> None:
        try:
            check_delta(self.max_delta)
        except ValueError as exc:
            raise ValueError(f"policy: max_delta: {exc}") from None
        n = self.dp_public_records
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"policy: dp_public_records must be a whole number >= 1, got {n!r}")

    @classmethod
    def from_mapping(cls, policy: Mapping[str, Any], **overrides: Any) -> SitePolicy:
        """A kit's ``policy`` (``max_epsilon``, ``max_delta``, ``max_rounds``, ``allowed_tasks``),
        overridden by the flags the operator gave (those that are not None)."""
        known = {"max_epsilon", "max_delta", "dp_public_records", "max_rounds", "allowed_tasks"}
        known |= {"max_run_epsilon"}
        known |= {"require_secagg", "monitoring_min_count", "monitoring_max_cells"}
        known |= {"consent", "consent_file"}
        known |= set(TRAIN_CAPS)
        known |= set(SECAGG_RULES)
        unknown = sorted(set(policy) - known)
        if unknown:
            raise ValueError(f"policy: unknown rule(s) {unknown}; known: {sorted(known)}")
        overrides = dict(overrides)

        def chosen(key: str) -> Any:  # a flag the operator gave wins over the kit's rule
            flag = overrides.pop(key, None)
            return flag if flag is not None else policy.get(key)

        secagg = {name: v for key, name in SECAGG_RULES.items() if (v := chosen(key)) is not None}
        caps = {k: v for k in TRAIN_CAPS if (v := _stricter(policy, overrides, k)) is not None}
        limits = {
            name: int(v)
            for name in ("min_count", "max_cells")
            if (v := chosen(f"monitoring_{name}")) is not None
        }
        flag = bool(overrides.pop("require_secagg", False))  # a flag can add the rule only
        values = {
            "max_epsilon": policy.get("max_epsilon"),
            "max_run_epsilon": policy.get("max_run_epsilon"),
            "max_delta": float(policy.get("max_delta", 1e-5)),
            "dp_public_records": policy.get("dp_public_records"),
            "require_secagg": _boolean(policy, "require_secagg", False),
            "report_limits": ReportLimits(**limits),
            "max_rounds": policy.get("max_rounds"),
            "allowed_tasks": tuple(policy.get("allowed_tasks", ())),
            "consent_file": Path(policy["consent_file"]) if policy.get("consent_file") else None,
            "consent": _boolean(policy, "consent", True),
            "secagg": SecAggPolicy(**secagg),
            "train_caps": TrainCaps(**caps),
        }
        values |= {k: v for k, v in overrides.items() if v is not None and v != ()}
        secagg_floor = values["secagg"].min_noise_multiplier > 0
        values["require_secagg"] = values["require_secagg"] or flag or secagg_floor
        return cls(**values)

    def check_task(self, task: Task) -> None:
        """Refuse to start with task code the site did not agree to."""
        if self.allowed_tasks and task.digest not in self.allowed_tasks:
            shown = task.digest or "(a built-in task, no source digest)"
            raise PolicyViolation(
                f"task {task.name!r} has digest {shown}, which this site's policy does not "
                f"allow (allowed_tasks: {', '.join(self.allowed_tasks)})"
            )

    def check_round(self, server_round: int) -> None:
        if self.max_rounds is not None and server_round > self.max_rounds:
            raise PolicyViolation(
                f"round {server_round} is past this site's limit of {self.max_rounds} rounds "
                "(max_rounds)"
            )

    def consents(self) -> bool:
        """False once the consent file says so (a missing or unreadable file: no consent)."""
        if not self.consent:
            return False
        if self.consent_file is None:
            return True
        try:
            value = json.loads(Path(self.consent_file).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(value, dict) and value.get("consent") is True


def _boolean(policy: Mapping[str, Any], key: str, default: bool) -> bool:
    """A yes/no rule, refused unless it is a real boolean: ``bool("false")`` is True, and
    a consent of "false" must never read as consent."""
    value = policy.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"policy: {key} must be true or false, got {value!r}")
    return value


def _stricter(policy: Mapping[str, Any], overrides: dict[str, Any], key: str) -> Any:
    """A training cap from the flag and the kit: the smaller, so a flag can tighten the
    kit's cap but never loosen it (the kit's policy is what the consortium agreed to)."""
    flag, rule = overrides.pop(key, None), policy.get(key)
    if flag is None or rule is None:
        return flag if flag is not None else rule
    try:
        return min(flag, rule)
    except TypeError:  # a malformed rule: TrainCaps refuses it by name
        return rule
