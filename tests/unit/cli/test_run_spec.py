"""A standing federation's run file becomes the same config as the coordinator's flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedops.cli.configs import config_of
from fedops.cli.parser import build_parser
from fedops.cli.run_spec import parse_run_spec
from fedops.runtime.run_queue import SpecError

WHERE = {"run_dir": Path("runs/x"), "address": "127.0.0.1:0", "kit": None}


def test_a_run_file_means_what_the_same_flags_mean():
    spec = "task: digits\nrounds: 4\nmin_clients: 3\nepochs: 2\nlr: 0.1\nstrategy: fedadam\n"
    typed = build_parser().parse_args(
        [
            "coordinator",
            *("--task", "digits", "--rounds", "4", "--min-clients", "3", "--epochs", "2"),
            *("--lr", "0.1", "--strategy", "fedadam", "--run-dir", "runs/x"),
            *("--address", "127.0.0.1:0"),
        ]
    )
    assert parse_run_spec(spec, **WHERE) == config_of(typed)


def test_sections_may_be_nested_as_in_the_simulator():
    cfg = parse_run_spec(
        "task: digits\nclient: {epochs: 3, batch_size: 8}\nstrategy: {name: fedprox, mu: 0.2}\n"
        "secagg: none\nadaptive_clipping: false\n",
        **WHERE,
    )
    assert (cfg.train.epochs, cfg.train.batch_size) == (3, 8)
    assert (cfg.strategy.name, cfg.strategy.mu) == ("fedprox", 0.2)


@pytest.mark.parametrize(
    ("spec", "refusal"),
    [
        ("task: digits\nepochs: x\n", "epochs: invalid int value"),
        ("task: digits\nrounds: 0\n", "rounds: must be >= 1"),
        ("task: digits\nroundz: 3\n", "roundz: not a setting of a run"),
        ("task: digits\naddress: 0.0.0.0:1\n", "address: set by `fedops serve`"),
        ("task: digits\nrun_dir: /etc\n", "run_dir: set by `fedops serve`"),
        ("task: digits\nkit: /tmp/kit\n", "kit: set by `fedops serve`"),
        ("task: digits\ninsecure: true\n", "insecure: set by `fedops serve`"),
        ("task: nope.py\n", "task: .*does not exist"),
        ("rounds: 2\n", "task: a standing federation's run names its task"),
        ("- task\n", "a mapping of the coordinator's flags"),
        ("task: [unclosed\n", "not YAML"),
        ("task: digits\nclient: {epochs: {a: 1}}\n", "client.epochs: a plain value"),
        # serve-owned flags by another spelling (red team, issue 20): abbreviations argparse
        # would accept, a key carrying its own value, help
        ("task: digits\nmetrics_p: 9101\n", "metrics_p: not a setting of a run"),
        ("task: digits\ninsec: true\n", "insec: not a setting of a run"),
        ("task: digits\n'metrics_port=9100': true\n", "keys are the coordinator's flag names"),
        ("task: digits\nhelp: true\n", "help: set by `fedops serve`"),
        ("task: digits\nMIN_CLIENTS: 3\n", "keys are the coordinator's flag names"),
        # a few hundred bytes that expand to gigabytes, and lists past any flag's use
        ("a: &a [1, 1]\nb: &b [*a, *a]\ntask: digits\nepochs: *b\n", "anchors and aliases"),
        ("task: digits\nepochs: [" + ", ".join(["1"] * 40) + "]\n", "at most 32 values"),
        ("task: digits\n# " + "x" * 70_000 + "\n", "at most 65536 bytes"),
        ("task: !!python/name:os.system\n", "not YAML"),
        ("task: digits\nmlflow_uri: http://10.0.0.1/x\n", "mlflow_uri: set by `fedops serve`"),
        ("task: digits\nrounds: " + "9" * 40 + "\n", "rounds: 9+... is out of range"),
        ("task: digits\nrounds: " + "9" * 5000 + "\n", "not YAML"),
        ("task: digits\nx: " + "[" * 3000 + "\n", "not YAML|nests at most"),
        ("1: 2\n", "keys are the coordinator's flag names"),
    ],
)
def test_a_bad_run_file_is_refused_by_key(spec: str, refusal: str):
    with pytest.raises(SpecError, match=refusal):
        parse_run_spec(spec, **WHERE)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        # nothing would read them: refused when the run is submitted, not ignored when served
        ("task: digits\nsecagg_k: 4\n", "secagg.k: has no effect with secagg none"),
        ("task: digits\nmonitoring: none\npsi_alert: 0.5\n", "monitoring.psi_alert: has no"),
        # one setting, two keys: neither wins by coming last
        (
            "task: digits\nepochs: 2\nclient: {epochs: 3}\n",
            "client.epochs: set twice, as epochs and as client.epochs",
        ),
        ("task: digits\nmin_clients: 2\nmin-clients: 3\n", "min-clients: set twice"),
    ],
)
def test_a_run_file_setting_nothing_reads_or_set_twice_is_refused(spec: str, says: str):
    with pytest.raises(SpecError) as info:
        parse_run_spec(spec, **WHERE)
    assert str(info.value).startswith(says), str(info.value)
