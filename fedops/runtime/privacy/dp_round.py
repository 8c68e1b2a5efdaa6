"""DP as a plug-in of the round: it samples, sets the sites' clipping, spends and commits.

The driver knows nothing of DP; these plug-ins join the round at the points
:class:`~fedops.runtime.round_plugin.RoundPlugin` defines. Central DP also
wraps the aggregation: the strategy gets the noised mean as its one result
(post-processing, which spends no privacy), so any strategy runs under DP.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from fedops.core.params import Params
from fedops.core.results import EvaluateResult, FitResult
from fedops.runtime.privacy.central_dp import CentralPrivacy
from fedops.runtime.privacy.distributed import DistributedPrivacy
from fedops.runtime.privacy.local_dp import LocalPrivacy
from fedops.runtime.privacy.privacy_settings import PrivacySettings, RoundSample
from fedops.runtime.round_plugin import EvaluationAsk, FitOutcome, RoundContext, RoundPlugin


class PrivacyRound(RoundPlugin):
    """Local or distributed DP: the sites (or SecAgg+) add the noise; the round accounts it."""

    def __init__(self, privacy: CentralPrivacy | LocalPrivacy) -> None:
        central = isinstance(privacy, CentralPrivacy) and not isinstance(
            privacy, DistributedPrivacy
        )
        if central != isinstance(self, CentralPrivacyRound):
            # central DP outside CentralPrivacyRound would average the raw updates unnoised
            # and account nothing; distributed DP inside it would noise the SecAgg sum twice
            raise TypeError(
                f"{type(privacy).__name__} runs in "
                f"{'CentralPrivacyRound' if central else 'PrivacyRound'}, not "
                f"{type(self).__name__}: use privacy_round(settings, planned_rounds=...)"
            )
        self.privacy = privacy
        self.round_sample: RoundSample | None = None

    def before_round(self, ctx: RoundContext, server_round: int) -> None:
        self.round_sample = None  # a round never aggregates with another round's sample
        if isinstance(self.privacy, DistributedPrivacy):  # spent as soon as a sum is unmasked

            def commit() -> None:
                self._commit(ctx, server_round)

            self.privacy.commit = commit

    def _commit(self, ctx: RoundContext, server_round: int) -> None:
        """Sign what the round spent into the audit log, then commit the ledger: the signed
        log is the record the holder of the run directory cannot edit, so a crash after the
        release and before the round commits cannot make the resumed run forget it (the
        ledger is committed even if signing fails)."""
        try:
            self.privacy.sign_charge(server_round)
        finally:
            ctx.store.spend_privacy(server_round, self.privacy.ledger_json())

    def sample(
        self, ctx: RoundContext, server_round: int, nodes: list[str], params: Params
    ) -> list[str]:
        """The cohort from the mechanism's own sampler, after the budget check (never None:
        the driver's fallback, the seeded uniform sample, is not secret)."""
        sample = self.privacy.sample(nodes, ctx.config.clients_per_round, server_round)
        self.privacy.begin_round(server_round, sample, params)
        self.round_sample = sample
        return sample.selected

    def fit_config(self, ctx: RoundContext, server_round: int) -> Mapping[str, float]:
        return self.privacy.fit_config()

    def client_config_refusal(self) -> str:
        if not isinstance(self.privacy, CentralPrivacy):
            return ""  # local DP: each site noises its own update, whatever else it is told
        return (
            f"{self.privacy.settings.mode} DP keeps the round's sample secret (its accounting "
            "counts on it), and a per-client config would show it to the strategy, which "
            "post-processes the released model, and could single one site out"
        )

    def aggregated(self, ctx: RoundContext, server_round: int, fit: FitOutcome) -> None:
        # what was unmasked or aggregated is spent, even if the round then aborted, and
        # signed and committed before the noised model leaves for evaluation (a crash
        # between the two must not forget the round)
        self.privacy.spend(fit.reported)
        self._commit(ctx, server_round)

    def evaluation(self, ask: EvaluationAsk) -> EvaluationAsk:
        # under DP the sites' own losses, accuracies and counts of their data are outside
        # the mechanism: the sites evaluate only when the operator releases them
        release = ask.release_site_metrics and self.privacy.settings.release_site_metrics
        return dataclasses.replace(ask, release_site_metrics=release)

    def metrics(
        self,
        ctx: RoundContext,
        server_round: int,
        params: Params,
        evaluated: Sequence[EvaluateResult] | None,
    ) -> Mapping[str, Any]:
        return self.privacy.metrics()


class CentralPrivacyRound(PrivacyRound):
    """Central DP: the coordinator clips, noises and averages; the strategy post-processes."""

    privacy: CentralPrivacy

    def __init__(self, privacy: CentralPrivacy) -> None:
        super().__init__(privacy)

    def aggregate(
        self, ctx: RoundContext, server_round: int, params: Params, fit: FitOutcome
    ) -> tuple[Params, str]:
        # the noised mean is released whatever the count: aborting on too few updates
        # would tell, outside the noise, how many were sampled
        if self.round_sample is None:  # sample() runs first in every round
            raise RuntimeError(f"round {server_round}: central DP aggregated before sampling")
        release = self.privacy.aggregate(
            server_round, params, fit.results, sample=self.round_sample
        )
        mean = FitResult(node_id="dp-release", params=release, num_examples=1)
        return ctx.strategy.aggregate_fit(server_round, params, [mean]), ""


def privacy_round(settings: PrivacySettings, *, planned_rounds: int) -> PrivacyRound:
    """The mechanism for ``settings.mode`` as a plug-in: only central DP aggregates."""
    if settings.mode == "local":
        return PrivacyRound(LocalPrivacy(settings, planned_rounds=planned_rounds))
    if settings.mode == "distributed":
        return PrivacyRound(DistributedPrivacy(settings, planned_rounds=planned_rounds))
    return CentralPrivacyRound(CentralPrivacy(settings, planned_rounds=planned_rounds))
