"""DP for a run: sample, noise, account, enforce the budget, and say what ε holds against whom.

The coordinator and ``fedops simulate`` both give the round driver one of
:class:`CentralPrivacy`, :class:`DistributedPrivacy` or :class:`LocalPrivacy`
as a round plug-in (:func:`privacy_round`, in :mod:`.dp_round`); the maths
lives in :mod:`fedops.core.privacy`. Each round the plug-in asks the mechanism
to :meth:`~CentralPrivacy.sample` the cohort, to
:meth:`~CentralPrivacy.begin_round` (σ=auto and the budget, checked with the
worst case the round can end in), then to :meth:`~CentralPrivacy.spend` the
round, and commits the ledger (``RunStore.spend_privacy``) before the new
model leaves for evaluation. A resumed run restores the committed ledger.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedops.runtime.audit.commitments import Commitments
from fedops.runtime.privacy.central_dp import CentralPrivacy
from fedops.runtime.privacy.distributed import DistributedPrivacy
from fedops.runtime.privacy.dp_round import CentralPrivacyRound, PrivacyRound, privacy_round
from fedops.runtime.privacy.local_dp import LocalPrivacy
from fedops.runtime.privacy.privacy_settings import (
    SAMPLINGS,
    BudgetExhausted,
    PrivacySettings,
    RoundSample,
)
from fedops.runtime.privacy.regime import PrivacyResumeRefused, check_resume, regime_of

__all__ = [
    "SAMPLINGS",
    "BudgetExhausted",
    "CentralPrivacy",
    "CentralPrivacyRound",
    "DistributedPrivacy",
    "LocalPrivacy",
    "Privacy",
    "PrivacyResumeRefused",
    "PrivacyRound",
    "PrivacySettings",
    "RoundSample",
    "privacy_round",
    "restore_ledger",
]

Privacy = CentralPrivacy | LocalPrivacy


def restore_ledger(
    privacy: Privacy,
    saved: Any,
    metrics: Sequence[Mapping[str, Any]],
    *,
    logged: Commitments | None = None,
) -> None:
    """Restore from the committed ledger; refuse (:class:`PrivacyResumeRefused`) a resume
    under another privacy regime than the run's rounds ran under (:mod:`.regime`), a run
    that spent DP rounds but lost its ledger, or one whose ledger accounts for less than
    the signed audit log recorded (``logged``). A refused run claims no guarantee.
    """
    try:
        check_resume(
            regime_of(privacy.settings),
            saved=saved,
            metrics=metrics,
            logged=logged,
            seed=privacy.settings.seed,
        )
        _restore(privacy, saved, metrics, logged)
    except PrivacyResumeRefused as exc:
        privacy.refusal = str(exc)
        raise


def _restore(
    privacy: Privacy,
    saved: Any,
    metrics: Sequence[Mapping[str, Any]],
    logged: Commitments | None,
) -> None:
    """state.sqlite can be edited or put back by whoever holds the run directory: a ledger
    rolled back would let the run spend its budget again, and one of other events can give
    as much ε now and less after more rounds. So a central-DP ledger must hold every round
    event the log's ``privacy_spent`` entries name (and each one's known-participant twin),
    and any ledger at least the most ε those entries gave, computed at each entry's own δ
    by its own accountant (a resume may change δ or the headline accountant, which changes
    ε, not what was spent). Distributed DP logs an event for a round it aborted before
    unmasking, which its ledger rightly lacks: only its ε is held to the log.
    """
    spent = any("epsilon" in row for row in metrics) or bool(logged and logged.epsilon_spent)
    if saved is None and spent:
        raise PrivacyResumeRefused(
            "this run directory holds DP rounds but no committed privacy ledger "
            "(state.sqlite's privacy_spent): refusing to resume and under-report ε"
        )
    privacy.restore(saved)
    if logged is None or not isinstance(privacy, CentralPrivacy):
        return  # local DP: each site keeps its own ledger
    rolled_back = "it was rolled back or edited; refusing to resume and spend the budget again"
    if type(privacy) is CentralPrivacy and (
        missing := privacy.missing_rounds(logged.privacy_events)
    ):
        raise PrivacyResumeRefused(
            f"the privacy ledger in state.sqlite lacks rounds the signed audit log recorded "
            f"({missing}): {rolled_back}"
        )
    for (delta, accountant), eps in logged.epsilon_spent.items():
        now = privacy.ledger.epsilon(delta, accountant)
        if now < eps * (1 - 1e-9):
            raise PrivacyResumeRefused(
                f"the privacy ledger in state.sqlite accounts for ε = {now:.6g} at δ = "
                f"{delta:g} ({accountant}), but the signed audit log recorded ε = {eps:.6g} "
                f"spent there: {rolled_back}"
            )
