"""DP settings: the ``privacy`` group's defaults, and every refused value names its key.

``privacy=central`` and ``privacy=central_adaptive`` are Hydra config groups
(fedops/configs/privacy/); :func:`fedops.runtime.simulate_settings.check_privacy`
checks them inside :func:`validate`, raising a ConfigError that names the
dotted ``privacy.*`` key. The coordinator's ``--privacy``… flags fill the same
section (:class:`fedops.runtime.schema.PrivacyConfig`), share its rules
(:mod:`fedops.runtime.section_rules`) and reach the same
:class:`~fedops.runtime.privacy.PrivacySettings` by the same function.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedops import cli
from fedops.config import CoordinatorConfig, PrivacyConfig
from fedops.config.hydra_app import compose_settings, simulate_main
from fedops.coordinator.app import _privacy as coordinator_privacy
from fedops.core.privacy.central import AdaptiveClipping
from fedops.runtime.privacy import PrivacySettings
from fedops.runtime.section_settings import privacy_settings
from fedops.runtime.settings import ConfigError
from fedops.runtime.simulate_settings import SimulateConfig, validate


def _compose(*overrides: str) -> SimulateConfig:
    return compose_settings(*overrides)


def _settings(cfg: SimulateConfig) -> PrivacySettings | None:
    """The simulator's DP settings, by the function the coordinator calls too."""
    return privacy_settings(cfg.privacy, cfg.secagg, min_fit_results=cfg.simulation.min_fit_results)


