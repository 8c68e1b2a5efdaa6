"""Every flag reaches the setting it names, and ``--help`` shows every default.

In-process: the CLI's parser and config builder, then the coordinator's own builders
(strategy, driver, privacy, monitoring, run store, server), so a flag that is parsed
but dropped on the way fails here. The coordinator's gRPC server binds 127.0.0.1:0.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedops import __version__
from fedops.cli import main
from fedops.cli.configs import config_of as _config
from fedops.cli.help import all_parsers
from fedops.cli.parser import build_parser
from fedops.coordinator import app
from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.runtime.control import RunControl
from fedops.runtime.run import make_strategy
from fedops.runtime.schema import flag_of
from fedops.runtime.settings import ConfigError
from fedops.runtime.store import RunStore


def coordinator(*flags: str) -> Any:
    return _config(build_parser().parse_args(["coordinator", *flags]))


def client(*flags: str) -> Any:
    base = ["client", "--task", "digits", "--site", "0", "--num-sites", "2"]
    return _config(build_parser().parse_args([*base, *flags]))


CENTRAL = ("--privacy", "central")

# flag and value -> where the setting lands (a built object, not only the config field)
COORDINATOR_FLAGS: list[tuple[tuple[str, ...], Callable[[Any], Any], Any]] = [
    ((*CENTRAL, "--adaptive-clipping"), lambda c: app._privacy(c).adaptive is not None, True),
    ((*CENTRAL,), lambda c: app._privacy(c).adaptive is None, True),
    ((*CENTRAL, "--accountant", "rdp"), lambda c: app._privacy(c).accountant, "rdp"),
    ((*CENTRAL, "--delta", "1e-7"), lambda c: app._privacy(c).delta, 1e-7),
    (("--drift-action", "exclude"), lambda c: app._monitoring(c).action, "exclude"),
    (("--psi-alert", "0.4"), lambda c: app._monitoring(c).thresholds.psi, 0.4),
    (("--js-alert", "0.3"), lambda c: app._monitoring(c).thresholds.js, 0.3),
    (("--positive-label", "3"), lambda c: app._monitoring(c).positive_label, 3),
    (("--monitoring", "none"), app._monitoring, None),
    (("--monitoring", "default", *CENTRAL), lambda c: app._monitoring(c) is not None, True),
    (("--min-fit-results", "4"), lambda c: app._driver(c).min_fit_results, 4),
    (
        ("--strategy", "multi_krum", "--min-clients", "8", "--krum-select", "5"),
        lambda c: make_strategy(c.strategy).select,  # type: ignore[attr-defined]
        5,
    ),
    (
        ("--strategy", "krum", "--min-clients", "7", "--byzantine", "2"),
        lambda c: make_strategy(c.strategy).byzantine,
        2,
    ),
    (("--strategy", "fedprox", "--mu", "0.3"), lambda c: make_strategy(c.strategy).mu, 0.3),
    (
        ("--strategy", "fedavgm", "--server-momentum", "0.5"),
        lambda c: make_strategy(c.strategy).momentum,
        0.5,
    ),
    (
        ("--strategy", "fedyogi", "--server-beta1", "0.5"),
        lambda c: make_strategy(c.strategy).beta1,
        0.5,
    ),
    (
        ("--strategy", "trimmed_mean", "--min-clients", "5", "--trim-fraction", "0.2"),
        lambda c: make_strategy(c.strategy).beta,
        0.2,
    ),
    (("--rounds", "7"), lambda c: app._driver(c).rounds, 7),
    (("--seed", "11"), lambda c: app._driver(c).seed, 11),
    (("--clients-per-round", "3"), lambda c: app._driver(c).clients_per_round, 3),
    (("--round-timeout", "9"), lambda c: app._driver(c).round_timeout_s, 9.0),
    (("--secagg", "secaggplus", "--secagg-k", "4"), lambda c: app._secagg(c).degree, 4),
    (("--secagg", "secaggplus", "--secagg-clip", "2.5"), lambda c: app._secagg(c).clip, 2.5),
    (("--mlflow-uri", "sqlite:///m.db"), lambda c: c.mlflow_uri, "sqlite:///m.db"),
    (("--mlflow-experiment", "e1"), lambda c: c.mlflow_experiment, "e1"),
]


@pytest.mark.parametrize(
    ("flags", "setting", "expected"),
    COORDINATOR_FLAGS,
    ids=[" ".join(f) for f, *_ in COORDINATOR_FLAGS],
)
def test_a_coordinator_flag_reaches_its_setting(flags, setting, expected):
    assert setting(coordinator(*flags)) == expected


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (("--mu", "0.3"), "strategy.mu"),
        (("--strategy", "median", "--trim-fraction", "0.2"), "strategy.trim_fraction"),
        (("--strategy", "trimmed_mean", "--byzantine", "2"), "strategy.byzantine"),
        (("--strategy", "krum", "--min-clients", "9", "--krum-select", "2"), "strategy.select"),
        (("--server-beta2", "0.9"), "strategy.beta2"),
        (("--strategy", "fedadagrad", "--server-beta2", "0.9"), "strategy.beta2"),
        (("--strategy", "fedadam", "--server-momentum", "0.5"), "strategy.server_momentum"),
        (("--strategy", "fedavgm", "--server-tau", "0.1"), "strategy.tau"),
    ],
)
def test_a_strategy_flag_the_strategy_does_not_read_is_refused(flags, flag):
    with pytest.raises(ConfigError) as refused:
        coordinator(*flags)
    assert refused.value.key == flag
    assert flag_of(refused.value.key) == flags[-2]  # the CLI names the flag the user typed
    assert "has no effect" in refused.value.message


def test_keep_checkpoints_reaches_the_run_store(tmp_path: Path):
    cfg = coordinator("--keep-checkpoints", "5", "--run-dir", str(tmp_path / "run"))
    store = RunStore(cfg.run_dir, keep_checkpoints=cfg.keep_checkpoints)
    try:
        assert store.keep_checkpoints == 5
    finally:
        store.close()


def test_max_workers_reaches_the_servers_thread_pool(tmp_path: Path):
    cfg = coordinator("--max-workers", "7", "--address", "127.0.0.1:0")
    transport = GrpcTransport(run_id="r", heartbeat_interval_s=1.0, liveness_timeout_s=5.0)
    server, port = app._serve(
        transport,
        cfg,
        None,
        control=RunControl(rounds_planned=1),
        run_id="r",
        audit=lambda event, payload: None,
    )
    try:
        assert port > 0
        assert server._pool._max_workers == 7
    finally:
        transport.close(grace_s=0.0)
        server.stop(grace=0).wait(5)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--optimizer", "adam"), {"optimizer": "adam"}),
        (("--epochs", "2"), {"epochs": 2}),
        (("--batch-size", "8"), {"batch_size": 8}),
        (("--lr", "0.05"), {"lr": 0.05}),
        (("--momentum", "0.9"), {"momentum": 0.9}),
        (("--lr", "0.4", "--lr-decay", "0.5"), {"lr": 0.4 * 0.5**2}),  # round 3's
    ],
)
def test_a_coordinator_training_flag_reaches_the_fit_tasks(flags, expected):
    """The run owns the training settings: the coordinator's flags reach the driver's
    per-round settings, which every fit task carries (round 3 here)."""
    train = app._driver(coordinator(*flags)).train_at(3)
    assert train is not None
    for field, value in expected.items():
        assert getattr(train, field) == pytest.approx(value)


@pytest.mark.parametrize(
    ("flag", "cap"),
    [("--epochs", "--max-epochs"), ("--batch-size", "--max-batch-size"), ("--lr", "--max-lr")],
)
def test_a_site_passing_a_training_flag_is_told_it_moved_to_the_run(flag, cap, capsys):
    """The site's old training flags: a clear error naming the coordinator's flag and the
    site's cap, not argparse's bare "unrecognized arguments", and no traceback."""
    base = ["client", "--task", "digits", "--site", "0", "--num-sites", "2"]
    with pytest.raises(SystemExit) as exited:
        main([*base, flag, "3"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag} moved to the run" in err
    assert f"fedops coordinator {flag}" in err and cap in err
    assert "unrecognized" not in err and "Traceback" not in err


def test_optimizer_on_a_site_is_told_it_moved_even_without_a_value(capsys):
    with pytest.raises(SystemExit):
        main(["client", "--optimizer"])
    err = capsys.readouterr().err
    assert "--optimizer moved to the run" in err and "client.optimizer" in err


def test_a_site_cap_flag_reaches_the_sites_policy():
    from fedops.client.site_config import site_policy

    caps = site_policy(client("--max-epochs", "3", "--max-lr", "0.2"), None).train_caps
    assert (caps.max_epochs, caps.max_batch_size, caps.max_lr) == (3, None, 0.2)


def test_site_name_names_the_site():
    from fedops.client.agent import site_name

    assert site_name(client("--site-name", "st-mary"), None) == "st-mary"
    assert site_name(client(), None) == "site-0"


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"fedops {__version__}"


def test_verbose_turns_on_debug_logging(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    before = root.level
    try:  # `report` on an empty directory fails fast, after logging is set up
        main(["-v", "report", str(tmp_path / "missing")])
        assert root.level == logging.DEBUG
        main(["report", str(tmp_path / "missing")])
        assert root.level == logging.INFO
    finally:
        root.setLevel(before)


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]


def test_every_option_of_every_command_has_help_that_shows_its_default():
    missing, no_default = [], []
    for parser in all_parsers(build_parser()):
        formatter = parser.formatter_class(parser.prog)
        for action in _options(parser):
            text = formatter._get_help_string(action) or ""
            if not action.help:
                missing.append(f"{parser.prog} {action.option_strings[0]}")
            shown = action.default not in (None, False, "", argparse.SUPPRESS)
            if shown and "default" not in text:
                no_default.append(f"{parser.prog} {action.option_strings[0]}")
    assert missing == []
    assert no_default == []


def test_help_shows_a_default_the_flag_text_did_not_state(capsys):
    with pytest.raises(SystemExit):
        main(["coordinator", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--seed SEED seed of sampling, init and shuffling (default: 0)" in out
    assert "how updates are combined: fedadagrad, fedadam, fedavg, fedavgm," in out  # sorted
    assert "or module:Class (a user's strategy class," in out
    assert "PYTHONPATH) (default: fedavg)" in out
