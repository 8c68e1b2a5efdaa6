"""Central DP for a run: noise each round, account for it, enforce the budget, say what ε is.

The coordinator and ``fedops simulate`` both hand the round driver a
:class:`CentralPrivacy`; the maths lives in :mod:`fedops.core.privacy`. The
ledger of ``(σ, q, rounds)`` is rebuilt from the stored metrics when a run
resumes, so a restart never forgets rounds it already spent.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedops.core.params import Params
from fedops.core.privacy.accountant import PrivacyLedger, noise_for_target
from fedops.core.privacy.central import AdaptiveClipping, private_mean
from fedops.core.results import FitResult

log = logging.getLogger("fedops.privacy")

#: PRV ε is reported beside RDP's when it computes within this many rounds of history entries
PRV_MAX_ENTRIES = 64


class BudgetExhausted(RuntimeError):
    """The next round would spend more ε than ``target_epsilon``; the run stops before it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivacySettings:
    """``privacy.*`` keys (and the coordinator's ``--noise-multiplier`` etc.)."""

    noise_multiplier: float | None = 1.0  # None: derived from target_epsilon ("auto")
    clip_norm: float = 1.0
    delta: float = 1e-5
    target_epsilon: float | None = None
    accountant: str = "rdp"
    adaptive: AdaptiveClipping | None = None
    seed: int | None = None  # None: fresh entropy (deployment); a seed makes noise reproducible
    mode: str = "central"  # central | distributed (clients add noise under SecAgg+) | local


class CentralPrivacy:
    """DP-FedAvg's server side for one run (see :mod:`fedops.core.privacy.central`)."""

    aggregates = True  # the driver aggregates through :meth:`aggregate`, not the strategy

    def __init__(self, settings: PrivacySettings, *, planned_rounds: int) -> None:
        if settings.noise_multiplier is None and settings.target_epsilon is None:
            raise ValueError("noise_multiplier=auto needs a target_epsilon")
        self.settings = settings
        self.planned_rounds = planned_rounds
        self.sigma = settings.noise_multiplier
        self.clip_norm = settings.clip_norm
        self.ledger = PrivacyLedger()
        self._last: dict[str, Any] = {}
        self.population: int | None = None
        self.sampled = 0

    def fit_config(self) -> dict[str, float]:
        """What the clients are told (nothing: the coordinator adds the noise)."""
        return {}

    def secure_noise(self) -> tuple[float, float] | None:
        """``(σ, clip)`` the clients add under SecAgg+ (distributed DP only)."""
        return None

    def restore(self, metrics: Sequence[Mapping[str, Any]]) -> None:
        """Re-spend the rounds a resumed run already committed."""
        for row in metrics:
            if "noise_multiplier" in row and "sample_rate" in row:
                spent = row.get("effective_noise_multiplier", row["noise_multiplier"])
                self.ledger.record(float(spent), float(row["sample_rate"]))
                self.sigma = float(row["noise_multiplier"])
                self.clip_norm = float(row.get("next_clip_norm", row["clip_norm"]))

    def check_budget(self, server_round: int, sampled: int, population: int) -> None:
        """Raise :class:`BudgetExhausted` if this round would push ε past the target."""
        q = sampled / population
        self.population, self.sampled = population, sampled
        self._last = {}  # this round's DP parameters, once it aggregates
        if self.sigma is None:
            self.sigma = noise_for_target(
                self.settings.target_epsilon or 0.0,
                self.settings.delta,
                q,
                self.planned_rounds,
                self.settings.accountant,
            )
            log.info(
                "noise_multiplier=auto: σ=%.4f reaches ε=%g after %d rounds at q=%.4g",
                self.sigma,
                self.settings.target_epsilon,
                self.planned_rounds,
                q,
            )
        target = self.settings.target_epsilon
        if target is None:
            return
        trial = PrivacyLedger(history=list(self.ledger.history))
        trial.record(self.sigma, q)
        after = trial.epsilon(self.settings.delta, self.settings.accountant)
        if after > target * (1 + 1e-9):
            spent = self.ledger.epsilon(self.settings.delta, self.settings.accountant)
            raise BudgetExhausted(
                f"privacy budget reached: round {server_round} would raise ε from "
                f"{spent:.4g} to {after:.4g} (δ={self.settings.delta:g}), above the target "
                f"ε={target:g} (privacy.target_epsilon, --target-epsilon); the run stops "
                f"after {server_round - 1} rounds"
            )

    def aggregate(
        self,
        server_round: int,
        current: Params,
        results: Sequence[FitResult],
        *,
        sampled: int,
        population: int,
    ) -> Params:
        assert self.sigma is not None
        new, noise = private_mean(
            current,
            [r.params for r in results],
            sampled=sampled,
            clip_norm=self.clip_norm,
            noise_multiplier=self.sigma,
            rng=self._rng(server_round),
            adaptive=self.settings.adaptive,
        )
        q = sampled / population
        self.ledger.record(self.sigma, q)
        self._last = {
            "noise_multiplier": self.sigma,
            "clip_norm": noise.clip_norm,
            "next_clip_norm": noise.next_clip_norm,
            "dp_clipped_fraction": noise.clipped_fraction,
            "sample_rate": q,
        }
        self.clip_norm = noise.next_clip_norm
        return new

    def _rng(self, server_round: int) -> np.random.Generator:
        """Fresh entropy in a deployment; per (seed, round) in a simulation, so a resumed run
        draws new noise for new rounds (reusing a round's noise would cancel it out)."""
        if self.settings.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self.settings.seed, server_round])

    def metrics(self, reported: Sequence[Any] = ()) -> dict[str, Any]:
        """ε so far (RDP, and PRV when cheap), δ and this round's DP parameters."""
        s = self.settings
        out = {
            "epsilon": self.ledger.epsilon(s.delta, s.accountant),
            "delta": s.delta,
            **self._last,
        }
        if s.accountant == "rdp" and len(self.ledger.history) <= PRV_MAX_ENTRIES:
            # PRV's discretisation can fail far out in the tails: then only RDP is reported
            with contextlib.suppress(ValueError, RuntimeError, OverflowError):
                out["epsilon_prv"] = self.ledger.epsilon(s.delta, "prv")
        return out

    def guarantee(self) -> str:
        """One sentence for the summary and the log."""
        s, population = self.settings, self.population
        eps = self.ledger.epsilon(s.delta, s.accountant)
        rounds = self.ledger.rounds
        rates = {q for _, q, _ in self.ledger.history}
        per_round = ""
        if population and len(rates) == 1:
            per_round = (
                f", {round(next(iter(rates)) * population)} of {population} clients per round"
            )
        sigma = f"σ={self.sigma:.3g}" if self.sigma is not None else "σ=auto"
        return (
            f"(ε={eps:.3g}, δ={s.delta:g}) user-level DP over {rounds} rounds{per_round} "
            f"({s.accountant.upper()} accountant, {sigma}, "
            f"{'adaptive clip from' if s.adaptive else 'clip'} {s.clip_norm:g})"
        )


