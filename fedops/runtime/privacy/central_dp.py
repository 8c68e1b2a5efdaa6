"""Central DP-FedAvg's server side: secret sampling, the noised mean, the budget, the claim."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedops.core.params import Params
from fedops.core.privacy.accountant import (
    PrivacyLedger,
    RoundEvent,
    epsilon_text,
    known_event,
    noise_for_target,
)
from fedops.core.privacy.central import private_mean
from fedops.core.privacy.noise import SecureNormal
from fedops.core.results import FitResult
from fedops.core.rounds import poisson_sample, sample_clients, secret_fixed_sample
from fedops.runtime.privacy.ledger_log import missing_rounds
from fedops.runtime.privacy.privacy_settings import (
    SAMPLINGS,
    BudgetExhausted,
    PrivacySettings,
    RoundSample,
)
from fedops.runtime.privacy.regime import refused_guarantee, regime_of

log = logging.getLogger("fedops.privacy")


class CentralPrivacy:
    """DP-FedAvg's server side for one run (see :mod:`fedops.core.privacy.central`).

    The guarantee holds against everyone who sees only the released models
    (sites, evaluators, the public), not against the coordinator, which sees
    every update in the clear: central DP trusts its curator.
    """

    #: whether the ledger keeps each round's twin for a party that knows who took part
    KNOWN_TWINS = True

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
        self._unsigned = False  # a charge not yet signed into the audit log (sign_charge)
        #: what took more than one value over the run's rounds ("σ", "clip"): the claim
        #: then names none of them alone
        self.varied: set[str] = set()
        self.population: int | None = None
        #: why resuming the run was refused (:func:`~fedops.runtime.privacy.restore_ledger`):
        #: it then claims no guarantee
        self.refusal = ""

    # -- what the clients are told ------------------------------------------------------------
    def fit_config(self) -> dict[str, float]:
        """Nothing: the coordinator adds the noise."""
        return {}

    def secure_noise(self) -> tuple[float, float] | None:
        """``(σ, clip)`` the clients add under SecAgg+ (distributed DP only)."""
        return None

    def survivor_floor(self) -> int:
        """Fewest SecAgg+ survivors the accounting assumes (distributed DP only; 0: none)."""
        return 0

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
        else:
            selected = self._fixed_sample(nodes, m, rng)
        return RoundSample(selected=selected, population=population, denominator=float(m))

    @staticmethod
    def _fixed_sample(nodes: Sequence[str], m: int, rng: np.random.Generator | None) -> list[str]:
        """``m`` of ``nodes`` without replacement: from the CSPRNG, or ``rng`` when seeded."""
        if rng is None:
            return secret_fixed_sample(nodes, m)
        return sample_clients(nodes, m, seed=int(rng.integers(2**62)), server_round=0)

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
            rng=self._rng(server_round, 2) or SecureNormal(),
            adaptive=adaptive,
        )
        self.ledger.record(self._event)
        self.known.record(known_event(self._event))
        self._unsigned = True  # released: signed before the ledger commits (sign_charge)
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

    def spend(self, reported: Sequence[Any]) -> None:
        """Central DP spent its round in :meth:`aggregate`."""

    def sign_charge(self, server_round: int) -> None:
        """Sign the round's charge into the audit log (``privacy_charged``: its event and ε
        so far), once, before the ledger is committed: the signed log, which the holder of
        the run directory cannot edit, then knows the round was spent even if the
        coordinator stops before committing the round."""
        sign, event = self.settings.sign_charge, self._event
        if not self._unsigned or sign is None or event is None:
            return
        self._unsigned = False
        s = self.settings
        sign(
            {
                "round": server_round,
                "privacy_event": event.to_json(),
                "epsilon": epsilon_text(self.epsilon()),
                "delta": s.delta,
                "accountant": self.headline(),
                "privacy_mechanism": self.mechanism(),
                "privacy_holds_against": self.holds_against(),
                **self._charge_details(),
            }
        )

    def _charge_details(self) -> dict[str, Any]:
        """What else a charge entry says of the round (distributed DP: its survivors)."""
        return {}

    # -- resume and reporting ----------------------------------------------------------------
    def ledger_json(self) -> dict[str, Any]:
        return {
            "events": self.ledger.to_json(),
            "known_events": self.known.to_json(),
            "sigma": self.sigma,
            "clip_norm": self.clip_norm,
            "regime": regime_of(self.settings).to_json(),  # a resume may not change it
            "varied": sorted(self.varied),
        }

    def restore(self, saved: Any) -> None:
        """Re-spend the rounds a resumed run already released (its committed ledger)."""
        if saved is None:
            return
        if not isinstance(saved, dict) or "events" not in saved:
            raise ValueError("the stored privacy ledger is not a JSON object with 'events'")
        self.ledger = PrivacyLedger.from_json(saved["events"])
        self.known = PrivacyLedger.from_json(saved.get("known_events", []))
        # σ=auto was calibrated once for the whole run, and adaptive clipping moves the clip
        # norm round by round: both continue from the ledger. An explicit σ or a fixed clip
        # norm is the configuration's: a resume with another one runs with it (said), and
        # the rounds it releases are accounted at it
        if saved.get("sigma") is not None and self.settings.noise_multiplier is None:
            self.sigma = float(saved["sigma"])
        if self.settings.adaptive is not None:
            self.clip_norm = float(saved.get("clip_norm", self.clip_norm))
        varied = saved.get("varied")
        self.varied = set(varied) & {"σ", "clip"} if isinstance(varied, list) else set()
        for name, short, now, then in (
            ("noise_multiplier", "σ", self.sigma, saved.get("sigma")),
            ("clip_norm", "clip", self.clip_norm, saved.get("clip_norm")),
        ):
            if isinstance(then, int | float) and now is not None and float(then) != now:
                log.warning("resumed with privacy.%s=%g (the run had %g so far)", name, now, then)
                if self.ledger.rounds:
                    self.varied.add(short)

    def missing_rounds(self, logged: Mapping[str, int]) -> str:
        """What the restored ledgers lack of the rounds the signed log charged (``logged``:
        each round's event, JSON with sorted keys, counted), or ``""``; see
        :func:`.ledger_log.missing_rounds`."""
        return missing_rounds(self.ledger, self.known if self.KNOWN_TWINS else None, logged)

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
            "privacy_holds_against": self.holds_against(),
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

    def holds_against(self) -> str:
        """Whom the headline ε is a guarantee against."""
        if self.settings.publish_participants:
            return "anyone, the coordinator excepted (it sees every update)"
        return (
            "anyone who sees only the released models; readers of the run's records "
            "(metrics, state, audit log: they name the participants or their number) get "
            "epsilon_known_participants; the coordinator sees every update"
        )

    def _rates(self) -> str:
        """``q=0.1 of N=1000`` when every round sampled alike, else ``q per round``."""
        events = {e for e, _ in self.ledger.history}
        if len(events) != 1 or self.population is None:
            return ""
        (event,) = events
        if event.sampling == "poisson":
            return f" (q={event.sample_rate:.3g} of {self.population})"
        if event.sampling == "fixed":
            return f" ({event.sample_size} of {event.population})"
        return ""

    def mechanism(self) -> str:
        """Sampling, adjacency and the accountant, in words."""
        s = self.settings
        if s.publish_participants:
            sampling = "participants published (no amplification by sampling)"
        elif s.sampling == "poisson":
            sampling = f"secret Poisson sampling of clients{self._rates()}"
        else:
            sampling = (
                f"secret sampling of a fixed number of clients without replacement{self._rates()}"
            )
        adjacency = (
            "replace-one"
            if s.sampling == "fixed" and not s.publish_participants
            else ("add/remove-one")
        )
        return f"{sampling}, {adjacency} client adjacency, {self.headline().upper()} accountant"

    def noise_text(self, split: str = "") -> tuple[str, str]:
        """σ (``split``: how it is shared) and the clip as the claim names them: one value
        each, unless a resume changed them, when each round's record says what it ran with."""
        s = self.settings
        if "σ" in self.varied:
            sigma = f"σ{split} varied across rounds (now {self.sigma:.3g}): see each round's "
            sigma += "privacy_event"
        else:
            sigma = f"σ={self.sigma:.3g}" if self.sigma is not None else "σ=auto"
            sigma += split
        if "clip" in self.varied:
            clip = f"clip varied across rounds (now {self.clip_norm:g}): see each round's metrics"
        else:
            clip = f"{'adaptive clip from' if s.adaptive else 'clip'} {s.clip_norm:g}"
        return sigma, clip

    def seeded_note(self) -> str:
        if self.settings.seed is None:
            return ""
        return (
            f"; noise and sampling seeded by privacy.seed={self.settings.seed}: reproducible, "
            "so NOT private (for experiments only)"
        )

    def guarantee(self) -> str:
        """One sentence for the summary, the audit log and the console."""
        if self.refusal:
            return refused_guarantee(self.refusal)
        s = self.settings
        eps = self.epsilon()
        sigma, clip = self.noise_text()
        known = ""
        if self._amplified():
            known = (
                f"; against anyone who reads the run's records (its metrics, state, audit "
                f"log and exports name the participants or their number) "
                f"ε={self.known.epsilon(s.delta, self.headline()):.3g}"
            )
        return (
            f"(ε={eps:.3g}, δ={s.delta:g}) user-level central DP over {self.ledger.rounds} "
            f"rounds ({self.mechanism()}; {sigma}, {clip}); holds against anyone who sees "
            f"only the released models{known}; none against the coordinator, which sees "
            f"every update{self.seeded_note()}"
        )
