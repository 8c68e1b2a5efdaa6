"""DP for a run: sample, noise, account, enforce the budget, and say what ε holds against whom.

The coordinator and ``fedops simulate`` both hand the round driver one of
:class:`CentralPrivacy`, :class:`DistributedPrivacy` or :class:`LocalPrivacy`;
the maths lives in :mod:`fedops.core.privacy`. Each round the driver asks the
privacy object to :meth:`~CentralPrivacy.sample` the cohort, to
:meth:`~CentralPrivacy.begin_round` (σ=auto and the budget, checked with the
worst case the round can end in), then to :meth:`~CentralPrivacy.spend` the
round, and commits the ledger (``RunStore.spend_privacy``) before the new
model leaves for evaluation. A resumed run restores the committed ledger.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedops.core.params import Params
from fedops.core.privacy.accountant import (
    PrivacyLedger,
    RoundEvent,
    epsilon_text,
    noise_for_target,
)
from fedops.core.privacy.central import AdaptiveClipping, private_mean
from fedops.core.results import FitResult
from fedops.core.rounds import poisson_sample, sample_clients, secret_fixed_sample

log = logging.getLogger("fedops.privacy")

SAMPLINGS = ("poisson", "fixed")


class BudgetExhausted(RuntimeError):
    """The next round would spend more ε than ``target_epsilon``; the run stops before it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivacySettings:
    """``privacy.*`` keys (and the coordinator's ``--noise-multiplier`` etc.)."""

    noise_multiplier: float | None = 1.0  # None: derived from target_epsilon ("auto")
    clip_norm: float = 1.0
    delta: float = 1e-5
    target_epsilon: float | None = None
    accountant: str = "pld"  # the headline; the other is reported beside it
    adaptive: AdaptiveClipping | None = None
    #: None: noise and sampling from the OS's CSPRNG (deployment); a seed makes both
    #: reproducible for experiments, and the guarantee then says it is not private
    seed: int | None = None
    mode: str = "central"  # central | distributed (clients add noise under SecAgg+) | local
    sampling: str = "poisson"  # poisson | fixed (m of N without replacement)
    #: write who took part in a DP round to the audit log and exports; amplification by
    #: sampling then no longer holds and the accountant reports the bound without it
    publish_participants: bool = False
    colluders: int = 0  # distributed: sites that may pool their noise shares with the server
    min_survivors: int = 1  # distributed: the fewest noise shares a committed round can hold
    release_site_metrics: bool = False  # sites' train loss and counts, in the clear


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundSample:
    """Who a round asked, out of how many, and what the mean divides by."""

    selected: list[str]
    population: int
    denominator: float  # central DP's fixed denominator: the expected cohort size


