"""What a fit task may ask of a site: its local-DP settings and its epochs, or a refusal.

Split from :mod:`fedops.tasks.site` (which re-exports these names) so that the site's
reading of a coordinator's config, which a hostile coordinator writes, sits in one
short file: each setting is checked here before the site spends any work on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from fedops.core.privacy.local import MAX_EPOCHS, LocalDP, noise_for_local_target
from fedops.core.training import TrainConfig

#: the δ a site accounts its local DP at unless its policy says otherwise (``--dp-delta``)
DEFAULT_DELTA = 1e-5
#: the example count a site answers a local-DP fit task with: its true count (and any
#: metric) is outside the noise and tells n from n - 1, so every DP site weighs the same
DP_NUM_EXAMPLES = 1


class PolicyRefusal(Exception):
    """The site's own policy forbids this task; the message says which rule."""


def accounting_delta(config: Mapping[str, float], max_delta: float) -> float:
    """The δ this site accounts at: its own, or the coordinator's ``dp_delta`` if smaller.

    δ bounds the probability that the ε guarantee fails outright, so it is the
    site's to set: a coordinator may ask for a smaller one, never a larger, and a
    ``dp_delta`` that is not a probability (δ = 5 once printed ε = −15.2) is refused.
    """
    if "dp_delta" not in config:
        return max_delta
    raw = config["dp_delta"]
    try:
        asked = float(raw)
    except (TypeError, ValueError):
        asked = math.nan
    if not (math.isfinite(asked) and 0 < asked < 1):
        raise PolicyRefusal(
            f"the coordinator's dp_delta={raw!r} is not a probability in (0, 1); this site "
            "accounts local DP at its own δ or a smaller one, never at that"
        )
    return min(asked, max_delta)


def local_dp(
    config: Mapping[str, float],
    num_examples: int,
    train: TrainConfig,
    *,
    max_delta: float = DEFAULT_DELTA,
) -> LocalDP | None:
    """The local DP-SGD the coordinator asks for in a fit task's config, if any.

    With ``dp_target_epsilon`` (``noise_multiplier=auto``) the site derives its own σ
    from its own data size: the smallest that keeps this run's rounds within the
    target over ``dp_rounds`` rounds of its local steps. Settings that cannot be
    used are refused (:class:`PolicyRefusal`), naming the setting, and so are those
    past this site's bounds (σ below ``MIN_NOISE_MULTIPLIER``, a target above
    ``MAX_TARGET_EPSILON`` or over more than ``MAX_PLANNED_ROUNDS``; see
    :mod:`fedops.core.privacy.local`), before any accounting: a crafted setting
    otherwise stalls the site for minutes building its privacy-loss distribution.
    """
    if "dp_noise_multiplier" not in config and "dp_target_epsilon" not in config:
        return None
    delta = accounting_delta(config, max_delta)
    try:
        if "dp_target_epsilon" in config:
            rounds = int(config.get("dp_rounds", 1))
            target = float(config["dp_target_epsilon"])
            sigma = noise_for_local_target(target, delta, num_examples, train, rounds)
        else:
            sigma = float(config["dp_noise_multiplier"])
        return LocalDP(
            noise_multiplier=sigma, max_grad_norm=float(config["dp_max_grad_norm"]), delta=delta
        )
    except KeyError as exc:
        raise PolicyRefusal(f"local DP settings: {exc.args[0]} is missing") from exc
    except (TypeError, ValueError, OverflowError) as exc:
        raise PolicyRefusal(f"local DP settings cannot be used: {exc}") from exc


def fit_epochs(config: Mapping[str, float], default: int) -> int:
    """The local epochs a fit task asks for, within ``1..MAX_EPOCHS`` (1e18 trained forever)."""
    raw = config.get("epochs", default)
    try:
        epochs = int(raw)
    except (TypeError, ValueError, OverflowError):
        epochs = -1
    if not 1 <= epochs <= MAX_EPOCHS:
        raise PolicyRefusal(
            f"epochs={raw!r} is outside 1..MAX_EPOCHS={MAX_EPOCHS} "
            "(this site's bound on local epochs per round)"
        )
    return epochs
