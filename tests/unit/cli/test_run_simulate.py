"""``fedops run simulate``: one run file, read the same way by the federation and the simulator."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fedops.cli.run_simulate import simulate_overrides
from fedops.cli.run_spec import parse_run_spec
from fedops.config.hydra_app import compose_settings
from fedops.runtime.run_queue import SpecError

RUN = """\
task: digits
rounds: 4
seed: 7
min_clients: 3
round_timeout: 30
client: {epochs: 2, batch_size: 8, lr: 0.1, lr_decay: 0.9}
strategy: {name: fedprox, mu: 0.3}
privacy: central
noise_multiplier: 0.7
clip_norm: 2.0
publish_participants: true
"""


def test_the_simulated_run_has_the_deployed_runs_settings():
    deployed = parse_run_spec(RUN, run_dir=Path("x"), address="127.0.0.1:0", kit=None)
    overrides, skipped = simulate_overrides(RUN)
    simulated = compose_settings(*overrides, "simulation.num_clients=3")
    assert simulated.client == deployed.train
    assert simulated.strategy == deployed.strategy
    assert simulated.privacy == deployed.privacy
    assert (simulated.rounds, simulated.seed, simulated.task) == (4, 7, "digits")
    # the network's settings are named with their reason, not dropped in silence
    assert set(skipped) == {"min_clients", "round_timeout"}
    assert all(reason for reason in skipped.values())


def test_a_run_file_the_federation_refuses_is_refused_here_too():
    with pytest.raises(SpecError, match="epochs: invalid int value"):
        simulate_overrides("task: digits\nepochs: x\n")
    with pytest.raises(SpecError, match="address: set by `fedops serve`"):
        simulate_overrides("task: digits\naddress: 127.0.0.1:1\n")


@pytest.mark.parametrize("name", ["${oc.env:HOME}.py", "a,b.py", "[1,2].py", "a=b.py", "it's.py"])
def test_values_hydra_would_read_as_syntax_are_refused(tmp_path: Path, name: str):
    """A value the federation takes literally (a task file's path) must not become Hydra
    syntax (an interpolation, a sweep, a list) in the simulation (red team, issue 20)."""
    task = tmp_path / name
    task.write_text("def build_model():\n    pass\n\n\ndef load_data(s, n):\n    pass\n")
    with pytest.raises(SpecError, match="plain values only"):
        simulate_overrides(yaml.safe_dump({"task": str(task)}))