class DistributedPrivacy(CentralPrivacy):
    """``privacy=distributed``: the clients clip and add Skellam noise before SecAgg+ masks.

    The coordinator only ever sees the noised sum. Each sampled client adds
    ``1/n`` of the noise variance, so when clients drop out the sum carries
    less noise: the round is accounted with ``σ_eff = σ·√(survivors/sampled)``
    (reported as ``effective_noise_multiplier``). Skellam noise with the large
    parameters used here is accounted as the Gaussian of the same variance
    (Agarwal et al. 2021 show the gap vanishes as µ grows; µ is ~1e10).
    """

    aggregates = False  # SecAgg+ decodes the noised mean

    def __init__(self, settings: PrivacySettings, *, planned_rounds: int) -> None:
        if settings.adaptive is not None:
            raise ValueError("adaptive clipping is not available with distributed DP")
        super().__init__(settings, planned_rounds=planned_rounds)

    def secure_noise(self) -> tuple[float, float] | None:
        assert self.sigma is not None
        return self.sigma, self.clip_norm

    def metrics(self, reported: Sequence[Any] = ()) -> dict[str, Any]:
        survivors = len(reported)
        if survivors and self.sigma is not None and self.sampled:
            effective = self.sigma * math.sqrt(survivors / self.sampled)
            q = self.sampled / (self.population or self.sampled)
            self.ledger.record(effective, q)
            self._last = {
                "noise_multiplier": self.sigma,
                "effective_noise_multiplier": effective,
                "clip_norm": self.clip_norm,
                "sample_rate": q,
            }
        return super().metrics(reported)


class LocalPrivacy:
    """``privacy=local``: every site runs DP-SGD (Opacus) and enforces its own ε limit.

    The coordinator only asks for it (noise multiplier, max grad norm, δ in the fit
    config), aggregates as usual, and reports the largest ε a site reported: each
    site's records are (ε, δ)-DP against everyone else, the coordinator included.
    """

    aggregates = False

    def __init__(self, settings: PrivacySettings, *, planned_rounds: int) -> None:
        if settings.noise_multiplier is None and settings.target_epsilon is None:
            raise ValueError("local DP needs a noise_multiplier or a target_epsilon")
        self.settings = settings
        self.planned_rounds = planned_rounds
        self.epsilon = 0.0
        self.rounds = 0

    def fit_config(self) -> dict[str, float]:
        s = self.settings
        out = {"dp_max_grad_norm": s.clip_norm, "dp_delta": s.delta}
        if s.noise_multiplier is None:  # auto: every site derives σ from its own data size
            assert s.target_epsilon is not None
            out |= {"dp_target_epsilon": s.target_epsilon, "dp_rounds": self.planned_rounds}
        else:
            out["dp_noise_multiplier"] = s.noise_multiplier
        return out

    def restore(self, metrics: Sequence[Mapping[str, Any]]) -> None:
        for row in metrics:
            self.epsilon = max(self.epsilon, float(row.get("epsilon", 0.0)))
            self.rounds += 1

    def check_budget(self, server_round: int, sampled: int, population: int) -> None:
        """Sites enforce their own limits (``--max-epsilon``) and decline when it is reached."""

    def secure_noise(self) -> tuple[float, float] | None:
        return None

    def metrics(self, reported: Sequence[Any] = ()) -> dict[str, Any]:
        site = [float(r.metrics["local_epsilon"]) for r in reported if "local_epsilon" in r.metrics]
        self.epsilon = max([self.epsilon, *site])
        self.rounds += 1
        s = self.settings
        return {
            "epsilon": self.epsilon,
            "delta": s.delta,
            "noise_multiplier": s.noise_multiplier if s.noise_multiplier is not None else "auto",
            "clip_norm": s.clip_norm,
        }

    def guarantee(self) -> str:
        s = self.settings
        sigma = f"σ={s.noise_multiplier:g}" if s.noise_multiplier is not None else "σ per site"
        return (
            f"(ε={self.epsilon:.3g}, δ={s.delta:g}) record-level DP at every site over "
            f"{self.rounds} rounds (local DP-SGD with Opacus, {sigma}, max grad norm "
            f"{s.clip_norm:g}; ε is the largest any site reported)"
        )
