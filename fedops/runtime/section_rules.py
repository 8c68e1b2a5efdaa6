"""The rules of the ``strategy``, ``client``, ``privacy``, ``secagg`` and ``monitoring``
sections, for both fronts.

The coordinator's flags (:mod:`fedops.runtime.settings`) and the simulator's keys
(:mod:`fedops.runtime.simulate_settings`) fill the same sections
(:mod:`fedops.runtime.schema`) and are checked here, once. Each refusal names the dotted
key (``privacy.clip_norm``): the simulator shows it as it is, the CLI as the flag the
user typed (:func:`fedops.runtime.schema.flag_of`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from fedops.core.optimizers import OPTIMIZERS
from fedops.core.strategies import (
    ROBUST_STRATEGIES,
    STRATEGIES,
    ClientConfigStrategy,
    build_strategy,
    readers,
)
from fedops.core.strategies.robust import Krum, TrimmedMean
from fedops.core.train_settings import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_LR
from fedops.runtime.rules import (
    PRIVACY_MODES,
    ConfigError,
    check_dp,
    check_secagg,
    require,
    sigma_of,
)
from fedops.runtime.schema import (
    MAX_ROUNDS,
    MAX_SEED,
    ClientTrainConfig,
    MonitoringConfig,
    PrivacyConfig,
    SecAggConfig,
    StrategyConfig,
)
from fedops.runtime.strategy_import import import_strategy
from fedops.tasks.builtin import BUILTIN_TASKS


def _metadata_readers(section: object) -> Callable[[str], tuple[str, ...] | None]:
    """Which ``name`` values read each key: its ``option(..., modes=...)`` (None: all)."""
    specs = {spec.name: spec for spec in dataclasses.fields(section)}  # type: ignore[arg-type]
    return lambda key: specs[key].metadata.get("modes")


def check_read(
    section: object,
    prefix: str,
    *,
    mode: str | None = None,
    mode_key: str = "name",
    readers: Callable[[str], tuple[str, ...] | None] | None = None,
    off: str | None = None,
) -> None:
    """A key set (away from its default) that the section's ``mode`` does not read would be
    ignored without a word: refuse it, naming the key and what reads it. ``mode``: the
    section's ``mode_key`` unless given (a deployment's ``auto`` resolved); ``readers``:
    which modes read a key (default: the fields' ``modes`` metadata; a key whose
    ``needs`` field is unset is not read either); ``off``: what a key set while the
    section is ``none`` is told (each front names its own switch)."""
    mode = getattr(section, mode_key) if mode is None else mode
    reading_of = readers or _metadata_readers(section)
    for spec in dataclasses.fields(section):  # type: ignore[arg-type]
        key = f"{prefix}.{spec.name}"
        if spec.name == mode_key or getattr(section, spec.name) == spec.default:
            continue
        reading = reading_of(spec.name)
        require(off is None or mode != "none", key, off or "")
        require(
            reading is None or mode in reading,
            key,
            f"has no effect with {prefix} {mode}: it is read by "
            f"{' and '.join(reading or ()) or f'no {prefix}'} only",
        )
        needs = spec.metadata.get("needs")
        if needs is None:
            continue
        require(
            bool(getattr(section, needs)),
            key,
            f"has no effect while {prefix}.{needs} is {_shown(getattr(section, needs))}:"
            f" it is read only when {prefix}.{needs} is set",
        )


def _shown(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def check_seed(seed: int | None, key: str) -> None:
    """A seed is a whole number in [0, 2^53): a site checks the same of the seed it is sent."""
    require(
        seed is None or 0 <= seed < MAX_SEED,
        key,
        f"must be in [0, 2^53), got {seed}",
    )


def check_rounds(rounds: int, key: str) -> None:
    require(rounds >= 1, key, f"must be >= 1, got {rounds}")
    require(
        rounds <= MAX_ROUNDS,
        key,
        f"must be at most {MAX_ROUNDS} (a run that long never ends), got {rounds}",
    )


def check_split_keys(
    given: Mapping[str, Any], defaults: Mapping[str, Any], *, task: str | None
) -> None:
    """How a built-in task splits its data (``partition``, ``alpha``, ``data_seed``, as
    ``given`` against their ``defaults``): a user's task splits its own, a standing site
    takes each run's split from its offer, and ``iid`` has no concentration. Set there,
    they would be ignored without a word."""
    builtin = ", ".join(BUILTIN_TASKS)
    where = f"with --task {task}" if task else "without --task (a standing site: the offer's)"
    for key, value in given.items():
        require(
            task in BUILTIN_TASKS or value == defaults[key],
            key,
            f"has no effect {where}: only a built-in task ({builtin}) reads it",
        )
    require(
        given["partition"] != "iid" or given["alpha"] == defaults["alpha"],
        "alpha",
        "has no effect with --partition iid: only --partition dirichlet reads it",
    )


def check_secagg_section(a: SecAggConfig) -> None:
    check_read(a, "secagg")
    try:
        check_secagg(a.name, a.k, a.threshold, a.clip)
    except ConfigError as exc:
        key = "name" if exc.key == "secagg" else exc.key.removeprefix("secagg_")
        raise ConfigError(f"secagg.{key}", exc.message) from None
    require(
        a.min_survivors is None or a.min_survivors >= 3,
        "secagg.min_survivors",
        "must be >= 3 (sites reveal nothing for a sum of two: each would learn the other's "
        f"update), got {a.min_survivors}",
    )


def check_privacy_section(p: PrivacyConfig, *, secagg: str, unused: str) -> None:
    """``unused``: what a DP key set without DP is told (each front names its own switch).
    ``secagg``: the run's secure aggregation mode, which some DP modes need or exclude."""
    require(
        p.name in PRIVACY_MODES,
        "privacy.name",
        f"must be one of {sorted(PRIVACY_MODES)}, got {p.name!r}",
    )
    if p.name == "none":
        # a DP setting without DP would run without it, silently: refuse it by name
        check_read(p, "privacy", off=unused)
        return
    check_seed(p.seed, "privacy.seed")
    sigma = sigma_of(p.noise_multiplier)
    try:
        check_dp(
            mode=p.name,
            sigma=sigma,
            raw_sigma=p.noise_multiplier,
            clip_norm=p.clip_norm,
            delta=p.delta,
            target_epsilon=p.target_epsilon,
            accountant=p.accountant,
            secagg=secagg,
            sampling=p.sampling,
            colluders=p.colluders,
        )
    except ConfigError as exc:
        key = {"privacy": "privacy.name", "secagg": "secagg.name"}.get(exc.key)
        raise ConfigError(key or f"privacy.{exc.key}", exc.message) from None
    _check_tuning(p, sigma)
    check_read(p, "privacy")  # last: the mode's own refusals say more


