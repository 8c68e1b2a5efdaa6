"""Secure-aggregation settings: every refused value names its key (Hydra) or its flag (CLI).

The rules live in :func:`fedops.runtime.rules.check_secagg` (the section's in
:func:`fedops.runtime.section_rules.check_secagg_section`) and apply to the
``secagg.*`` keys of ``fedops simulate`` and the ``--secagg*`` flags of
``fedops coordinator`` alike: ``k >= 2``, ``k/2 < threshold <= k``, ``clip > 0``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedops import cli
from fedops.config import ClientConfig, ConfigError, CoordinatorConfig, SecAggConfig
from fedops.config.hydra_app import compose_settings, simulate_main
from fedops.runtime.rules import SECAGG_CLIP, SECAGG_MODES, check_secagg
from fedops.runtime.simulate_settings import SimulateConfig, validate


def _compose(*overrides: str) -> SimulateConfig:
    return compose_settings(*overrides)


def _refused_key(*overrides: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate(_compose(*overrides))
    assert str(info.value) == f"{info.value.key}: {info.value.message}"
    return info.value


# -- Hydra: composition and validation --------------------------------------------------------
def test_secagg_is_off_by_default():
    cfg = validate(_compose())
    assert cfg.secagg.name == "none"


def test_secaggplus_group_composes_with_its_documented_defaults():
    cfg = validate(_compose("secagg=secaggplus"))
    a = cfg.secagg
    assert (a.name, a.k, a.threshold, a.clip, a.min_survivors) == (
        "secaggplus",
        None,
        None,
        SECAGG_CLIP,
        None,
    )


def test_secagg_keys_override():
    cfg = validate(
        _compose(
            "secagg=secaggplus",
            "secagg.k=6",
            "secagg.threshold=4",
            "secagg.clip=0.5",
            "secagg.min_survivors=5",
            "simulation.num_clients=20",
        )
    )
    a = cfg.secagg
    assert (a.k, a.threshold, a.clip, a.min_survivors) == (6, 4, 0.5, 5)


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        (["secagg.k=1"], "secagg.k", "must be >= 2"),
        (["secagg.k=0"], "secagg.k", "must be >= 2"),
        (["secagg.k=-4"], "secagg.k", "must be >= 2"),
        (["secagg.threshold=0"], "secagg.threshold", "must be >= 1"),
        (["secagg.k=4", "secagg.threshold=2"], "secagg.threshold", "above k/2"),
        (["secagg.k=4", "secagg.threshold=1"], "secagg.threshold", "above k/2"),
        (["secagg.k=5", "secagg.threshold=2"], "secagg.threshold", "above k/2"),
        (["secagg.k=4", "secagg.threshold=5"], "secagg.threshold", "at most k=4"),
        (["secagg.min_survivors=2"], "secagg.min_survivors", "must be >= 3"),
        (["secagg.clip=0"], "secagg.clip", "must be > 0"),
        (["secagg.clip=-1.5"], "secagg.clip", "must be > 0"),
        (["secagg.name=secagg"], "secagg.name", "must be one of"),
        (["secagg.name=SecAggPlus"], "secagg.name", "must be one of"),
        (["simulation.clients_per_round=1"], "simulation.clients_per_round", "at least 2"),
    ],
)
def test_validation_names_the_secagg_key(overrides: list[str], key: str, words: str):
    error = _refused_key("secagg=secaggplus", *overrides)
    assert error.key == key
    assert words in error.message, error.message


# an odd k is rounded up to the next even degree (a ring needs k/2 per side): 3 -> 4, 9 -> 10
@pytest.mark.parametrize(("k", "threshold"), [(2, 2), (3, 3), (4, 3), (4, 4), (9, 6), (10, 6)])
def test_thresholds_above_half_of_k_are_accepted(k: int, threshold: int):
    cfg = validate(
        _compose(
            "secagg=secaggplus",
            f"secagg.k={k}",
            f"secagg.threshold={threshold}",
            "simulation.num_clients=20",
        )
    )
    assert (cfg.secagg.k, cfg.secagg.threshold) == (k, threshold)


def test_clients_per_round_only_matters_with_secagg():
    cfg = validate(_compose("simulation.clients_per_round=1"))
    assert cfg.simulation.clients_per_round == 1


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("secagg=bogus", "secagg: no option 'bogus'"),
        ("secagg.kk=3", "kk"),
        ("secagg.k=many", "secagg.k"),
        ("secagg.clip=wide", "secagg.clip"),
    ],
)
def test_hydra_refuses_unknown_secagg_keys_and_types_by_name(override: str, words: str):
    with pytest.raises(Exception) as info:
        _compose("secagg=secaggplus", override)
    assert words in str(info.value), str(info.value)


def test_simulate_command_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture):
    code = simulate_main(
        [
            "secagg=secaggplus",
            "secagg.k=4",
            "secagg.threshold=2",
            f"hydra.run.dir={tmp_path / 'sim'}",
            "hydra/job_logging=none",
            "hydra/hydra_logging=none",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "fedops simulate: error: secagg.threshold: must be above k/2" in err, err
    assert not (tmp_path / "sim" / "state.sqlite").exists()  # refused before any run


@pytest.mark.parametrize(
    "overrides",
    [
        ["secagg.k=20", "secagg.threshold=15", "simulation.num_clients=10"],
        ["secagg.threshold=8", "simulation.num_clients=5"],
    ],
    ids=["k-beyond-clients", "threshold-beyond-default-k"],
)
def test_threshold_impossible_for_the_simulated_clients_is_refused(overrides: list[str]):
    try:
        validate(_compose("secagg=secaggplus", *overrides))
    except ConfigError as exc:
        assert exc.key == "secagg.threshold"
        return
    raise AssertionError(f"validate accepted {overrides}, which cannot run")


# -- the shared rule ---------------------------------------------------------------------------
def test_an_odd_k_is_checked_as_the_even_degree_it_becomes():
    error = _refused_key("secagg=secaggplus", "secagg.k=3", "secagg.threshold=2")
    assert error.key == "secagg.threshold"
    assert "4 neighbours" in error.message, error.message


def test_check_secagg_accepts_every_mode_and_the_defaults():
    for mode in SECAGG_MODES:
        check_secagg(mode, None, None, SECAGG_CLIP)
    check_secagg("secaggplus", 2, 2, 1e-9)
    check_secagg("secaggplus", None, 7, 1.0)  # threshold alone: checked at run time


# -- coordinator and client configs -------------------------------------------------------------
def _key(factory, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        factory(**kwargs)
    return info.value


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"name": "bogus"}, "secagg.name"),
        ({"name": "secaggplus", "k": 1}, "secagg.k"),
        ({"name": "secaggplus", "k": 4, "threshold": 2}, "secagg.threshold"),
        ({"name": "secaggplus", "k": 4, "threshold": 5}, "secagg.threshold"),
        ({"name": "secaggplus", "threshold": 0}, "secagg.threshold"),
        ({"name": "secaggplus", "clip": 0.0}, "secagg.clip"),
    ],
)
def test_coordinator_secagg_errors_name_the_key(kwargs, key):
    assert _key(CoordinatorConfig, secagg=SecAggConfig(**kwargs)).key == key


def test_coordinator_secagg_needs_two_clients():
    secagg = SecAggConfig(name="secaggplus")
    assert _key(CoordinatorConfig, secagg=secagg, min_clients=1).key == "min_clients"


def test_coordinator_accepts_secaggplus():
    cfg = CoordinatorConfig(secagg=SecAggConfig(name="secaggplus", k=6, threshold=4, clip=2.0))
    a = cfg.secagg
    assert (a.name, a.k, a.threshold, a.clip) == ("secaggplus", 6, 4, 2.0)
    assert CoordinatorConfig().secagg == SecAggConfig(name="none", clip=SECAGG_CLIP)


@pytest.mark.parametrize("key", ["identity_key", "trusted_keys"])
def test_client_refuses_missing_key_paths(tmp_path: Path, key: str):
    error = _key(ClientConfig, **{key: tmp_path / "missing"})
    assert error.key == key and "does not exist" in error.message
    existing = tmp_path / "there"
    existing.mkdir()
    assert getattr(ClientConfig(**{key: existing}), key) == existing


def test_client_require_secagg_defaults_off():
    assert ClientConfig().require_secagg is False
    assert ClientConfig(require_secagg=True).require_secagg is True


# -- the CLI --------------------------------------------------------------------------------
def _cli_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


COORDINATOR_BAD = [
    (["--secagg-threshold", "1", "--secagg-k", "4"], "--secagg-threshold: must be above k/2"),
    (["--secagg-threshold", "2", "--secagg-k", "4"], "--secagg-threshold: must be above k/2"),
    (["--secagg-threshold", "5", "--secagg-k", "4"], "--secagg-threshold: must be above k/2"),
    (["--secagg-threshold", "0"], "--secagg-threshold: must be >= 1"),
    (["--secagg-k", "1"], "--secagg-k: must be >= 2"),
    (["--secagg-clip", "0"], "--secagg-clip: must be > 0"),
    (["--secagg-clip", "-2"], "--secagg-clip: must be > 0"),
    (["--secagg-k", "many"], "--secagg-k: invalid int value"),
    (["--min-clients", "1"], "--min-clients: secure aggregation needs at least 2"),
]


@pytest.mark.parametrize(
    ("flags", "message"), COORDINATOR_BAD, ids=[" ".join(f) for f, _ in COORDINATOR_BAD]
)
def test_coordinator_cli_names_the_secagg_flag(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
):
    argv = ["coordinator", "--secagg", "secaggplus", "--run-dir", str(tmp_path / "run"), *flags]
    err = _cli_error(argv, capsys)
    assert message in err, err
    assert not (tmp_path / "run").exists()  # refused before anything started


def test_coordinator_cli_checks_secagg_flags_even_when_secagg_is_off(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    # set while secure aggregation is off, nothing would read them: refused by flag
    argv = ["coordinator", "--secagg-threshold", "1", "--secagg-k", "4"]
    err = _cli_error([*argv, "--run-dir", str(tmp_path / "run")], capsys)
    assert "--secagg-k: has no effect with secagg none: it is read by secaggplus only" in err, err


def test_coordinator_cli_refuses_an_unknown_mode(tmp_path: Path, capsys: pytest.CaptureFixture):
    err = _cli_error(["coordinator", "--secagg", "secagg"], capsys)
    assert "--secagg: invalid choice" in err, err


def test_coordinator_cli_maps_secagg_flags_onto_the_config():
    args = cli.build_parser().parse_args(
        [
            "coordinator",
            "--secagg",
            "secaggplus",
            "--secagg-k",
            "6",
            "--secagg-threshold",
            "4",
            "--secagg-clip",
            "0.25",
        ]
    )
    cfg = cli.config_of(args)
    assert isinstance(cfg, CoordinatorConfig)
    assert cfg.secagg == SecAggConfig(name="secaggplus", k=6, threshold=4, clip=0.25)


@pytest.mark.parametrize("flag", ["--identity-key", "--trusted-keys"])
def test_client_cli_names_a_missing_key_path(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture
):
    argv = ["client", "--task", "digits", "--site", "0", "--num-sites", "1"]
    err = _cli_error([*argv, flag, str(tmp_path / "nope")], capsys)
    assert f"{flag}: " in err and "does not exist" in err, err


def test_client_cli_maps_secagg_flags_onto_the_config(tmp_path: Path):
    key, trusted = tmp_path / "site.pem", tmp_path / "trusted"
    key.write_text("")
    trusted.mkdir()
    args = cli.build_parser().parse_args(
        [
            "client",
            "--task",
            "digits",
            "--site",
            "0",
            "--num-sites",
            "2",
            "--require-secagg",
            "--identity-key",
            str(key),
            "--trusted-keys",
            str(trusted),
        ]
    )
    cfg = cli.config_of(args)
    assert isinstance(cfg, ClientConfig)
    assert (cfg.require_secagg, cfg.identity_key, cfg.trusted_keys) == (True, key, trusted)


# -- a site's secure-aggregation floors (--secagg-min-* flags) -------------------------------------
SITE_FLOORS_BAD = [
    ({"secagg_min_cohort": 1}, "secagg_min_cohort", "must be >= 2, got 1"),
    ({"secagg_min_degree": 0}, "secagg_min_degree", "must be >= 1, got 0"),
    ({"secagg_max_colluders": -1}, "secagg_max_colluders", "must be >= 0, got -1"),
    ({"secagg_min_noise_multiplier": -0.5}, "secagg_min_noise_multiplier", "must be a number >= 0"),
    (
        {"secagg_min_noise_multiplier": float("nan")},
        "secagg_min_noise_multiplier",
        "must be a number >= 0",
    ),
    ({"secagg_max_l2_clip": 0.0}, "secagg_max_l2_clip", "must be a number > 0"),
    ({"secagg_max_l2_clip": float("inf")}, "secagg_max_l2_clip", "must be a number > 0"),
]


@pytest.mark.parametrize(("kwargs", "key", "words"), SITE_FLOORS_BAD)
def test_client_secagg_floors_are_checked_by_name(kwargs, key, words):
    error = _key(ClientConfig, **kwargs)
    assert error.key == key and words in error.message, error


def test_client_secagg_floors_default_to_unset_and_accept_their_boundaries():
    cfg = ClientConfig()
    assert (
        cfg.secagg_min_cohort,
        cfg.secagg_min_degree,
        cfg.secagg_max_colluders,
        cfg.secagg_min_noise_multiplier,
        cfg.secagg_max_l2_clip,
    ) == (None, None, None, None, None)
    ClientConfig(
        secagg_min_cohort=2,
        secagg_min_degree=1,
        secagg_max_colluders=0,
        secagg_min_noise_multiplier=0.0,
        secagg_max_l2_clip=1e-9,
    )


def test_client_cli_maps_the_secagg_floor_flags_onto_the_config():
    base = ["client", "--task", "digits", "--site", "0", "--num-sites", "2"]
    floors = [
        *("--secagg-min-cohort", "5", "--secagg-min-degree", "6"),
        *("--secagg-max-colluders", "2", "--secagg-min-noise-multiplier", "0.8"),
        *("--secagg-max-l2-clip", "1.5"),
    ]
    cfg = cli.config_of(cli.build_parser().parse_args([*base, *floors]))
    assert isinstance(cfg, ClientConfig)
    assert (
        cfg.secagg_min_cohort,
        cfg.secagg_min_degree,
        cfg.secagg_max_colluders,
        cfg.secagg_min_noise_multiplier,
        cfg.secagg_max_l2_clip,
    ) == (5, 6, 2, 0.8, 1.5)
    plain = cli.config_of(cli.build_parser().parse_args(base))
    assert plain.secagg_min_cohort is None and plain.secagg_max_l2_clip is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--secagg-min-cohort", "1"], "--secagg-min-cohort: must be >= 2"),
        (["--secagg-max-colluders", "-1"], "--secagg-max-colluders: must be >= 0"),
        (["--secagg-min-degree", "two"], "--secagg-min-degree: invalid int value"),
        (["--secagg-max-l2-clip", "0"], "--secagg-max-l2-clip: must be a number > 0"),
    ],
)
def test_client_cli_names_a_bad_secagg_floor_flag(flags, message, capsys: pytest.CaptureFixture):
    argv = ["client", "--task", "digits", "--site", "0", "--num-sites", "1", *flags]
    err = _cli_error(argv, capsys)
    assert message in err, err
