"""The CLI's flags and the Hydra keys describe one set of settings (issue 19 item 1).

The shared sections (``strategy.*``, ``client.*``, ``privacy.*``, ``secagg.*``,
``monitoring.*``) generate their flags, but for the fields marked simulation-only (with
their reason); every other flag is paired with its Hydra key or listed as
deployment-only, every Hydra key is paired or listed as simulation-only, each with its
reason (``fedops.runtime.schema_table``). A new flag or key in neither list, or a pair
whose defaults drift apart, fails here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from fedops.cli.help import all_parsers
from fedops.cli.parser import build_parser
from fedops.config.hydra_app import compose_settings
from fedops.coordinator import app
from fedops.core.monitoring.fairness import FairnessThresholds
from fedops.core.monitoring.summary import MonitorThresholds
from fedops.core.privacy.central import AdaptiveClipping
from fedops.runtime import schema, schema_table
from fedops.runtime.round_monitor import MonitorSettings
from fedops.runtime.schema import PrivacyConfig
from fedops.runtime.settings import CoordinatorConfig


def _flags() -> dict[str, Any]:
    """Every flag of ``fedops coordinator`` and ``fedops client`` with its default (the
    coordinator's, for a flag on both: ``--run-dir`` means a different directory there)."""
    found: dict[str, Any] = {}
    for parser in all_parsers(build_parser()):
        if parser.prog.split()[-1] not in ("coordinator", "client"):
            continue
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                found.setdefault(max(action.option_strings, key=len), action.default)
    return found


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in dataclasses.fields(node):
        value = getattr(node, spec.name)
        if dataclasses.is_dataclass(value):
            out.update(_leaves(value, f"{prefix}{spec.name}."))
        else:
            out[f"{prefix}{spec.name}"] = value
    return out


FLAGS = _flags()
KEYS = _leaves(compose_settings())  # the composed defaults: schemas plus group YAML
GENERATED = {
    schema.flag_of(f"{prefix}.{spec.name}"): f"{prefix}.{spec.name}"
    for prefix, section in schema.SECTIONS.items()
    for spec in schema.flagged(section)
}
PAIRS = {**GENERATED, **schema_table.SAME_SETTING}
DEPLOYMENT_ONLY, SIMULATION_ONLY = schema_table.DEPLOYMENT_ONLY, schema_table.SIMULATION_ONLY


def test_every_flag_is_a_hydra_key_or_deployment_only():
    unplaced = sorted(set(FLAGS) - set(PAIRS) - set(DEPLOYMENT_ONLY))
    assert unplaced == [], "add each to schema_table.SAME_SETTING or DEPLOYMENT_ONLY"
    assert sorted(set(DEPLOYMENT_ONLY) & set(PAIRS)) == []
    assert sorted(set(DEPLOYMENT_ONLY) - set(FLAGS)) == [], "stale entries"


def test_every_hydra_key_is_a_flag_or_simulation_only():
    paired = set(PAIRS.values())
    unplaced = sorted(set(KEYS) - paired - set(SIMULATION_ONLY))
    assert unplaced == [], "add each to schema_table.SAME_SETTING or SIMULATION_ONLY"
    assert sorted(set(SIMULATION_ONLY) & paired) == []
    assert sorted(set(SIMULATION_ONLY) - set(KEYS)) == [], "stale entries"
    assert sorted(set(PAIRS.values()) - set(KEYS)) == [], "a pair names no Hydra key"
    assert sorted(set(PAIRS) - set(FLAGS)) == [], "a pair names no flag"


@pytest.mark.parametrize("flag", sorted(PAIRS))
def test_a_flag_and_its_key_share_their_default(flag: str):
    key = PAIRS[flag]
    same = FLAGS[flag] == KEYS[key]
    if flag in schema_table.DIFFERENT_DEFAULTS:
        assert not same, f"{flag} and {key} agree now: drop it from DIFFERENT_DEFAULTS"
    else:
        assert same, (flag, FLAGS[flag], key, KEYS[key])


def test_a_simulation_only_tuning_has_the_value_a_deployment_fixes():
    """A key the deployment does not expose must default to what the deployment uses,
    or the same configuration would mean two things."""
    central = PrivacyConfig(name="central", adaptive=True)
    deployed_adaptive = app._privacy(CoordinatorConfig(privacy=central))
    assert deployed_adaptive is not None and deployed_adaptive.adaptive == AdaptiveClipping()
    fixed = {
        "privacy.target_quantile": AdaptiveClipping().target_quantile,
        "privacy.clip_learning_rate": AdaptiveClipping().learning_rate,
        "privacy.count_noise": AdaptiveClipping().count_noise,
        "monitoring.bins": MonitorSettings().bins,
        "monitoring.ks_pvalue_alert": MonitorThresholds().ks_pvalue,
        **{
            f"monitoring.{spec.name}": getattr(FairnessThresholds(), spec.name)
            for spec in dataclasses.fields(FairnessThresholds)
        },
    }
    deployed = app._monitoring(CoordinatorConfig())
    assert deployed is not None
    assert deployed.bins == MonitorSettings().bins
    assert deployed.thresholds.fairness == FairnessThresholds()
    assert deployed.thresholds.ks_pvalue == MonitorThresholds().ks_pvalue
    assert {key: KEYS[key] for key in fixed} == fixed


def test_the_shared_sections_generate_their_flags():
    coordinator = next(p for p in all_parsers(build_parser()) if p.prog.endswith("coordinator"))
    mu = next(a for a in coordinator._actions if "--mu" in a.option_strings)
    assert (mu.dest, mu.default, mu.type) == ("strategy.mu", schema.StrategyConfig().mu, float)
    assert schema.flag_of("strategy.select") == "--krum-select"
    assert schema.flag_of("client.batch_size") == "--batch-size"
    assert schema.flag_of("round_timeout_s") == "--round-timeout"


def test_the_feature_sections_generate_their_flags_but_the_simulation_only_keys():
    coordinator = next(p for p in all_parsers(build_parser()) if p.prog.endswith("coordinator"))
    actions = {max(a.option_strings, key=len): a for a in coordinator._actions if a.option_strings}
    k, adaptive = actions["--secagg-k"], actions["--adaptive-clipping"]
    assert (k.dest, k.default, k.type) == ("secagg.k", None, int)
    assert (adaptive.dest, adaptive.default, adaptive.const) == ("privacy.adaptive", False, True)
    assert actions["--drift-action"].dest == "monitoring.action"
    assert schema.flag_of("privacy.count_noise") == "privacy.count_noise"  # no flag to name
    hidden = {key for key in SIMULATION_ONLY if key.partition(".")[0] in schema.SECTIONS}
    assert "privacy.count_noise" in hidden and "monitoring.bins" in hidden
    assert not {action.dest for action in actions.values()} & hidden


@pytest.mark.parametrize(
    ("typed", "value"), [("2", 2.0), ("0", 0.0), ("auto", "auto"), ("-1", "-1"), ("lots", "lots")]
)
def test_noise_multiplier_flag_holds_what_the_key_holds(typed: str, value: Any):
    """A number or "auto" on both fronts; a mistake stays as typed, for the check to name."""
    from fedops.cli.configs import config_of as _config

    args = build_parser().parse_args(["coordinator", "--noise-multiplier", typed])
    assert vars(args)["privacy.noise_multiplier"] == value
    if isinstance(value, float):
        flags = ["coordinator", "--privacy", "central", "--noise-multiplier", typed]
        assert _config(build_parser().parse_args(flags)).privacy.noise_multiplier == value


def test_the_deployment_sets_its_monitoring_default_in_one_place():
    from fedops.runtime.settings import deployed_monitoring

    assert FLAGS["--monitoring"] == CoordinatorConfig().monitoring.name == "auto"
    assert deployed_monitoring() == dataclasses.replace(schema.MonitoringConfig(), name="auto")
    assert KEYS["monitoring.name"] == schema.MonitoringConfig().name == "none"


def test_strategy_keys_are_checked_before_the_rest_on_both_fronts():
    """With two mistakes the strategy's own is named, as before the schema moved it."""
    from fedops.config.hydra_app import compose_settings
    from fedops.runtime.rules import ConfigError
    from fedops.runtime.schema import StrategyConfig
    from fedops.runtime.simulate_settings import validate

    with pytest.raises(ConfigError) as deployed:
        CoordinatorConfig(strategy=StrategyConfig(mu=0.5), round_timeout_s=0)
    assert deployed.value.key == "strategy.mu"
    with pytest.raises(ConfigError) as simulated:
        validate(compose_settings("strategy.name=bogus", "client.epochs=0"))
    assert simulated.value.key == "strategy.name"