def _check_tuning(p: PrivacyConfig, sigma: float | None) -> None:
    """Adaptive clipping's tuning and the simulated sites' ε limit."""
    require(0 < p.target_quantile < 1, "privacy.target_quantile", "must be in (0, 1)")
    require(p.clip_learning_rate > 0, "privacy.clip_learning_rate", "must be > 0")
    require(
        not p.adaptive or sigma is None or 2 * p.count_noise > sigma,
        "privacy.count_noise",
        "adaptive clipping needs count_noise > noise_multiplier / 2",
    )
    require(
        p.name != "distributed" or not p.adaptive,
        "privacy.adaptive",
        "adaptive clipping is not available with distributed DP",
    )
    require(
        p.site_max_epsilon is None or p.site_max_epsilon > 0,
        "privacy.site_max_epsilon",
        f"must be > 0, got {p.site_max_epsilon}",
    )


def check_monitoring_section(m: MonitoringConfig, *, privacy: str = "none") -> None:
    """The values of a monitoring section (its ``name``'s choices are each front's own:
    ``auto`` is the deployment's, off under DP: its keys are then read by nothing)."""
    if m.name == "auto" and privacy != "none":
        off = (
            "has no effect: --monitoring auto is off under DP (pass --monitoring default to "
            "monitor beside it, outside the DP guarantee)"
        )
        check_read(m, "monitoring", mode="none", off=off)
    check_read(m, "monitoring")
    require(m.bins >= 2, "monitoring.bins", f"must be >= 2, got {m.bins}")
    require(m.min_count >= 1, "monitoring.min_count", f"must be >= 1, got {m.min_count}")
    require(m.positive_label >= 0, "monitoring.positive_label", "must be >= 0")
    for key in ("psi_alert", "js_alert"):
        require(getattr(m, key) > 0, f"monitoring.{key}", "must be > 0")
    require(0 <= m.ks_pvalue_alert < 1, "monitoring.ks_pvalue_alert", "must be in [0, 1)")
    actions = ("none", "exclude")
    require(
        m.action in actions,
        "monitoring.action",
        f"must be one of {sorted(actions)}, got {m.action!r}",
    )


