"""Keys nothing would read are refused by name, never ignored; a bad setting (a sweep's
too) fails before anything runs, as fedops' own one-line error naming the key.

One mechanism (``section_rules.check_read``): a key set away from its default that the
chosen mode does not read is refused, naming the key and the modes that read it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedops.config.hydra_app import compose_settings, simulate, simulate_main
from fedops.runtime.schema import (
    MAX_ROUNDS,
    MonitoringConfig,
    PrivacyConfig,
    SecAggConfig,
)
from fedops.runtime.section_rules import check_read
from fedops.runtime.settings import ClientConfig, ConfigError, CoordinatorConfig
from fedops.runtime.simulate_settings import validate


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _refused(*overrides: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate(compose_settings(*overrides))
    return info.value


# -- item 1: `+key=value` outside the schema -----------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (
            "+simulation.num_client=50 rounds=1",
            "simulation.num_client: not a setting of fedops simulate "
            "(did you mean simulation.num_clients?)",
        ),
        ("++rounds=1 +privacy.epsilon=1", "privacy.epsilon: not a setting of fedops simulate"),
        ("+bogus=1", "bogus: not a setting of fedops simulate"),
        ("strategy.nam=x", "strategy.nam: not a setting of fedops simulate (did you mean"),
    ],
)
def test_an_appended_key_outside_the_schema_is_refused_by_name(workdir, capsys, overrides, says):
    assert simulate_main(overrides.split()) == 2
    err = capsys.readouterr().err
    assert err.strip() == err.strip().splitlines()[0]  # one line
    assert err.startswith(f"fedops simulate: error: {says}"), err
    assert list(workdir.iterdir()) == []  # nothing ran


def test_the_python_api_refuses_an_appended_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        compose_settings("+foo=1")
    assert info.value.key == "foo"
    with pytest.raises(ConfigError):
        simulate("+foo=1", "rounds=1", run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- item 2: keys the chosen mode does not read -------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "key", "says"),
    [
        ("secagg.k=5", "secagg.k", "has no effect with secagg none: it is read by secaggplus"),
        ("monitoring.bins=5", "monitoring.bins", "has no effect with monitoring none"),
        ("monitoring.psi_alert=0.5", "monitoring.psi_alert", "has no effect with monitoring none"),
        (
            "privacy=central privacy.colluders=2",
            "privacy.colluders",
            "has no effect with privacy central: it is read by distributed only",
        ),
        (
            "privacy=central privacy.site_max_epsilon=3",
            "privacy.site_max_epsilon",
            "it is read by local only",
        ),
        ("privacy=central privacy.count_noise=3", "privacy.count_noise", "privacy.adaptive"),
        ("privacy=central privacy.target_quantile=0.3", "privacy.target_quantile", "adaptive"),
        ("privacy=local privacy.adaptive=true", "privacy.adaptive", "read by central only"),
        ("model.hidden=8", "model.hidden", "has no effect with model logreg: it is read by mlp"),
        (
            "simulation.drop_stragglers=true",
            "simulation.drop_stragglers",
            "has no effect while simulation.straggler_rate is 0.0",
        ),
    ],
)
def test_a_key_the_mode_does_not_read_is_refused(overrides, key, says):
    error = _refused(*overrides.split())
    assert error.key == key
    assert says in error.message


@pytest.mark.parametrize(
    "overrides",
    [
        "secagg=secaggplus secagg.k=4",
        "monitoring=default monitoring.bins=5",
        "privacy=distributed secagg=secaggplus privacy.colluders=1",
        "privacy=local simulation=sequential privacy.site_max_epsilon=3",
        "privacy=central_adaptive privacy.count_noise=3",
        "model=mlp model.hidden=8",
        "simulation.straggler_rate=0.2 simulation.drop_stragglers=true",
    ],
)
def test_the_same_keys_are_taken_where_they_are_read(overrides):
    validate(compose_settings(*overrides.split()))


def test_group_presets_are_not_taken_for_the_users_keys():
    """Each preset's own values are what its mode reads (e.g. central_adaptive's clip)."""
    for group, options in {
        "privacy": ["central", "central_adaptive", "local"],
        "monitoring": ["default", "none"],
        "secagg": ["secaggplus", "none"],
    }.items():
        for option in options:
            extra = ["simulation=sequential"] if option == "local" else []
            validate(compose_settings(f"{group}={option}", *extra))


def test_check_read_is_one_rule_for_every_section():
    check_read(SecAggConfig(name="secaggplus", k=4), "secagg")
    with pytest.raises(ConfigError, match=r"secagg\.threshold"):
        check_read(SecAggConfig(threshold=3), "secagg")
    with pytest.raises(ConfigError, match=r"monitoring\.action"):
        check_read(MonitoringConfig(action="exclude"), "monitoring")
    with pytest.raises(ConfigError, match=r"privacy\.publish_participants"):
        check_read(PrivacyConfig(name="local", publish_participants=True), "privacy")


def _coordinator(**values) -> CoordinatorConfig:
    return CoordinatorConfig(**{"task": "digits", **values})


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"secagg": SecAggConfig(k=5)}, "secagg.k"),
        ({"monitoring": MonitoringConfig(name="none", psi_alert=0.5)}, "monitoring.psi_alert"),
        # auto is off under DP: its keys would be ignored there too
        (
            {"privacy": PrivacyConfig(name="central"), "monitoring": MonitoringConfig("auto", 5)},
            "monitoring.bins",
        ),
        ({"privacy": PrivacyConfig(name="central", colluders=2)}, "privacy.colluders"),
        ({"task": "my_task.py", "partition": "iid"}, "partition"),
        ({"task": "my_task.py", "alpha": 0.3}, "alpha"),
        ({"partition": "iid", "alpha": 0.3}, "alpha"),
    ],
)
def test_the_coordinator_refuses_what_its_run_would_not_read(values, key):
    with pytest.raises(ConfigError) as info:
        _coordinator(**values)
    assert info.value.key == key
    assert "has no effect" in info.value.message


def test_a_site_with_its_own_task_refuses_the_split_flags():
    site = {"site": 0, "num_sites": 1}
    with pytest.raises(ConfigError) as info:
        ClientConfig(task="my_task.py", partition="iid", alpha=0.3, **site)
    assert (info.value.key, info.value.message.split(":")[0]) == (
        "partition",
        "has no effect with --task my_task.py",
    )
    ClientConfig(task="digits", partition="iid", **site)  # a built-in task reads it


# -- item 3: seeds ------------------------------------------------------------------------------
def test_a_negative_seed_is_refused_up_front(workdir, capsys):
    assert str(_refused("seed=-1")) == "seed: must be in [0, 2^53), got -1"
    assert _refused("seed=9007199254740992").key == "seed"
    assert _refused("privacy=central", "privacy.seed=-1").key == "privacy.seed"
    assert simulate_main(["seed=-1"]) == 2
    assert capsys.readouterr().err.startswith("fedops simulate: error: seed: must be in [0, 2^53)")
    assert list(workdir.iterdir()) == []  # no run directory, no error.log
    with pytest.raises(ConfigError, match=r"seed: must be in \[0, 2\^53\)"):
        _coordinator(seed=-1)


# -- item 11: rounds' bound ---------------------------------------------------------------------
def test_rounds_have_a_maximum():
    assert _refused(f"rounds={MAX_ROUNDS + 1}").key == "rounds"
    validate(compose_settings(f"rounds={MAX_ROUNDS}"))
    with pytest.raises(ConfigError, match="rounds: must be at most"):
        _coordinator(rounds=10**20)
