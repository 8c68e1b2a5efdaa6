"""DP for a run: sample, noise, account, enforce the budget, and say what ε holds against whom.

The coordinator and ``fedops simulate`` both give the round driver one of
:class:`CentralPrivacy`, :class:`DistributedPrivacy` or :class:`LocalPrivacy`
as a round plug-in (:func:`privacy_round`, in :mod:`.dp_round`); the maths
lives in :mod:`fedops.core.privacy`. Each round the plug-in asks the mechanism
to :meth:`~CentralPrivacy.sample` the cohort, to
:meth:`~CentralPrivacy.begin_round` (σ=auto and the budget, checked with the
worst case the round can end in), then to :meth:`~CentralPrivacy.spend` the
round, signs the charge into the audit log (``privacy_charged``) and commits the
ledger (``RunStore.spend_privacy``) before the new model leaves for evaluation (a
distributed sum: as soon as it is unmasked). A resumed run restores the committed
ledger, held to what the signed log charged (:mod:`.ledger_log`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedops.runtime.audit.commitments import Commitments
from fedops.runtime.privacy.central_dp import CentralPrivacy
from fedops.runtime.privacy.distributed import DistributedPrivacy
from fedops.runtime.privacy.dp_round import CentralPrivacyRound, PrivacyRound, privacy_round
from fedops.runtime.privacy.ledger_log import hold_to_log, only_unconfirmed
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
    """A central- or distributed-DP ledger is held to the signed log (:mod:`.ledger_log`):
    every round event it charged (a distributed round aborted before its sum was unmasked
    spent nothing and is not counted) and the most ε it recorded."""
    spent = any("epsilon" in row for row in metrics) or bool(
        logged and logged.epsilon_spent and not only_unconfirmed(logged)
    )
    if saved is None and spent:
        raise PrivacyResumeRefused(
            "this run directory holds DP rounds but no committed privacy ledger "
            "(state.sqlite's privacy_spent): refusing to resume and under-report ε"
        )
    privacy.restore(saved)
    if logged is not None and isinstance(privacy, CentralPrivacy):
        hold_to_log(privacy, logged)  # local DP: each site keeps its own ledger