#: the smallest learning rate a decayed schedule may reach: below it a round trains nothing
MIN_DECAYED_LR = 1e-8


def check_train(c: ClientTrainConfig, *, rounds: int, prefix: str = "client") -> None:
    """The run's training settings (the ``client.*`` section, the coordinator's
    ``--epochs`` ...): what a site would refuse is refused here first, by key, the
    last round's decayed rate included."""
    for key, high in (("epochs", MAX_EPOCHS), ("batch_size", MAX_BATCH_SIZE)):
        value = getattr(c, key)
        require(1 <= value <= high, f"{prefix}.{key}", f"must be in 1..{high}, got {value}")
    require(
        math.isfinite(c.lr) and 0 < c.lr <= MAX_LR,
        f"{prefix}.lr",
        f"must be in (0, {MAX_LR:g}], got {c.lr}",
    )
    require(
        math.isfinite(c.lr_decay) and 0 < c.lr_decay <= 1,
        f"{prefix}.lr_decay",
        f"must be in (0, 1] (1: a constant rate), got {c.lr_decay}",
    )
    last = c.lr * c.lr_decay ** max(rounds - 1, 0)
    require(
        last >= MIN_DECAYED_LR,
        f"{prefix}.lr_decay",
        f"takes the rate from {c.lr:g} to {last:.3g} by round {rounds}, below "
        f"{MIN_DECAYED_LR:g}: rounds that train nothing (use a decay closer to 1)",
    )
    require(
        c.optimizer in OPTIMIZERS,
        f"{prefix}.optimizer",
        f"must be one of {list(OPTIMIZERS)}, got {c.optimizer!r}",
    )
    require(0 <= c.momentum < 1, f"{prefix}.momentum", "must be in [0, 1)")
    require(
        c.optimizer == "sgd" or c.momentum == 0,
        f"{prefix}.momentum",
        f"has no effect with optimizer {c.optimizer}: it is read by sgd only",
    )


def check_strategy_options(st: StrategyConfig, *, prefix: str = "strategy") -> None:
    """The ``strategy.*`` keys on their own: a known name, values in range, and no option
    the chosen strategy does not read (it would be ignored without a word)."""
    if ":" in st.name and st.name not in STRATEGIES:
        import_strategy(st.name, key=f"{prefix}.name")
    require(
        st.name in STRATEGIES,
        f"{prefix}.name",
        f"must be one of {sorted(STRATEGIES)} or module:Class, got {st.name!r}",
    )
    require(st.mu >= 0, f"{prefix}.mu", f"must be >= 0, got {st.mu}")
    require(
        st.server_lr is None or (math.isfinite(st.server_lr) and st.server_lr > 0),
        f"{prefix}.server_lr",
        f"must be a number > 0, got {st.server_lr}",
    )
    for key in ("server_momentum", "beta1", "beta2"):
        value = getattr(st, key)
        require(0 <= value < 1, f"{prefix}.{key}", f"must be a number in [0, 1), got {value}")
    require(
        math.isfinite(st.tau) and st.tau > 0, f"{prefix}.tau", f"must be a number > 0, got {st.tau}"
    )
    check_read(st, prefix, readers=readers)


