"""Local DP-SGD as the coordinator sees it: it asks, the sites enforce and report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedops.core.params import Params
from fedops.core.privacy.accountant import epsilon_text
from fedops.core.rounds import sample_clients
from fedops.runtime.privacy.settings import PrivacySettings, RoundSample


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
            "privacy_mechanism": "record-level DP-SGD at every site (Poisson sampling of "
            "records, add/remove-one record adjacency, PLD accountant at the site)",
            "privacy_holds_against": "the coordinator, the other sites and anyone who sees "
            "the released models (the sites' training records only)",
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
