"""The rules several configuration schemas share, each naming the key it refuses.

The deployment flags (:mod:`fedops.runtime.settings`) and the Hydra schemas
(:mod:`fedops.runtime.simulate_settings`) check SecAgg and DP with these same
functions, so a setting means the same in both (the shared sections' own rules
live with them in :mod:`fedops.runtime.schema`).
"""

from __future__ import annotations

import math

from fedops.core.privacy.accountant import ACCOUNTANTS


class ConfigError(ValueError):
    """A configuration value is wrong; ``key`` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(key, message)


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


def sigma_of(value: object) -> float | None:
    """A noise multiplier as either front holds it: ``None`` for ``auto``, the number, or
    NaN for anything else (the check then names what was written)."""
    if value == "auto":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan


def noise_multiplier_arg(text: str) -> float | str:
    """``--noise-multiplier``'s text as ``privacy.noise_multiplier``'s value: the number,
    when a noise multiplier can be it, else as typed (``auto``, or a mistake that
    :func:`sigma_of` refuses, naming what the user typed)."""
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) and number >= 0 else text


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
    _check_dp_mode(mode, sigma=sigma, target_epsilon=target_epsilon, secagg=secagg)


def _check_dp_mode(
    mode: str, *, sigma: float | None, target_epsilon: float | None, secagg: str
) -> None:
    """The settings each DP mode cannot take, or needs beside it."""
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