def check_strategy_fits(
    st: StrategyConfig, *, per_round: int, secagg: str, privacy: str, prefix: str = "strategy"
) -> None:
    """The strategy against the rest of the run: robust rules need every client's model
    (no SecAgg, no central or distributed DP) and, for Krum and the trimmed mean, enough
    clients per round."""
    try:
        _check_robust(st, per_round=per_round, secagg=secagg, privacy=privacy)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.{exc.key}", exc.message) from None
    # last, after every rule that names its own key: a user's class may still refuse its
    # settings; say so by key, before the run starts
    try:
        strategy = build_strategy(st.name, dataclasses.asdict(st))
    except Exception as exc:
        why = f"strategy {st.name} refused its settings: {type(exc).__name__}: {exc}"
        raise ConfigError(f"{prefix}.name", why) from exc
    guarded = "secure aggregation" if secagg != "none" else f"{privacy} DP"
    require(
        not isinstance(strategy, ClientConfigStrategy)
        or (secagg == "none" and privacy not in ("central", "distributed")),
        f"{prefix}.name",
        f"strategy {st.name} sets a fit config per client (client_fit_config), which "
        f"{guarded} refuses: a config of its own could single a site out of the sum, and "
        "central DP's secret sample would show to the strategy",
    )


def _check_robust(st: StrategyConfig, *, per_round: int, secagg: str, privacy: str) -> None:
    """``per_round``: the fewest clients a round is sure to sample."""
    name, f, select = st.name, st.byzantine, st.select
    require(
        0 <= st.trim_fraction < 0.5, "trim_fraction", f"must be in [0, 0.5), got {st.trim_fraction}"
    )
    require(f >= 0, "byzantine", f"must be >= 0, got {f}")
    require(select is None or select >= 1, "select", "must be >= 1")
    if name not in ROBUST_STRATEGIES:
        return
    require(
        secagg == "none",
        "name",
        f"{name} needs every client's model, secure aggregation reveals only their sum",
    )
    require(
        privacy not in ("central", "distributed"),
        "name",
        f"{name} cannot be combined with {privacy} DP, which aggregates by its own "
        "clipped and noised mean",
    )
    if name == "trimmed_mean":
        require(
            TrimmedMean(beta=st.trim_fraction).trimmed(per_round) >= 1,
            "trim_fraction",
            _trims_nothing(st.trim_fraction, per_round),
        )
    if name in ("krum", "multi_krum"):
        need = Krum(byzantine=f).min_results()
        require(
            per_round >= need,
            "byzantine",
            f"{name} with byzantine={f} needs more than 2f+2, i.e. at least {need} clients "
            f"per round, but a round may have only {per_round}: sample more clients per "
            "round or lower byzantine",
        )
        require(
            select is None or select <= per_round,
            "select",
            f"cannot select {select} of the {per_round} clients a round may have",
        )


def _trims_nothing(fraction: float, per_round: int) -> str:
    """Why ``fraction`` of ``per_round`` results trims nothing, and what would."""
    why = (
        f"trimmed_mean with trim_fraction={fraction:g} drops floor({fraction:g} x {per_round}) "
        f"= 0 values at each end when a round has {per_round} clients: that is the plain "
        "mean, which one site can set to anything; "
    )
    if per_round < 3:  # one dropped at each end and one kept; trim_fraction < 0.5
        return why + "it needs at least 3 clients per round (or use median)"
    smallest = math.ceil(1000 / per_round) / 1000
    while TrimmedMean(beta=smallest).trimmed(per_round) < 1:
        smallest += 0.001
    return why + f"use trim_fraction >= {smallest:g} to drop one at each end"
