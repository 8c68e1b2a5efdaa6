"""``fedops simulate flower_app=...``: Flower apps as virtual clients (issue 20 items 4-5).

The apps are tests/support/flower_apps, written as Flower's examples write them: a
Message API ClientApp on a torch model and a scikit-learn NumPyClient.
"""

from __future__ import annotations

import logging
import sys

import pytest

pytest.importorskip("flwr")

import fedops
from fedops.config.hydra_app import compose_settings
from fedops.runtime.rules import ConfigError
from fedops.runtime.simulate_settings import validate
from fedops.tasks.flower_app import INSTALL_HINT

TORCH_APP = (
    "flower_app=flower_apps.quickstart_torch:app",
    "flower_initial=flower_apps.quickstart_torch:Net",
)
SKLEARN_APP = ("flower_app=flower_apps.sklearn_logreg:app",)


def _accuracies(summary_dir) -> list[float]:
    from fedops.reporting.plots import read_metrics

    return [row["eval_accuracy"] for row in read_metrics(summary_dir)]


def test_the_torch_client_app_trains_and_improves_on_the_sequential_backend(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="fedops.simulate")
    summary = fedops.simulate(
        *TORCH_APP, "rounds=4", "simulation.num_clients=3", "client.lr=0.1", run_dir=tmp_path
    )
    assert summary["status"] == "completed" and summary["rounds_completed"] == 4
    assert summary["backend"] == "sequential" and summary["flower_app"] == TORCH_APP[0][11:]
    assert "trains in the Flower app's own loop" in caplog.text
    accuracy = _accuracies(tmp_path)
    assert accuracy[-1] > accuracy[0] + 0.2 and accuracy[-1] > 0.75, accuracy


def test_the_sklearn_numpy_client_trains_logistic_regression_end_to_end(tmp_path):
    summary = fedops.simulate(
        *SKLEARN_APP, "rounds=3", "simulation.num_clients=3", run_dir=tmp_path
    )
    assert summary["status"] == "completed"
    accuracy = _accuracies(tmp_path)
    assert accuracy[-1] > 0.8 and accuracy[-1] >= accuracy[0], accuracy
    from fedops.runtime.store import RunStore

    # coef_ and intercept_ are the model, as named float64 arrays p0 and p1
    store = RunStore(tmp_path)
    try:
        params = store.load_round(3)
    finally:
        store.close()
    assert {k: v.shape for k, v in params.items()} == {"p0": (10, 64), "p1": (10,)}


def test_flower_app_sites_take_part_in_a_secagg_plus_round(tmp_path):
    summary = fedops.simulate(
        *SKLEARN_APP, "secagg=secaggplus", "rounds=2", "simulation.num_clients=4",
        run_dir=tmp_path,
    )  # fmt: skip
    assert summary["status"] == "completed" and summary["secagg"] == "secaggplus"
    accuracy = _accuracies(tmp_path)
    assert accuracy[-1] > 0.7, accuracy


@pytest.mark.parametrize(
    ("override", "key", "says"),
    [
        ("privacy=local", "privacy", "DP-SGD loop"),
        ("monitoring=default", "monitoring", "monitoring=none"),
        ("simulation=process", "simulation.backend", "simulation=sequential"),
        ("task=digits", "flower_app", "not both"),
        ("dataset.alpha=0.3", "dataset.alpha", "Flower app loads its data"),
        ("simulation.data=lazy", "simulation.data", "a Flower app's clients load their own"),
    ],
)
def test_what_a_flower_app_cannot_run_is_refused_by_key(override, key, says):
    with pytest.raises(ConfigError) as info:
        validate(compose_settings(*SKLEARN_APP, override))
    assert info.value.key == key and says in info.value.message


def test_a_bad_spec_or_initial_is_refused_by_key(tmp_path):
    with pytest.raises(ConfigError, match="module:attr") as info:
        validate(compose_settings("flower_app=flower_apps.sklearn_logreg"))
    assert info.value.key == "flower_app"
    with pytest.raises(ConfigError, match="read with flower_app= only"):
        validate(compose_settings("flower_initial=flower_apps.quickstart_torch:Net"))
    with pytest.raises(ConfigError, match="flower_initial=module:attr") as info:
        fedops.simulate("flower_app=flower_apps.quickstart_torch:app", "rounds=1", run_dir=tmp_path)
    assert info.value.key == "flower_initial"


def test_without_flwr_a_flower_run_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "flwr", None)
    with pytest.raises(ConfigError, match=INSTALL_HINT.replace("[", r"\[").replace("]", r"\]")):
        fedops.simulate(*SKLEARN_APP, "rounds=1", run_dir=tmp_path)