class CentralPrivacy:
    """DP-FedAvg's server side for one run (see :mod:`fedops.core.privacy.central`).

    The guarantee holds against everyone who sees only the released models
    (sites, evaluators, the public), not against the coordinator, which sees
    every update in the clear: central DP trusts its curator.
    """

    aggregates = True  # the driver aggregates through :meth:`aggregate`, not the strategy

    def __init__(self, settings: PrivacySettings, *, planned_rounds: int) -> None:
        if settings.noise_multiplier is None and settings.target_epsilon is None:
            raise ValueError("noise_multiplier=auto needs a target_epsilon")
        if settings.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {settings.sampling!r}")
        self.settings = settings
        self.planned_rounds = planned_rounds
        self.sigma = settings.noise_multiplier
        self.clip_norm = settings.clip_norm
        self.ledger = PrivacyLedger()
        #: the same rounds for a party that knows who took part (the coordinator's operator,
        #: readers of its audit log): no amplification by sampling
        self.known = PrivacyLedger()
        self._last: dict[str, Any] = {}
        self._event: RoundEvent | None = None
        self.population: int | None = None

    # -- what the clients are told ------------------------------------------------------------
    def fit_config(self) -> dict[str, float]:
        """Nothing: the coordinator adds the noise."""
        return {}

    def secure_noise(self) -> tuple[float, float] | None:
        """``(σ, clip)`` the clients add under SecAgg+ (distributed DP only)."""
        return None

    # -- the round ---------------------------------------------------------------------------
    def _rng(self, server_round: int, stream: int) -> np.random.Generator | None:
        """None (the CSPRNG) in a deployment; per (seed, round, stream) when seeded, so a
        resumed run draws new noise for new rounds (reusing noise would cancel it out)."""
        if self.settings.seed is None:
            return None
        return np.random.default_rng([self.settings.seed, server_round, stream])

    def sample(self, nodes: Sequence[str], per_round: int | None, server_round: int) -> RoundSample:
        """Poisson at q = m/N (or m of N) from a secret CSPRNG; see the module doc."""
        population = len(nodes)
        m = min(per_round or population, population)
        rng = self._rng(server_round, 1)
        if self.settings.sampling == "poisson":
            selected = poisson_sample(nodes, m / population, rng)
        elif rng is None:
            selected = secret_fixed_sample(nodes, m)
        else:
            selected = sample_clients(nodes, m, seed=int(rng.integers(2**62)), server_round=0)
        return RoundSample(selected=selected, population=population, denominator=float(m))

    def round_event(self, sample: RoundSample, sigma: float) -> RoundEvent:
        """The mechanism this round runs, as seen by a reader of the released model."""
        m, n = round(sample.denominator), sample.population
        if self.settings.publish_participants:
            return RoundEvent(noise_multiplier=sigma, sampling="known")
        if self.settings.sampling == "fixed":
            return RoundEvent(noise_multiplier=sigma, sampling="fixed", population=n, sample_size=m)
        return RoundEvent(noise_multiplier=sigma, sampling="poisson", sample_rate=m / n)

    def headline(self) -> str:
        return "rdp" if self.settings.sampling == "fixed" else self.settings.accountant

    def begin_round(self, server_round: int, sample: RoundSample, params: Params) -> None:
        """Derive σ (auto) and raise :class:`BudgetExhausted` if this round could pass the
        target, before anything of it is released."""
        self.population = sample.population
        self._last = {}
        if self.sigma is None:
            template = self.round_event(sample, 1.0)
            self.sigma = self._calibrate(template)
        self._event = self.worst_case_event(sample, params)
        self._check(server_round, self._event)

    def _calibrate(self, template: RoundEvent) -> float:
        """The σ whose rounds reach the target after the planned rounds."""
        target = self.settings.target_epsilon or 0.0
        sigma = noise_for_target(
            target, self.settings.delta, template, self.planned_rounds, self.headline()
        )
        log.info(
            "noise_multiplier=auto: σ=%.4f reaches ε=%g after %d rounds (%s)",
            sigma,
            target,
            self.planned_rounds,
            template.sampling,
        )
        return sigma

    def worst_case_event(self, sample: RoundSample, params: Params) -> RoundEvent:
        assert self.sigma is not None
        return self.round_event(sample, self.sigma)

    def _check(self, server_round: int, event: RoundEvent) -> None:
        target = self.settings.target_epsilon
        if target is None:
            return
        delta, accountant = self.settings.delta, self.headline()
        after = self.ledger.with_round(event).epsilon(delta, accountant)
        if after > target * (1 + 1e-9):
            spent = self.ledger.epsilon(delta, accountant)
            raise BudgetExhausted(
                f"privacy budget reached: round {server_round} could raise ε from "
                f"{spent:.4g} to {after:.4g} (δ={delta:g}), above the target "
                f"ε={target:g} (privacy.target_epsilon, --target-epsilon); the run stops "
                f"after {server_round - 1} rounds"
            )

    def aggregate(
        self,
        server_round: int,
        current: Params,
        results: Sequence[FitResult],
        *,
        sample: RoundSample,
    ) -> Params:
        """The clipped, noised mean over the fixed denominator; spends the round."""
        assert self.sigma is not None and self._event is not None
        adaptive = self.settings.adaptive
        sigma = self.sigma if adaptive is None else adaptive.update_noise(self.sigma)
        new, noise = private_mean(
            current,
            [r.params for r in results],
            denominator=sample.denominator,
            clip_norm=self.clip_norm,
            noise_multiplier=self.sigma,
            rng=self._rng(server_round, 2) or np.random.default_rng(),
            adaptive=adaptive,
        )
        self.ledger.record(self._event)
        self.known.record(RoundEvent(noise_multiplier=self._event_sigma(), sampling="known"))
        self._last = {"clip_norm": noise.clip_norm, "update_noise_multiplier": sigma}
        if adaptive is not None:
            self._last |= {
                "next_clip_norm": noise.next_clip_norm,
                "dp_noised_unclipped_fraction": noise.noised_unclipped_fraction,
            }
        self.clip_norm = noise.next_clip_norm
        return new

    def _amplified(self) -> bool:
        """Whether sampling made ε smaller than for a party that knows who took part."""
        if not self.known.rounds:
            return False
        known = self.known.epsilon(self.settings.delta, self.headline())
        return known > self.epsilon() * (1 + 1e-6)

    def _event_sigma(self) -> float:
        assert self._event is not None
        return self._event.noise_multiplier

    def spend(self, reported: Sequence[Any]) -> None:
        """Central DP spent its round in :meth:`aggregate`."""

    # -- resume and reporting ----------------------------------------------------------------
    def ledger_json(self) -> dict[str, Any]:
        return {
            "events": self.ledger.to_json(),
            "known_events": self.known.to_json(),
            "sigma": self.sigma,
            "clip_norm": self.clip_norm,
        }

    def restore(self, saved: Any) -> None:
        """Re-spend the rounds a resumed run already released (its committed ledger)."""
        if saved is None:
            return
        if not isinstance(saved, dict) or "events" not in saved:
            raise ValueError("the stored privacy ledger is not a JSON object with 'events'")
        self.ledger = PrivacyLedger.from_json(saved["events"])
        self.known = PrivacyLedger.from_json(saved.get("known_events", []))
        if saved.get("sigma") is not None:
            self.sigma = float(saved["sigma"])
        self.clip_norm = float(saved.get("clip_norm", self.clip_norm))

    def epsilon(self) -> float:
        return self.ledger.epsilon(self.settings.delta, self.headline())

    def metrics(self) -> dict[str, Any]:
        """ε so far (the headline accountant and the other beside it), δ, this round's DP."""
        s = self.settings
        out: dict[str, Any] = {
            "epsilon": epsilon_text(self.epsilon()),
            "delta": s.delta,
            "accountant": self.headline(),
            "privacy_mechanism": self.mechanism(),
            "noise_multiplier": self.sigma,
            **self._last,
        }
        if self._event is not None:
            out["privacy_event"] = self._event.to_json()
        if self._amplified():
            out["epsilon_known_participants"] = epsilon_text(
                self.known.epsilon(s.delta, self.headline())
            )
        other = "rdp" if self.headline() == "pld" else "pld"
        if other == "rdp" or self.ledger.headline_accountant() == "pld":
            out[f"epsilon_{other}"] = epsilon_text(self.ledger.epsilon(s.delta, other))
        return out

    def mechanism(self) -> str:
        """Sampling, adjacency and the accountant, in words."""
        s = self.settings
        if s.publish_participants:
            sampling = "participants published (no amplification by sampling)"
        elif s.sampling == "poisson":
            sampling = "secret Poisson sampling of clients"
        else:
            sampling = "secret sampling of a fixed number of clients without replacement"
        adjacency = (
            "replace-one"
            if s.sampling == "fixed" and not s.publish_participants
            else ("add/remove-one")
        )
        return f"{sampling}, {adjacency} client adjacency, {self.headline().upper()} accountant"

    def seeded_note(self) -> str:
        if self.settings.seed is None:
            return ""
        return (
            f"; noise and sampling seeded by privacy.seed={self.settings.seed}: reproducible, "
            "so NOT private (for experiments only)"
        )

    def guarantee(self) -> str:
        """One sentence for the summary, the audit log and the console."""
        s = self.settings
        eps = self.epsilon()
        sigma = f"σ={self.sigma:.3g}" if self.sigma is not None else "σ=auto"
        clip = f"{'adaptive clip from' if s.adaptive else 'clip'} {s.clip_norm:g}"
        known = ""
        if self._amplified():
            known = (
                f"; against anyone who learns who took part (the coordinator's state, audit "
                f"log and exports name the participants) "
                f"ε={self.known.epsilon(s.delta, self.headline()):.3g}"
            )
        return (
            f"(ε={eps:.3g}, δ={s.delta:g}) user-level central DP over {self.ledger.rounds} "
            f"rounds ({self.mechanism()}; {sigma}, {clip}); holds against anyone who sees "
            f"only the released models{known}; none against the coordinator, which sees "
            f"every update{self.seeded_note()}"
        )


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

    aggregates = False  # SecAgg+ decodes the noised mean

    def __init__(self, settings: PrivacySettings, *, planned_rounds: int) -> None:
        if settings.adaptive is not None:
            raise ValueError("adaptive clipping is not available with distributed DP")
        super().__init__(settings, planned_rounds=planned_rounds)
        self._cohort = 0
        self._dimension = 0

    def secure_noise(self) -> tuple[float, float] | None:
        assert self.sigma is not None
        return self.sigma, self.clip_norm

    def headline(self) -> str:
        return self.settings.accountant

    def sample(self, nodes: Sequence[str], per_round: int | None, server_round: int) -> RoundSample:
        """The coordinator knows the cohort whatever the sampling: no secret needed."""
        population = len(nodes)
        m = min(per_round or population, population)
        rng = self._rng(server_round, 1)
        selected = (
            secret_fixed_sample(nodes, m)
            if rng is None
            else sample_clients(nodes, m, seed=int(rng.integers(2**62)), server_round=0)
        )
        return RoundSample(selected=selected, population=population, denominator=float(m))

    def effective(self, sigma: float, survivors: int) -> float:
        """σ left in the sum that the coordinator cannot subtract, over the true sensitivity."""
        from fedops.core.secagg.update import round_encoding

        n, c = self._cohort, self.settings.colluders
        honest = max(survivors - c, 0)
        if n == 0 or honest == 0 or sigma == 0:
            return 0.0
        levels = round_encoding(
            summands=n, cohort=n, clip=self.clip_norm, max_examples=1, noise=(sigma, self.clip_norm)
        ).quantizer.levels
        rounding = 1 + math.sqrt(self._dimension) / (levels / 2)
        return sigma * math.sqrt(honest / n) / rounding

    def worst_case_event(self, sample: RoundSample, params: Params) -> RoundEvent:
        assert self.sigma is not None
        self._cohort = len(sample.selected)
        self._dimension = sum(int(np.size(v)) for v in params.values())
        fewest = min(max(self.settings.min_survivors, 1), self._cohort)
        sigma = self.effective(self.sigma, fewest)
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
        fewest = max(1, min(self.settings.min_survivors, self._cohort or 1))
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
        super().begin_round(server_round, sample, params)

    def spend(self, reported: Sequence[Any]) -> None:
        """Account the round with the noise its survivors actually left."""
        assert self.sigma is not None
        if not self._cohort:
            return
        effective = self.effective(self.sigma, len(reported))
        event = RoundEvent(noise_multiplier=effective, sampling="known")
        self.ledger.record(event)
        self._event = event
        self._last = {"effective_noise_multiplier": effective, "clip_norm": self.clip_norm}

    def mechanism(self) -> str:
        c = self.settings.colluders
        return (
            "known participation (no amplification by sampling), add/remove-one client "
            f"adjacency, up to {c} colluding site{'s' if c != 1 else ''}, "
            f"{self.headline().upper()} accountant"
        )

    def guarantee(self) -> str:
        s = self.settings
        return (
            f"(ε={self.epsilon():.3g}, δ={s.delta:g}) user-level distributed DP over "
            f"{self.ledger.rounds} rounds ({self.mechanism()}; σ={self.sigma:.3g} split "
            f"among the sampled clients, clip {s.clip_norm:g}); holds against the "
            f"coordinator and anyone who sees the released models{self.seeded_note()}"
        )