def _refused(*overrides: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate(_compose(*overrides))
    assert str(info.value) == f"{info.value.key}: {info.value.message}"
    return info.value


CENTRAL_DEFAULTS = {
    "name": "central",
    "noise_multiplier": 1.0,
    "clip_norm": 1.0,
    "delta": 1e-5,
    "target_epsilon": None,
    "accountant": "pld",
    "sampling": "poisson",
    "publish_participants": False,
    "colluders": 0,
    "release_site_metrics": False,
    "adaptive": False,
    "target_quantile": 0.5,
    "clip_learning_rate": 0.2,
    "count_noise": 10.0,
    "seed": None,
}


def _fields(cfg: SimulateConfig) -> dict:
    return {key: getattr(cfg.privacy, key) for key in CENTRAL_DEFAULTS}


# -- composition ---------------------------------------------------------------------------------
def test_privacy_is_off_by_default():
    cfg = validate(_compose())
    assert cfg.privacy.name == "none"
    assert _settings(cfg) is None


def test_central_composes_with_its_documented_defaults():
    cfg = validate(_compose("privacy=central"))
    assert _fields(cfg) == CENTRAL_DEFAULTS
    settings = _settings(cfg)
    assert settings == PrivacySettings(
        noise_multiplier=1.0,
        clip_norm=1.0,
        delta=1e-5,
        target_epsilon=None,
        accountant="pld",
        adaptive=None,
        seed=None,  # OS entropy, whatever the run's seed: a seeded run is not private
        mode="central",
        sampling="poisson",
        publish_participants=False,
        colluders=0,
        min_survivors=3,
        release_site_metrics=False,
    )
    assert cfg.seed == 0  # the run's seed is set, and still not the noise's


def test_central_adaptive_composes_with_its_documented_defaults():
    cfg = validate(_compose("privacy=central_adaptive"))
    assert _fields(cfg) == {**CENTRAL_DEFAULTS, "adaptive": True, "clip_norm": 0.1}
    settings = _settings(cfg)
    assert settings is not None
    assert settings.adaptive == AdaptiveClipping(
        target_quantile=0.5, learning_rate=0.2, count_noise=10.0
    )
    assert settings.clip_norm == 0.1 and settings.noise_multiplier == 1.0


def test_privacy_keys_override():
    cfg = validate(
        _compose(
            "privacy=central_adaptive",
            "privacy.noise_multiplier=0.7",
            "privacy.clip_norm=2.5",
            "privacy.delta=1e-6",
            "privacy.target_epsilon=4",
            "privacy.accountant=rdp",
            "privacy.sampling=fixed",
            "privacy.publish_participants=true",
            "privacy.release_site_metrics=true",
            "privacy.target_quantile=0.8",
            "privacy.clip_learning_rate=0.1",
            "privacy.count_noise=3",
            "privacy.seed=9",
            "seed=4",
        )
    )
    settings = _settings(cfg)
    assert settings == PrivacySettings(
        noise_multiplier=0.7,
        clip_norm=2.5,
        delta=1e-6,
        target_epsilon=4.0,
        accountant="rdp",
        adaptive=AdaptiveClipping(target_quantile=0.8, learning_rate=0.1, count_noise=3.0),
        seed=9,
        mode="central",
        sampling="fixed",
        publish_participants=True,
        colluders=0,
        min_survivors=3,
        release_site_metrics=True,
    )


def test_distributed_takes_its_colluders():
    cfg = validate(_compose("privacy=distributed", "secagg=secaggplus", "privacy.colluders=2"))
    settings = _settings(cfg)
    assert settings is not None
    assert (settings.mode, settings.colluders, settings.accountant) == ("distributed", 2, "pld")
    # distributed DP accounts known participation: the clients' sampling is central DP's
    # setting, refused here by name rather than ignored
    with pytest.raises(ConfigError) as info:
        validate(_compose("privacy=distributed", "secagg=secaggplus", "privacy.sampling=fixed"))
    assert str(info.value).startswith("privacy.sampling: has no effect with privacy distributed")


def test_fixed_sampling_with_the_rdp_accountant_is_accepted():
    cfg = validate(_compose("privacy=central", "privacy.sampling=fixed", "privacy.accountant=rdp"))
    settings = _settings(cfg)
    assert settings is not None
    assert (settings.sampling, settings.accountant) == ("fixed", "rdp")


def test_auto_noise_with_a_target_is_accepted():
    cfg = validate(
        _compose("privacy=central", "privacy.noise_multiplier=auto", "privacy.target_epsilon=2")
    )
    assert cfg.privacy.noise_multiplier == "auto" and cfg.privacy.target_epsilon == 2
    settings = _settings(cfg)
    assert settings is not None
    assert settings.noise_multiplier is None and settings.target_epsilon == 2.0


@pytest.mark.parametrize("sigma", ["0", "0.0", "3", "1.5", "100"])
def test_any_noise_multiplier_from_zero_up_is_accepted(sigma: str):
    cfg = validate(_compose("privacy=central", f"privacy.noise_multiplier={sigma}"))
    settings = _settings(cfg)
    assert settings is not None and settings.noise_multiplier == float(sigma)


# -- refused values name their key ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        (["privacy.noise_multiplier=-1"], "privacy.noise_multiplier", "number >= 0 or 'auto'"),
        (["privacy.noise_multiplier=lots"], "privacy.noise_multiplier", "'lots'"),
        (["privacy.noise_multiplier=Auto"], "privacy.noise_multiplier", "'Auto'"),
        (["privacy.noise_multiplier='1.5'"], "privacy.noise_multiplier", "'1.5'"),
        (["privacy.noise_multiplier=null"], "privacy.noise_multiplier", "None"),
        (["privacy.noise_multiplier=nan"], "privacy.noise_multiplier", "number >= 0"),
        (["privacy.noise_multiplier=auto"], "privacy.target_epsilon", "set privacy.target_epsilon"),
        (["privacy.target_epsilon=0"], "privacy.target_epsilon", "must be > 0"),
        (
            ["privacy.noise_multiplier=auto", "privacy.target_epsilon=0"],
            "privacy.target_epsilon",
            "must be > 0",
        ),
        (["privacy.clip_norm=0"], "privacy.clip_norm", "must be > 0"),
        (["privacy.delta=0"], "privacy.delta", "(0, 1)"),
        (["privacy.delta=1"], "privacy.delta", "(0, 1)"),
        (["privacy.accountant=gdp"], "privacy.accountant", "must be one of"),
        (["privacy.accountant=RDP"], "privacy.accountant", "must be one of"),
        # Opacus's PRV accountant is gone: dp_accounting's PLD is the headline now
        (["privacy.accountant=prv"], "privacy.accountant", "got 'prv'"),
        # dp_accounting's PLD has no sampling-without-replacement event
        (["privacy.sampling=fixed"], "privacy.accountant", "accountant=rdp"),
        (
            ["privacy.sampling=fixed", "privacy.accountant=pld"],
            "privacy.accountant",
            "without replacement",
        ),
        (["privacy.sampling=uniform"], "privacy.sampling", "poisson or fixed"),
        (["privacy.colluders=-1"], "privacy.colluders", "must be >= 0, got -1"),
        (["privacy.name=laplace"], "privacy.name", "must be one of"),
        (["privacy.name=distributed"], "secagg.name", "set secagg=secaggplus"),
        (
            ["privacy.name=distributed", "secagg=secaggplus", "privacy.adaptive=true"],
            "privacy.adaptive",
            "not available with distributed DP",
        ),
        (["secagg=secaggplus"], "privacy.name", "secagg=secaggplus"),
        (["privacy.target_quantile=1"], "privacy.target_quantile", "(0, 1)"),
        (["privacy.clip_learning_rate=0"], "privacy.clip_learning_rate", "must be > 0"),
    ],
)
def test_validation_names_the_privacy_key(overrides: list[str], key: str, words: str):
    error = _refused("privacy=central", *overrides)
    assert error.key == key, error
    assert words in error.message, error.message


