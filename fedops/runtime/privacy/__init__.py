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

__all__ = [
    "SAMPLINGS",
    "BudgetExhausted",
    "CentralPrivacy",
    "CentralPrivacyRound",
    "DistributedPrivacy",
    "LocalPrivacy",
    "Privacy",
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
    logged: Mapping[tuple[float, str], float] | None = None,
) -> None:
    """Restore from the committed ledger; refuse a run that spent DP rounds but lost it, or
    whose ledger accounts for less than the signed audit log recorded: ``logged`` is the
    most ε its ``privacy_spent`` entries gave per (δ, accountant), and the ledger's ε is
    computed at that δ by that accountant (a resume may change δ or the headline
    accountant, which changes ε, not what was spent). state.sqlite can be edited or put
    back by whoever holds the run directory: a ledger rolled back would let the run spend
    its budget again."""
    spent = any("epsilon" in row for row in metrics) or bool(logged)
    if saved is None and spent:
        raise ValueError(
            "this run directory holds DP rounds but no committed privacy ledger "
            "(state.sqlite's privacy_spent): refusing to resume and under-report ε"
        )
    privacy.restore(saved)
    if not isinstance(privacy, CentralPrivacy):
        return  # local DP: each site keeps its own ledger
    for (delta, accountant), eps in (logged or {}).items():
        now = privacy.ledger.epsilon(delta, accountant)
        if now < eps * (1 - 1e-9):
            raise ValueError(
                f"the privacy ledger in state.sqlite accounts for ε = {now:.6g} at δ = "
                f"{delta:g} ({accountant}), but the signed audit log recorded ε = {eps:.6g} "
                "spent there: it was rolled back or edited; refusing to resume and spend "
                "the budget again"
            )
