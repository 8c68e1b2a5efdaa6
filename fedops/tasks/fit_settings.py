"""What a fit task may ask of a site: its local-DP and training settings, or a refusal.

Split from :mod:`fedops.tasks.site` (which re-exports these names) so that the site's
reading of a coordinator's config, which a hostile coordinator writes, sits in one
short file: each setting is checked here before the site spends any work on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from fedops.core.optimizers import OPTIMIZERS
from fedops.core.privacy.local import LocalDP, noise_for_local_target
from fedops.core.train_settings import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_LR, TrainSettings
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


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainCaps:
    """A site's own limits on the run's training settings (``fedops client --max-epochs``,
    ``--max-batch-size``, ``--max-lr``, or its kit's policy): a task above one is declined
    with the reason, never trained with a smaller value (the run would silently differ
    from what its config says). None: no cap beyond the site's bounds."""

    max_epochs: int | None = None
    max_batch_size: int | None = None
    max_lr: float | None = None

    def __post_init__(self) -> None:
        for key in ("max_epochs", "max_batch_size"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"policy: {key} must be a whole number >= 1, got {value!r}")
            if value is not None and value < 1:
                raise ValueError(f"policy: {key} must be >= 1, got {value}")
        lr = self.max_lr
        if lr is not None and not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"policy: max_lr must be a number > 0, got {lr!r}")


def checked_train(train: TrainSettings, caps: TrainCaps) -> TrainSettings:
    """The coordinator's training settings if this site may train with them, else a
    :class:`PolicyRefusal` naming the setting: each value within the site's bounds
    (``1..MAX_EPOCHS`` epochs: 1e18 trained forever), then within its caps."""
    if len(train.optimizer) > MAX_OPTIMIZER_NAME:  # before it is quoted into any record
        raise PolicyRefusal(
            f"optimizer name of {len(train.optimizer)} characters: not one of {list(OPTIMIZERS)}"
        )
    _within("epochs", train.epochs, 1, MAX_EPOCHS, "MAX_EPOCHS")
    _within("batch_size", train.batch_size, 1, MAX_BATCH_SIZE, "MAX_BATCH_SIZE")
    if not (math.isfinite(train.lr) and 0 < train.lr <= MAX_LR):
        raise PolicyRefusal(
            f"lr={train.lr!r} is outside (0, MAX_LR={MAX_LR:g}] (a bound of this site)"
        )
    if train.optimizer not in OPTIMIZERS:
        raise PolicyRefusal(f"optimizer={train.optimizer!r} is not one of {list(OPTIMIZERS)}")
    if not (math.isfinite(train.momentum) and 0 <= train.momentum < 1):
        raise PolicyRefusal(f"momentum={train.momentum!r} is outside [0, 1)")
    if train.optimizer != "sgd" and train.momentum != 0:
        raise PolicyRefusal(
            f"momentum={train.momentum!r} with optimizer {train.optimizer}: sgd only"
        )
    for key, value, cap in (
        ("epochs", train.epochs, caps.max_epochs),
        ("batch_size", train.batch_size, caps.max_batch_size),
        ("lr", train.lr, caps.max_lr),
    ):
        if cap is not None and value > cap:
            flag = "--max-" + key.replace("_", "-")
            raise PolicyRefusal(
                f"site policy: the run asks {key}={value!r}, above this site's cap of {cap!r} "
                f"({flag}, policy rule max_{key}); declined, not trained with less"
            )
    return train


#: the longest optimizer name a site reads (the known ones are a few letters)
MAX_OPTIMIZER_NAME = 32
#: the largest FedProx μ a site trains with: far past it the proximal term is all the loss
MAX_PROXIMAL_MU = 1e4
#: what only ``Task.train`` may carry (checked against the caps), never ``Task.config``
TRAIN_KEYS = ("epochs", "batch_size", "lr", "optimizer", "momentum", "lr_decay")


def checked_round_config(config: Mapping[str, float]) -> tuple[float, int]:
    """The round config's FedProx ``proximal_mu`` and shuffle ``seed`` if usable, else a
    :class:`PolicyRefusal`: a NaN μ silently dropped the proximal term, a huge one made
    the model non-finite, and a training setting here would bypass the site's caps."""
    clash = sorted(key for key in config if key in TRAIN_KEYS)
    if clash:
        raise PolicyRefusal(
            f"the task's config sets {clash}: the run's training settings travel only in "
            "Task.train, where this site checks them against its caps"
        )
    mu = _number(config, "proximal_mu")
    if not (math.isfinite(mu) and 0 <= mu <= MAX_PROXIMAL_MU):
        raise PolicyRefusal(f"proximal_mu={mu!r} is outside [0, {MAX_PROXIMAL_MU:g}]")
    seed = _number(config, "seed")
    if not (math.isfinite(seed) and seed.is_integer() and 0 <= seed < 2**53):
        raise PolicyRefusal(f"seed={seed!r} is not a whole number in [0, 2^53)")
    return mu, int(seed)


def _number(config: Mapping[str, float], key: str) -> float:
    try:
        return float(config.get(key, 0.0))
    except (TypeError, ValueError):
        return math.nan


def capped_training(base: TrainConfig, train: TrainSettings | None, caps: TrainCaps) -> TrainConfig:
    """``base`` with the run's ``train`` once it passes the site's bounds and ``caps`` (else
    :class:`PolicyRefusal`, naming the setting); ``base`` itself for a caller sending none."""
    if train is None:
        return base
    t = checked_train(train, caps)
    return replace(
        base,
        epochs=t.epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        optimizer=t.optimizer,
        momentum=t.momentum,
    )


def _within(key: str, value: int, low: int, high: int, name: str) -> None:
    if not low <= value <= high:
        raise PolicyRefusal(
            f"{key}={value!r} is outside {low}..{name}={high} (a bound of this site)"
        )
