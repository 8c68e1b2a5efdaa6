"""Distributed DP under SecAgg+: accounted without amplification, with what the coordinator
cannot subtract (dropouts, colluders, the rounding to the integer grid)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fedops.core.params import Params
from fedops.core.privacy.accountant import RoundEvent, noise_for_target
from fedops.runtime.privacy.central_dp import CentralPrivacy
from fedops.runtime.privacy.privacy_settings import PrivacySettings, RoundSample
from fedops.runtime.privacy.regime import PrivacyResumeRefused, refused_guarantee

log = logging.getLogger("fedops.privacy")


class DistributedPrivacy(CentralPrivacy):
    """``privacy=distributed``: the clients clip and add Skellam noise before SecAgg+ masks.

    The coordinator only ever sees the noised sum, but it picks the cohort and
    learns the survivors, so the guarantee against it is the Gaussian mechanism
    *without* amplification by sampling, and it is also the one reported for
    readers of the model (which reveals how many updates it averages). Each of
    the ``n`` sampled clients adds ``1/n`` of the noise variance; ``s``
    survivors of which ``c`` collude with the coordinator (each knows its own
    share) leave ``σ·√((s − c)/n)``. Stochastic rounding to the integer grid
    moves a clipped update by up to ``√d`` grid units beyond its ``S = levels/2``,
    so the noise multiplier is further divided by ``1 + √d/S``. The budget is
    checked with the fewest survivors a committed round may have. Skellam noise
    of µ ~ 1e10 is accounted as the Gaussian of its variance (Agarwal et al. 2021).
    """

    KNOWN_TWINS = False  # its events are already a known party's (no amplification)

    def __init__(self, settings: PrivacySettings, *, planned_rounds: int) -> None:
        if settings.adaptive is not None:
            raise ValueError("adaptive clipping is not available with distributed DP")
        super().__init__(settings, planned_rounds=planned_rounds)
        self._cohort = 0
        self._dimension = 0
        self._charged = False  # this round's sum was unmasked and spent (:meth:`unmasked`)
        self._survivors = 0
        #: signs the charge and commits the ledger as it now is (set each round by the
        #: round plug-in)
        self.commit: Callable[[], None] = lambda: None

    def secure_noise(self) -> tuple[float, float] | None:
        assert self.sigma is not None
        return self.sigma, self.clip_norm

    def survivor_floor(self) -> int:
        """The worst case the budget was checked with: sealed into the round's encoding,
        so no honest site signs (or reveals for) a sum with fewer noise shares."""
        return self._fewest()

    def _fewest(self) -> int:
        return max(1, min(self.settings.min_survivors, self._cohort or 1))

    def headline(self) -> str:
        return self.settings.accountant

    def sample(self, nodes: Sequence[str], per_round: int | None, server_round: int) -> RoundSample:
        """The coordinator knows the cohort whatever the sampling: no secret needed."""
        population = len(nodes)
        m = min(per_round or population, population)
        selected = self._fixed_sample(nodes, m, self._rng(server_round, 1))
        return RoundSample(selected=selected, population=population, denominator=float(m))

    def effective(self, sigma: float, survivors: int) -> float:
        """σ left in the sum that the coordinator cannot subtract, over the true sensitivity:
        what the sites' own policy computes (``implied_noise_multiplier``) for the grid
        the coordinator sends, over the ``survivors − colluders`` honest shares."""
        from fedops.core.secagg.policy import implied_noise_multiplier
        from fedops.core.secagg.update import round_encoding

        n, c = self._cohort, self.settings.colluders
        honest = max(survivors - c, 0)
        if n == 0 or honest == 0 or sigma == 0:
            return 0.0
        encoding = round_encoding(
            summands=n,
            cohort=n,
            clip=self.clip_norm,
            max_examples=1,
            noise=(sigma, self.clip_norm),
            dimension=self._dimension,
        )
        return implied_noise_multiplier(encoding, honest, self._dimension)

    def worst_case_event(self, sample: RoundSample, params: Params) -> RoundEvent:
        assert self.sigma is not None  # begin_round has set the cohort and the dimension
        sigma = self.effective(self.sigma, self._fewest())
        return RoundEvent(noise_multiplier=sigma, sampling="known")

    def _calibrate(self, template: RoundEvent) -> float:
        # the worst case scales σ by a factor that depends on σ itself (the grid): iterate
        target = self.settings.target_epsilon or 0.0
        base = noise_for_target(
            target,
            self.settings.delta,
            RoundEvent(noise_multiplier=1.0, sampling="known"),
            self.planned_rounds,
            self.headline(),
        )
        fewest = self._fewest()
        sigma = base
        for _ in range(8):
            ratio = self.effective(sigma, fewest) / sigma if sigma > 0 else 1.0
            if ratio <= 0:
                raise ValueError(
                    f"privacy.colluders={self.settings.colluders} leave no honest noise "
                    f"among the {fewest} fewest survivors"
                )
            sigma = base / ratio
        log.info(
            "noise_multiplier=auto: σ=%.4f reaches ε=%g after %d rounds",
            sigma,
            target,
            self.planned_rounds,
        )
        return sigma

    def begin_round(self, server_round: int, sample: RoundSample, params: Params) -> None:
        self._cohort = len(sample.selected)
        self._dimension = sum(int(np.size(v)) for v in params.values())
        self._charged = False
        super().begin_round(server_round, sample, params)

    def unmasked(self, survivors: int) -> None:
        """The coordinator has just unmasked a sum of ``survivors`` noise shares: spent,
        signed into the audit log and committed now (:attr:`commit`), whatever fails after
        (decoding it, the strategy), so the round is never forgotten and a re-run of it on
        resume is charged again."""
        self._charge(survivors)
        self._charged = True
        self.commit()

    def spend(self, reported: Sequence[Any]) -> None:
        """Account the round with the noise its survivors actually left (once: a sum
        :meth:`unmasked` charged is not charged again)."""
        if self._charged:
            return
        if not self._cohort or not reported:
            # nothing was unmasked (the round aborted before the sum): nothing was released
            self._last = {"effective_noise_multiplier": None, "clip_norm": self.clip_norm}
            return
        self._charge(len(reported))

    def _charge(self, survivors: int) -> None:
        assert self.sigma is not None
        effective = self.effective(self.sigma, survivors)
        event = RoundEvent(noise_multiplier=effective, sampling="known")
        self.ledger.record(event)
        self._event = event
        self._unsigned = True  # seen: signed before the ledger commits (sign_charge)
        self._last = {"effective_noise_multiplier": effective, "clip_norm": self.clip_norm}
        self._survivors = survivors

    def _charge_details(self) -> dict[str, Any]:
        return {
            "effective_noise_multiplier": self._last["effective_noise_multiplier"],
            "survivors": self._survivors,
        }

    def restore(self, saved: Any) -> None:
        """As central DP's, but every round must be accounted as a known party sees it: the
        coordinator picks the cohort, so no event of a distributed ledger is amplified by
        sampling (one that is came from elsewhere, e.g. an edited state.sqlite)."""
        super().restore(saved)
        amplified = sorted({e.sampling for e, _ in self.ledger.history} - {"known"})
        if amplified:
            raise PrivacyResumeRefused(
                f"the privacy ledger in state.sqlite holds rounds sampled {amplified[0]!r}, "
                "which distributed DP never accounts (its coordinator knows who took part): "
                "it was edited; refusing to resume under a claim its rounds never had"
            )

    def holds_against(self) -> str:
        c = self.settings.colluders
        return (
            f"the coordinator, up to {c} colluding site{'s' if c != 1 else ''}, and anyone "
            "who sees the released models or the run's records"
        )

    def mechanism(self) -> str:
        c = self.settings.colluders
        return (
            "known participation (no amplification by sampling), add/remove-one client "
            f"adjacency, up to {c} colluding site{'s' if c != 1 else ''}, "
            f"{self.headline().upper()} accountant"
        )

    def guarantee(self) -> str:
        if self.refusal:
            return refused_guarantee(self.refusal)
        s = self.settings
        sigma, clip = self.noise_text(" split among the sampled clients")
        return (
            f"(ε={self.epsilon():.3g}, δ={s.delta:g}) user-level distributed DP over "
            f"{self.ledger.rounds} rounds ({self.mechanism()}; {sigma}, {clip}); holds "
            f"against the coordinator and anyone who sees the released models"
            f"{self.seeded_note()}"
        )
