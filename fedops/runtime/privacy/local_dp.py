"""Local DP-SGD as the coordinator sees it: it asks, the sites enforce, account and log.

The coordinator learns nothing of what a site spent: a site's ε depends on its
record count through the sample rate (q = B/n), so it is kept in the site's
own ledger and signed audit log and never sent. What the coordinator reports
is what it asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedops.core.params import Params
from fedops.core.rounds import sample_clients
from fedops.runtime.privacy.privacy_settings import PrivacySettings, RoundSample
from fedops.runtime.privacy.regime import (
    ADVICE,
    PrivacyResumeRefused,
    refused_guarantee,
    regime_of,
)

MECHANISM = (
    "record-level DP-SGD at every site (Opacus: Poisson sampling of records, add/remove-one "
    "record adjacency, noise from the site's OS entropy, PLD accountant at the site)"
)
HOLDS_AGAINST = (
    "the coordinator, the other sites and anyone who sees the released models (the sites' "
    "training records; not their test rows)"
)
WHERE_EPSILON = (
    "each site's ε is kept in its own privacy ledger, enforced there (--max-epsilon) and "
    "written to its own signed audit log (privacy_spent); it is never sent, as it depends "
    "on the site's record count"
)


class LocalPrivacy:
    """``privacy=local``: every site runs DP-SGD (Opacus) and enforces its own ε limit.

    The coordinator only asks for it (noise multiplier or target ε, max grad norm,
    δ in the fit config) and aggregates as usual. A DP site answers with its noised
    model, no metrics and an example count of 1, so FedAvg weights DP sites equally.
    The coordinator cannot know any site's ε: its metrics and guarantee state what
    was asked and where each site's ε is kept.
    """

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
        self.rounds = 0
        self.refusal = ""  # why resuming the run was refused: it then claims no guarantee
        self.varied: set[str] = set()  # what was asked for differently in earlier rounds

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

    def _asked(self) -> dict[str, Any]:
        """What the sites are asked for: σ, or (σ=auto) the target ε over the planned rounds
        each calibrates to, and the clip."""
        s = self.settings
        if s.noise_multiplier is not None:
            return {"sigma": s.noise_multiplier, "clip_norm": s.clip_norm}
        return {"target_epsilon": s.target_epsilon, "planned_rounds": self.planned_rounds,
                "clip_norm": s.clip_norm}  # fmt: skip

    def ledger_json(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "regime": regime_of(self.settings).to_json(),
            "asked": self._asked(),
            "varied": sorted(self.varied),
        }

    def restore(self, saved: Any) -> None:
        """The rounds asked for so far (a ledger of an older fedops also held the largest ε
        the sites reported, which they no longer send: it is ignored). Under σ=auto each
        site calibrates σ to reach the target over the planned rounds from what the
        coordinator tells it, not from what it already spent: a resume with more rounds or a
        smaller target would take it past the target it was asked for, and is refused."""
        if not isinstance(saved, dict):
            return
        self.rounds = int(saved.get("rounds", 0))
        varied, asked, now = saved.get("varied"), saved.get("asked"), self._asked()
        self.varied = set(varied) & {"σ", "clip"} if isinstance(varied, list) else set()
        if not isinstance(asked, dict) or not self.rounds:
            return
        _check_auto(asked, now, self.rounds)
        if asked.get("clip_norm") != now["clip_norm"]:
            self.varied.add("clip")
        if {k: v for k, v in asked.items() if k != "clip_norm"} != {
            k: v for k, v in now.items() if k != "clip_norm"
        }:
            self.varied.add("σ")

    def begin_round(self, server_round: int, sample: RoundSample, params: Params) -> None:
        """Sites enforce their own limits (``--max-epsilon``) and decline when it is reached."""

    def secure_noise(self) -> tuple[float, float] | None:
        return None

    def survivor_floor(self) -> int:
        return 0

    def spend(self, reported: Sequence[Any]) -> None:
        """Count the round: what it cost each site is the site's to know."""
        self.rounds += 1

    def sign_charge(self, server_round: int) -> None:
        """Nothing: each site signs its own charge into its own audit log."""

    def _sigma(self) -> float | str:
        s = self.settings
        return s.noise_multiplier if s.noise_multiplier is not None else "auto"

    def metrics(self) -> dict[str, Any]:
        """What the coordinator asked for (no ε: it is each site's, kept at the site)."""
        s = self.settings
        out: dict[str, Any] = {
            # one key the coordinator's audit log carries too (privacy_spent)
            "privacy_mechanism": f"{MECHANISM}; {WHERE_EPSILON}",
            "privacy_holds_against": HOLDS_AGAINST,
            "delta": s.delta,
            "noise_multiplier": self._sigma(),
            "clip_norm": s.clip_norm,
        }
        if s.target_epsilon is not None:
            out["target_epsilon"] = s.target_epsilon
        return out

    def guarantee(self) -> str:
        if self.refusal:
            return refused_guarantee(self.refusal)
        s = self.settings
        if s.noise_multiplier is not None:
            sigma = f"σ={s.noise_multiplier:g}"
        else:
            sigma = f"σ per site, each calibrated to ε={s.target_epsilon:g} over the planned rounds"
        if "σ" in self.varied:
            sigma = f"{sigma} (earlier rounds asked for other noise: see each round's metrics)"
        clip = f"max grad norm {s.clip_norm:g}"
        if "clip" in self.varied:
            clip += " (earlier rounds asked for another: see each round's metrics)"
        return (
            f"record-level local DP at every site, {self.rounds} rounds of this run "
            f"(DP-SGD with Opacus: Poisson sampling of records, add/remove-one record "
            f"adjacency, PLD accountant at the site; asked for {sigma}, {clip}, "
            f"δ at most {s.delta:g}); {WHERE_EPSILON}; holds against "
            f"{HOLDS_AGAINST}. A DP site sends no metrics and an example count of 1, so "
            "FedAvg weights the DP sites equally"
        )


def _check_auto(asked: Mapping[str, Any], now: Mapping[str, Any], rounds: int) -> None:
    """Refuse resuming σ=auto rounds with more planned rounds or a smaller target: each
    site would calibrate afresh for them on top of what it spent, past the target."""
    target, planned = asked.get("target_epsilon"), asked.get("planned_rounds")
    if not isinstance(target, int | float) or not isinstance(planned, int):
        return  # the rounds asked for an explicit σ: the sites account it
    spent = (
        f"this run's sites calibrated σ to reach ε={target:g} over {planned} rounds and "
        f"ran {rounds} of them"
    )
    new_target, new_planned = now.get("target_epsilon"), now.get("planned_rounds")
    if isinstance(new_planned, int) and new_planned > planned:
        raise PrivacyResumeRefused(
            f"rounds: {spent}; resuming with rounds={new_planned} would have each site "
            f"calibrate σ for {new_planned} rounds on top of what it spent, past ε={target:g}: "
            f"keep rounds={planned}, {ADVICE}"
        )
    if isinstance(new_target, int | float) and new_target < target:
        raise PrivacyResumeRefused(
            f"privacy.target_epsilon: {spent}; resuming with privacy.target_epsilon="
            f"{new_target:g} would claim a target those rounds were never calibrated to: "
            f"keep privacy.target_epsilon={target:g}, {ADVICE}"
        )
