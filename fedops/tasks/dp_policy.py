"""A site's local-DP budget check, before it trains a DP round.

One check for every site that trains with DP-SGD: a deployed or sequentially simulated
:class:`~fedops.tasks.site.Site` (after its model check), and the simulated sites that
:mod:`fedops.simulation.local_dp_sites` trains together; from the same ledger and the
same round, the same accept or decline with the same reason
(``tests/unit/simulation/test_batched_local_dp.py`` runs both). Uncapped, it works out
no ε (nothing is compared with it).
"""

from __future__ import annotations

from fedops.core.privacy.accountant import RoundEvent, epsilon
from fedops.core.privacy.local import LocalDP, round_event
from fedops.core.training import TrainConfig
from fedops.tasks.fit_settings import PolicyRefusal
from fedops.tasks.ledger import LedgerError, SiteLedger


def check_dp_round(
    ledger: SiteLedger,
    dp: LocalDP,
    records: int,
    cfg: TrainConfig,
    *,
    max_epsilon: float | None,
    max_run_epsilon: float | None = None,
    run_id: str = "",
) -> tuple[RoundEvent, int]:
    """The round's ``(event, steps)`` if the site may train it, else :class:`PolicyRefusal`.

    The round must be within the site's bounds (:func:`round_event`), its ledger must
    read back, and with a cap the ledger plus this round must stay within it: RDP's ε
    of the round alone first (milliseconds, where a PLD of a crafted round takes
    minutes; an upper bound too), then the PLD over every round in the ledger.
    Uncapped, no ε is worked out here (nothing is compared with it). With
    ``max_run_epsilon`` (a standing site's per-run budget), run ``run_id``'s rounds in the
    ledger plus this one must stay within it too.
    """
    try:
        event, steps = round_event(dp, records, cfg)
    except ValueError as exc:
        raise PolicyRefusal(str(exc)) from exc
    try:
        if max_epsilon is None:
            ledger.charges()  # a ledger that does not read back refuses DP training
            if max_run_epsilon is not None:
                _check_run(ledger, event, steps, dp.delta, max_run_epsilon, run_id)
            return event, steps
        alone = epsilon(((event, steps),), dp.delta, "rdp")
        if alone > max_epsilon:
            raise PolicyRefusal(
                f"this round alone would cost this site ε={alone:.3g} (RDP, "
                f"δ={dp.delta:g}), above its limit {max_epsilon:g} (--max-epsilon)"
            )
        after = ledger.epsilon_after(event, steps, dp.delta)
    except LedgerError as exc:
        raise PolicyRefusal(str(exc)) from exc
    if after > max_epsilon:
        raise PolicyRefusal(
            f"training this round would raise this site's ε to {after:.3g} (δ={dp.delta:g}, "
            f"over every round in its privacy ledger), above its limit "
            f"{max_epsilon:g} (--max-epsilon)"
        )
    if max_run_epsilon is not None:
        _check_run(ledger, event, steps, dp.delta, max_run_epsilon, run_id)
    return event, steps


def _check_run(
    ledger: SiteLedger, event: RoundEvent, steps: int, delta: float, cap: float, run_id: str
) -> None:
    try:
        in_run = ledger.epsilon_after(event, steps, delta, run_id)
    except LedgerError as exc:
        raise PolicyRefusal(str(exc)) from exc
    if in_run > cap:
        raise PolicyRefusal(
            f"training this round would raise run {run_id!r}'s ε at this site to "
            f"{in_run:.3g} (δ={delta:g}), above its per-run limit {cap:g} (--max-run-epsilon)"
        )