@pytest.mark.parametrize(
    "sigma",
    [
        [],  # privacy=local's own noise_multiplier (1.0) is an explicit one
        ["privacy.noise_multiplier=0.8"],
    ],
)
def test_local_dp_refuses_a_target_beside_an_explicit_noise_multiplier(sigma: list[str]):
    # the target used to be ignored silently (target 1 ended at ε 5.83)
    error = _refused("privacy=local", "simulation=sequential", *sigma, "privacy.target_epsilon=1")
    assert error.key == "privacy.target_epsilon", error
    assert "not both" in error.message and "auto" in error.message, error.message


def test_local_dp_with_a_target_and_auto_noise_is_accepted():
    cfg = validate(
        _compose(
            "privacy=local",
            "simulation=sequential",
            "privacy.noise_multiplier=auto",
            "privacy.target_epsilon=1",
        )
    )
    settings = _settings(cfg)
    assert settings is not None
    assert (settings.mode, settings.noise_multiplier, settings.target_epsilon) == (
        "local",
        None,
        1.0,
    )


def test_an_unknown_mode_is_refused_even_without_the_group():
    error = _refused("privacy.name=centrall")
    assert error.key == "privacy.name" and "must be one of" in error.message


@pytest.mark.parametrize("sigma", ["20", "25"])
def test_adaptive_clipping_refuses_a_sigma_its_count_noise_cannot_pay_for(sigma: str):
    error = _refused("privacy=central_adaptive", f"privacy.noise_multiplier={sigma}")
    assert error.key == "privacy.count_noise"


def test_adaptive_clipping_accepts_auto_noise_with_a_target():
    cfg = validate(
        _compose(
            "privacy=central_adaptive",
            "privacy.noise_multiplier=auto",
            "privacy.target_epsilon=3",
        )
    )
    assert cfg.privacy.adaptive and cfg.privacy.noise_multiplier == "auto"


@pytest.mark.parametrize("value", ["true", "inf"])
def test_a_boolean_or_infinite_noise_multiplier_is_refused(value: str):
    error = _refused("privacy=central", f"privacy.noise_multiplier={value}")
    assert error.key == "privacy.noise_multiplier"


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("privacy=gaussian", "privacy: no option 'gaussian'"),
        ("privacy.epsilon=1", "epsilon"),
        ("privacy.clip_norm=wide", "privacy.clip_norm"),
        ("privacy.target_epsilon=many", "privacy.target_epsilon"),
    ],
)
def test_hydra_refuses_unknown_privacy_keys_and_types_by_name(override: str, words: str):
    with pytest.raises(Exception) as info:
        _compose("privacy=central", override)
    assert words in str(info.value), str(info.value)