class LocalPrivacy:
    """``privacy=local``: every site runs DP-SGD (Opacus) and enforces its own ε limit.

    The coordinator only asks for it (noise multiplier, max grad norm, δ in the fit
    config), aggregates as usual, and reports the largest ε a site reported: each
    site's records are (ε, δ)-DP against everyone else, the coordinator included,
    with noise from the site's own OS entropy and a ledger kept at the site.
    """

    aggregates = False

    def __init__(self, settings: PrivacySettings, *, planned_rounds: int) -> None:
        if settings.noise_multiplier is None and settings.target_epsilon is None:
            raise ValueError("local DP needs a noise_multiplier or a target_epsilon")
        if settings.noise_multiplier is not None and settings.target_epsilon is not None:
            raise ValueError(
                "local DP takes noise_multiplier or target_epsilon, not both: each site "
                "enforces its own limit (--max-epsilon)"
            )
        self.settings = settings
        self.planned_rounds = planned_rounds
        self.epsilon = 0.0
        self.site_delta = 0.0  # the largest δ a site accounted at (each at most its own)
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

    def sample(self, nodes: Sequence[str], per_round: int | None, server_round: int) -> RoundSample:
        seed = self.settings.seed or 0
        selected = sample_clients(nodes, per_round, seed=seed, server_round=server_round)
        return RoundSample(selected=selected, population=len(nodes), denominator=len(selected))

    def ledger_json(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "site_delta": self.site_delta, "rounds": self.rounds}

    def restore(self, saved: Any) -> None:
        if isinstance(saved, dict):
            self.epsilon = float(saved.get("epsilon", 0.0))
            self.site_delta = float(saved.get("site_delta", 0.0))
            self.rounds = int(saved.get("rounds", 0))

    def begin_round(self, server_round: int, sample: RoundSample, params: Params) -> None:
        """Sites enforce their own limits (``--max-epsilon``) and decline when it is reached."""

    def secure_noise(self) -> tuple[float, float] | None:
        return None

    def spend(self, reported: Sequence[Any]) -> None:
        site = [float(r.metrics["local_epsilon"]) for r in reported if "local_epsilon" in r.metrics]
        self.epsilon = max([self.epsilon, *site])
        deltas = [float(r.metrics["local_delta"]) for r in reported if "local_delta" in r.metrics]
        self.site_delta = max([self.site_delta, *deltas])
        self.rounds += 1

    def metrics(self) -> dict[str, Any]:
        s = self.settings
        return {
            "epsilon": epsilon_text(self.epsilon),
            "delta": self.site_delta or s.delta,
            "noise_multiplier": s.noise_multiplier if s.noise_multiplier is not None else "auto",
            "clip_norm": s.clip_norm,
        }

    def guarantee(self) -> str:
        s = self.settings
        sigma = f"σ={s.noise_multiplier:g}" if s.noise_multiplier is not None else "σ per site"
        delta = self.site_delta or s.delta
        return (
            f"(ε={self.epsilon:.3g}, δ={delta:g}) record-level local DP at every site, "
            f"{self.rounds} rounds of this run (DP-SGD with Opacus: Poisson sampling of "
            f"records, add/remove-one record adjacency, PLD accountant at the site; {sigma}, "
            f"max grad norm {s.clip_norm:g}; ε is the largest any site reported, over every "
            "round that site trained with DP in any run, δ the largest a site accounted at; "
            "each site keeps and enforces its own ledger); holds against the coordinator, "
            "the other sites and anyone who sees the released models"
        )


Privacy = CentralPrivacy | LocalPrivacy


def restore_ledger(privacy: Privacy, saved: Any, metrics: Sequence[Mapping[str, Any]]) -> None:
    """Restore from the committed ledger; refuse a run that spent DP rounds but lost it."""
    spent = any("epsilon" in row for row in metrics)
    if saved is None and spent:
        raise ValueError(
            "this run directory holds DP rounds but no committed privacy ledger "
            "(state.sqlite's privacy_spent): refusing to resume and under-report ε"
        )
    privacy.restore(saved)
