"""Whether a standing site joins the run a coordinator offers: its own policy decides.

Threat model: the coordinator may offer anything (a task the site never agreed to,
training settings past its caps, a privacy mode that spends what the site protects,
a run id it reuses or changes). The offer only lets the site say no early and on
the record; it grants nothing. Whatever the site accepts is checked again on every
task (settings, caps, ε against the site's persisted ledger), the task's code is the
site's own copy (never fetched), and that copy's digest must match what the
coordinator says it runs, so both sides provably run the same code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from fedops.tasks.fit_settings import PolicyRefusal, checked_train
from fedops.tasks.ledger import LedgerError, SiteLedger
from fedops.tasks.site_policy import SitePolicy
from fedops.v1 import fedops_pb2 as pb
from fedops.wire.training import train_from_proto

#: a run id names a directory at the site: nothing but a plain name is accepted
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class SiteTask:
    """A task this standing site runs: its name (as runs name it) and code digest."""

    name: str
    digest: str  # sha256 of the site's copy ("" for a built-in)


def decline_reason(
    offer: pb.RunOffer,
    *,
    tasks: dict[str, SiteTask],
    policy: SitePolicy,
    ledger: SiteLedger,
) -> str | None:
    """Why this site declines ``offer`` (the first rule it breaks), or None to join."""
    if not RUN_ID.fullmatch(offer.run_id):
        return f"run id {offer.run_id[:80]!r} is not a plain name (letters, digits, - and _)"
    for rule in (_task_rule, _train_rule, _privacy_rule):
        reason = rule(offer, tasks, policy, ledger)
        if reason:
            return reason[:500]
    if not policy.consents():
        return "this site does not consent (its consent file or policy says so)"
    return None


def offered_task(offer: pb.RunOffer, tasks: dict[str, SiteTask]) -> SiteTask | None:
    """The site's own task the offer names: by name, or a task file of this site with the
    digest the coordinator's copy has (paths differ between hosts; code does not)."""
    task = tasks.get(offer.task)
    if task is None and offer.task_digest:
        task = next((t for t in tasks.values() if t.digest == offer.task_digest), None)
    return task


def _task_rule(
    offer: pb.RunOffer, tasks: dict[str, SiteTask], policy: SitePolicy, ledger: SiteLedger
) -> str | None:
    task = offered_task(offer, tasks)
    if task is None:
        return (
            f"task {offer.task[:100]!r} is not one this site runs (its tasks: "
            f"{', '.join(sorted(tasks))})"
        )
    if task.digest != offer.task_digest:
        return (
            f"the coordinator's task {offer.task!r} has digest {offer.task_digest[:64] or '-'}, "
            f"this site's copy {task.digest or '-'}: not the same code"
        )
    if policy.allowed_tasks and task.digest not in policy.allowed_tasks:
        return f"task {offer.task!r} (digest {task.digest or '-'}) is not in allowed_tasks"
    return _split_rule(offer)


def _split_rule(offer: pb.RunOffer) -> str | None:
    """A built-in task's data split, as the run names it: within what the split accepts."""
    if offer.partition not in ("iid", "dirichlet"):
        return f"partition {offer.partition[:40]!r}: not iid or dirichlet"
    if not (math.isfinite(offer.alpha) and 0 < offer.alpha <= 1e6):
        return f"alpha {offer.alpha!r}: not a number in (0, 1e6]"
    if not 0 <= offer.data_seed < 2**32:
        return f"data_seed {offer.data_seed}: not in [0, 2**32)"
    return None


def _train_rule(
    offer: pb.RunOffer, tasks: dict[str, SiteTask], policy: SitePolicy, ledger: SiteLedger
) -> str | None:
    if not offer.HasField("train"):
        return "the offer carries no training settings"
    try:
        checked_train(train_from_proto(offer.train), policy.train_caps)
    except PolicyRefusal as exc:
        return f"training settings: {exc}"
    return None


def _privacy_rule(
    offer: pb.RunOffer, tasks: dict[str, SiteTask], policy: SitePolicy, ledger: SiteLedger
) -> str | None:
    if policy.require_secagg and offer.secagg == "none":
        return "this site trains only under secure aggregation (require_secagg); the run has none"
    capped = policy.max_epsilon is not None or policy.max_run_epsilon is not None
    if not capped:
        return None
    if offer.privacy != "local":
        return (
            f"this site trains only with local DP under its ε caps; the run's privacy is "
            f"{offer.privacy[:40]!r}"
        )
    run_cap = policy.max_run_epsilon
    if run_cap is not None and offer.epsilon > run_cap:
        return f"the run plans ε={offer.epsilon:g} per site, above this site's per-run {run_cap:g}"
    if policy.max_epsilon is None:
        return None
    try:
        spent = ledger.epsilon(policy.max_delta)
    except LedgerError as exc:
        return str(exc)
    if spent >= policy.max_epsilon:
        return (
            f"this site's privacy budget is spent: ε={spent:.3g} of {policy.max_epsilon:g} "
            f"(δ={policy.max_delta:g}, over every run in its ledger)"
        )
    return None
