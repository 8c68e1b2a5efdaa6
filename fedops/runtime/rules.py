"""The rules several configuration schemas share, each naming the key it refuses.

The deployment flags (:mod:`fedops.runtime.settings`) and the Hydra schemas
(:mod:`fedops.runtime.simulate_settings`) check SecAgg, DP and robust
aggregation with these same functions, so a setting means the same in both.
"""

from __future__ import annotations

import math

from fedops.core.privacy.accountant import ACCOUNTANTS
from fedops.core.strategies import ROBUST_STRATEGIES
from fedops.core.strategies.robust import Krum


class ConfigError(ValueError):
    """A configuration value is wrong; ``key`` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(key, message)


def check_robust(
    strategy: str,
    *,
    trim_fraction: float,
    byzantine: int,
    krum_select: int | None,
    per_round: int,
    secagg: str,
    privacy: str,
) -> None:
    """The rules ``--trim-fraction``/``--byzantine``/``--krum-select`` and ``strategy.*`` share.

    ``per_round``: the fewest clients a round is sure to sample.
    """
    require(0 <= trim_fraction < 0.5, "trim_fraction", f"must be in [0, 0.5), got {trim_fraction}")
    require(byzantine >= 0, "byzantine", f"must be >= 0, got {byzantine}")
    require(krum_select is None or krum_select >= 1, "krum_select", "must be >= 1")
    require(
        strategy != "krum" or krum_select in (None, 1),
        "krum_select",
        f"krum keeps a single model; use multi_krum to average {krum_select}",
    )
    if strategy not in ROBUST_STRATEGIES:
        return
    require(
        secagg == "none",
        "strategy",
        f"{strategy} needs every client's model, secure aggregation reveals only their sum",
    )
    require(
        privacy not in ("central", "distributed"),
        "strategy",
        f"{strategy} cannot be combined with {privacy} DP, which aggregates by its own "
        "clipped and noised mean",
    )
    if strategy in ("krum", "multi_krum"):
        need = Krum(byzantine=byzantine).min_results()
        require(
            per_round >= need,
            "byzantine",
            f"{strategy} with byzantine={byzantine} needs more than 2f+2, i.e. at least "
            f"{need} clients per round, but a round may have only {per_round}: sample more "
            "clients per round or lower byzantine",
        )
        require(
            krum_select is None or krum_select <= per_round,
            "krum_select",
            f"cannot select {krum_select} of the {per_round} clients a round may have",
        )


#: the strategies that read each option; every other strategy ignores it
STRATEGY_OPTIONS = {
    "mu": ("fedprox",),
    "trim_fraction": ("trimmed_mean",),
    "byzantine": ("krum", "multi_krum"),
    "krum_select": ("multi_krum",),
}


def check_unused_options(strategy: str, given: dict[str, tuple[str, object, object]]) -> None:
    """A strategy option set for a strategy that does not read it would be ignored without
    a word (e.g. FedProx's mu under FedAvg): refuse it by the key the user typed.

    ``given``: option -> (the user's key, its value, its default).
    """
    for option, (key, value, default) in given.items():
        readers = STRATEGY_OPTIONS[option]
        require(
            strategy in readers or value == default,
            key,
            f"has no effect with strategy {strategy}: it is read by {' and '.join(readers)} only",
        )


#: the quantizer's range for each coordinate of a model update under SecAgg
SECAGG_CLIP = 4.0
SECAGG_MODES = ("none", "secaggplus")


def check_secagg(mode: str, k: int | None, threshold: int | None, clip: float) -> None:
    """The same rules for ``--secagg*`` flags and the ``secagg.*`` Hydra keys."""
    require(mode in SECAGG_MODES, "secagg", f"must be one of {SECAGG_MODES}, got {mode!r}")
    require(k is None or k >= 2, "secagg_k", f"must be >= 2, got {k}")
    require(
        threshold is None or threshold >= 1, "secagg_threshold", f"must be >= 1, got {threshold}"
    )
    require(
        threshold is None or k is None or k / 2 < threshold <= k,
        "secagg_threshold",
        f"must be above k/2 and at most k={k} (so a server can never rebuild both secrets "
        f"of one client), got {threshold}",
    )
    require(clip > 0, "secagg_clip", f"must be > 0, got {clip}")


PRIVACY_MODES = ("none", "central", "distributed", "local")


def check_dp(
    *,
    mode: str,
    sigma: float | None,
    raw_sigma: object,
    clip_norm: float,
    delta: float,
    target_epsilon: float | None,
    accountant: str,
    secagg: str,
    sampling: str = "poisson",
    colluders: int = 0,
) -> None:
    """The rules ``--privacy``/``--noise-multiplier``… and ``privacy.*`` share.

    ``sigma`` is the parsed noise multiplier (``None``: auto; NaN: not a number),
    ``raw_sigma`` what the user wrote. Keys are the field names; the Hydra side
    prefixes them with ``privacy.``.
    """
    require(
        sigma is None or (math.isfinite(sigma) and sigma >= 0),
        "noise_multiplier",
        f"must be a number >= 0 or 'auto', got {raw_sigma!r}",
    )
    require(
        sigma is not None or target_epsilon is not None,
        "target_epsilon",
        "noise_multiplier=auto derives the noise from the target: set privacy.target_epsilon "
        "(--target-epsilon)",
    )
    require(clip_norm > 0, "clip_norm", f"must be > 0, got {clip_norm}")
    require(0 < delta < 1, "delta", f"must be in (0, 1), got {delta}")
    require(
        target_epsilon is None or target_epsilon > 0,
        "target_epsilon",
        f"must be > 0, got {target_epsilon}",
    )
    require(
        accountant in ACCOUNTANTS,
        "accountant",
        f"must be one of {list(ACCOUNTANTS)}, got {accountant!r}",
    )
    require(
        sampling in ("poisson", "fixed"),
        "sampling",
        f"must be poisson or fixed, got {sampling!r}",
    )
    require(
        not (sampling == "fixed" and mode == "central" and accountant == "pld"),
        "accountant",
        "fixed-size sampling (without replacement) has no PLD event in dp_accounting: "
        "use accountant=rdp (--accountant rdp) or sampling=poisson",
    )
    require(colluders >= 0, "colluders", f"must be >= 0, got {colluders}")
    require(
        not (mode == "local" and sigma is not None and target_epsilon is not None),
        "target_epsilon",
        "local DP takes noise_multiplier or target_epsilon, not both (set "
        "noise_multiplier=auto to derive it from the target; each site caps its own ε "
        "with --max-epsilon)",
    )
    require(
        secagg == "none" or mode != "central",
        "privacy",
        "central DP needs each update in the clear to clip it; with secagg=secaggplus "
        "(--secagg) use privacy=distributed (or privacy=local)",
    )
    require(
        mode != "distributed" or secagg == "secaggplus",
        "secagg",
        "privacy=distributed adds its noise under secure aggregation: set secagg=secaggplus "
        "(--secagg secaggplus)",
    )