def test_simulate_command_exits_2_naming_the_privacy_key(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    code = simulate_main(
        [
            "privacy=central",
            "privacy.noise_multiplier=auto",
            f"hydra.run.dir={tmp_path / 'sim'}",
            "hydra/job_logging=none",
            "hydra/hydra_logging=none",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "fedops simulate: error: privacy.target_epsilon:" in err, err
    assert not (tmp_path / "sim" / "state.sqlite").exists()  # refused before any run


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["privacy=central", "privacy.sampling=fixed"], "privacy.accountant"),
        (["privacy=central", "privacy.accountant=prv"], "privacy.accountant"),
        (
            ["privacy=local", "simulation=sequential", "privacy.target_epsilon=1"],
            "privacy.target_epsilon",
        ),
        (["privacy=central", "privacy.colluders=-1"], "privacy.colluders"),
    ],
)
def test_simulate_command_refuses_the_new_privacy_keys_by_name(
    overrides: list[str], key: str, tmp_path: Path, capsys: pytest.CaptureFixture
):
    code = simulate_main(
        [
            *overrides,
            f"hydra.run.dir={tmp_path / 'sim'}",
            "hydra/job_logging=none",
            "hydra/hydra_logging=none",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f"fedops simulate: error: {key}:" in err, err
    assert not (tmp_path / "sim" / "state.sqlite").exists()


# -- the coordinator's flags ---------------------------------------------------------------------
def _coordinator(*flags: str) -> CoordinatorConfig:
    cfg = cli.config_of(cli.build_parser().parse_args(["coordinator", *flags]))
    assert isinstance(cfg, CoordinatorConfig)
    return cfg


def test_coordinator_privacy_flags_default_to_the_private_choices():
    settings = coordinator_privacy(_coordinator("--privacy", "central"))
    assert settings is not None
    assert (
        settings.accountant,
        settings.sampling,
        settings.publish_participants,
        settings.colluders,
        settings.release_site_metrics,
        settings.seed,
    ) == ("pld", "poisson", False, 0, False, None)


def test_coordinator_privacy_flags_reach_the_privacy_settings():
    cfg = _coordinator(
        *("--privacy", "central", "--sampling", "fixed", "--accountant", "rdp"),
        *("--publish-participants", "--release-site-metrics"),
    )
    p = cfg.privacy
    assert (p.sampling, p.accountant, p.colluders) == ("fixed", "rdp", 0)
    assert p.publish_participants and p.release_site_metrics
    settings = coordinator_privacy(cfg)
    assert settings == PrivacySettings(
        noise_multiplier=1.0,
        clip_norm=1.0,
        delta=1e-5,
        target_epsilon=None,
        accountant="rdp",
        adaptive=None,
        seed=None,
        mode="central",
        sampling="fixed",
        publish_participants=True,
        colluders=0,
        min_survivors=3,
        release_site_metrics=True,
    )


def test_coordinator_colluders_reach_distributed_dp():
    cfg = _coordinator(
        *("--privacy", "distributed", "--secagg", "secaggplus", "--colluders", "3"),
        *("--clients-per-round", "10", "--min-fit-results", "6"),
    )
    settings = coordinator_privacy(cfg)
    assert settings is not None
    assert (settings.mode, settings.colluders) == ("distributed", 3)
    # the budget is checked with the fewest survivors a committed round may have
    assert settings.min_survivors == 6


@pytest.mark.parametrize("flag", ["--publish-participants", "--release-site-metrics"])
def test_coordinator_privacy_switches_are_off_unless_given(flag: str):
    key = flag.removeprefix("--").replace("-", "_")
    assert getattr(coordinator_privacy(_coordinator("--privacy", "central")), key) is False
    assert getattr(coordinator_privacy(_coordinator("--privacy", "central", flag)), key) is True


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--sampling", "fixed"], "--accountant: fixed-size sampling"),
        (["--accountant", "prv"], "--accountant: invalid choice: 'prv'"),
        (["--sampling", "uniform"], "--sampling: invalid choice"),
        (["--colluders", "-1"], "--colluders: must be >= 0, got -1"),
        (["--colluders", "two"], "--colluders: invalid int value"),
    ],
)
def test_coordinator_cli_refuses_bad_privacy_flags_by_name(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
):
    argv = ["coordinator", "--privacy", "central", "--run-dir", str(tmp_path / "run"), *flags]
    err = _cli_error(argv, capsys)
    assert message in err, err
    assert not (tmp_path / "run").exists()  # refused before anything started


@pytest.mark.parametrize(
    "override",
    [
        "privacy.noise_multiplier=2",
        "privacy.clip_norm=0.5",
        "privacy.target_epsilon=3",
        "privacy.site_max_epsilon=3",
        "privacy.sampling=fixed",
    ],
)
def test_a_dp_setting_without_dp_is_refused_by_name(override: str):
    """Issue 18, item 5: the run went on without DP and said nothing."""
    error = _refused(override)
    assert error.key == override.split("=")[0]
    assert "no effect with privacy=none" in error.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("noise_multiplier", 2.0),
        ("clip_norm", 0.5),
        ("target_epsilon", 3.0),
        ("accountant", "rdp"),
        ("release_site_metrics", True),
    ],
)
def test_a_coordinator_dp_flag_without_privacy_is_refused_by_name(field: str, value):
    with pytest.raises(ConfigError) as info:
        CoordinatorConfig(privacy=PrivacyConfig(**{field: value}))
    assert info.value.key == f"privacy.{field}" and "without --privacy" in info.value.message
    CoordinatorConfig(privacy=PrivacyConfig(name="central", **{field: value}))  # with DP: taken
