"""A Flower app as a fedops site (issue 20 items 4-5): parameters both ways, the config
the app is sent, its run and node config, and what a Flower app site refuses."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from fedops.core.monitoring.profile import MonitorSpec
from fedops.core.train_settings import TrainSettings
from fedops.core.training import TrainConfig
from fedops.tasks.fit_settings import PolicyRefusal, TrainCaps
from fedops.tasks.flower_app import (
    INSTALL_HINT,
    FlowerApp,
    FlowerAppError,
    load_flower_app,
    split_spec,
)
from fedops.tasks.flower_site import FlowerSite, initial_of
from fedops.tasks.loader import TaskNotAllowed, source_digest

SEEN: dict[str, Any] = {}


def _message_app() -> ClientApp:
    """A Message API app that records what it is sent and adds 1 to every array."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        arrays = msg.content["arrays"]
        SEEN["keys"] = list(arrays.keys())
        SEEN["config"] = dict(msg.content["config"])
        SEEN["node_config"] = dict(context.node_config)
        new = ArrayRecord({k: Array(v.numpy() + 1) for k, v in arrays.items()})
        metrics = MetricRecord({"train_loss": 0.5, "num-examples": 40})
        return Message(RecordDict({"arrays": new, "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        metrics = MetricRecord({"eval_loss": 0.25, "eval_acc": 0.75, "num-examples": 10})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


class _Client(NumPyClient):
    def get_parameters(self, config):
        return [np.zeros((2, 3)), np.zeros(2)]

    def fit(self, parameters, config):
        SEEN["fit_config"] = dict(config)
        return [p * 2 + 1 for p in parameters], 7, {"note": "text", "score": 3}

    def evaluate(self, parameters, config):
        return 0.4, 5, {"accuracy": 0.9}


def _site(app: Any, *, message_api: bool, initial: Any = None, **kw: Any) -> FlowerSite:
    flower = FlowerApp(
        spec="test:app",
        app=app,
        message_api=message_api,
        digest="d" * 64,
        run_config={"local-epochs": 3},
        initial=initial,
    )
    return FlowerSite(flower, site=1, num_sites=4, train_config=TrainConfig(lr=0.2), **kw)


def test_a_message_api_app_gets_named_arrays_and_the_round_config():
    initial = {"fc.weight": np.ones((2, 3), np.float32), "fc.bias": np.zeros(2, np.float32)}
    site = _site(_message_app(), message_api=True, initial=lambda: initial)
    params = site.initial_params()
    assert list(params) == ["fc.weight", "fc.bias"]
    train = TrainSettings(epochs=2, batch_size=16, lr=0.3)
    new, n, metrics = site.fit(params, 4, {"seed": 5.0, "proximal_mu": 0.1}, train=train)
    assert SEEN["keys"] == ["fc.weight", "fc.bias"]
    config = SEEN["config"]
    assert (config["epochs"], config["batch_size"], config["lr"]) == (2, 16, 0.3)
    assert (config["seed"], config["proximal_mu"], config["server-round"]) == (5, 0.1, 4)
    assert isinstance(config["epochs"], int)
    assert SEEN["node_config"] == {"partition-id": 1, "num-partitions": 4}
    np.testing.assert_array_equal(new["fc.weight"], np.full((2, 3), 2, np.float32))
    assert new["fc.weight"].dtype == np.float32
    assert (n, metrics) == (40, {"train_loss": 0.5})
    assert site.num_train_examples == 40
    n, metrics = site.evaluate(new, 4)
    assert n == 10 and metrics["accuracy"] == 0.75 and metrics["loss"] == 0.25


def test_a_numpy_client_crosses_as_p0_p1_and_back_in_order():
    app = ClientApp(client_fn=lambda context: _Client().to_client())
    site = _site(app, message_api=False)
    params = site.initial_params()
    assert list(params) == ["p0", "p1"] and params["p0"].shape == (2, 3)
    assert site.num_train_examples == 1  # a Flower app tells its count when it trains
    params = {"p0": np.full((2, 3), 1.0, np.float32), "p1": np.arange(2, dtype=np.float32)}
    new, n, metrics = site.fit(params, 2, {"seed": 0.0})
    np.testing.assert_array_equal(new["p0"], np.full((2, 3), 3.0))
    np.testing.assert_array_equal(new["p1"], np.array([1.0, 3.0]))
    assert new["p0"].dtype == np.float32  # cast to what was sent
    assert (n, metrics) == (7, {"score": 3.0})  # a string metric is dropped
    assert SEEN["fit_config"]["lr"] == 0.2 and SEEN["fit_config"]["server-round"] == 2
    assert site.evaluate(new, 2) == (5, {"accuracy": 0.9, "loss": 0.4})


def test_an_answer_of_another_shape_is_named():
    class Wrong(_Client):
        def fit(self, parameters, config):
            return [np.zeros((3, 3)), parameters[1]], 1, {}

    site = _site(ClientApp(client_fn=lambda c: Wrong().to_client()), message_api=False)
    with pytest.raises(FlowerAppError, match="'p0' came back with shape"):
        site.fit(site.initial_params(), 1, {})


def test_a_message_api_app_without_an_initial_model_says_which_setting_gives_it():
    site = _site(_message_app(), message_api=True)
    with pytest.raises(FlowerAppError, match="flower_initial=module:attr"):
        site.initial_params()


def test_initial_models_from_torch_or_lists():
    torch = pytest.importorskip("torch")
    named = initial_of(torch.nn.Linear(3, 2))
    assert list(named) == ["weight", "bias"] and named["weight"].shape == (2, 3)
    assert list(initial_of([np.zeros(2), np.ones(3)])) == ["p0", "p1"]
    record = ArrayRecord({"w": Array(np.ones(2))})
    assert list(initial_of(record)) == ["w"]
    with pytest.raises(FlowerAppError, match="expected a torch module"):
        initial_of("model")


def test_local_dp_and_monitoring_are_refused_by_name():
    site = _site(_message_app(), message_api=True, initial=lambda: {"w": np.zeros(2)})
    with pytest.raises(PolicyRefusal, match=r"local DP .*Flower app"):
        site.fit({"w": np.zeros(2)}, 1, {"dp_noise_multiplier": 1.0, "dp_max_grad_norm": 1.0})
    spec = MonitorSpec(edges={}, num_classes=2, positive_label=1)
    with pytest.raises(PolicyRefusal, match="monitoring=none"):
        site.check_report(spec)


def test_the_site_caps_apply_to_what_a_flower_app_is_sent():
    site = _site(_message_app(), message_api=True, train_caps=TrainCaps(max_epochs=1))
    with pytest.raises(PolicyRefusal, match="--max-epochs"):
        site.fit({"w": np.zeros(2)}, 1, {}, train=TrainSettings(epochs=3, batch_size=8, lr=0.1))


def test_the_coordinators_config_cannot_replace_the_checked_training_settings():
    """A hostile config carrying epochs=1e9 (or NaN settings) must not reach the app."""
    site = _site(_message_app(), message_api=True, train_caps=TrainCaps(max_epochs=2))
    train = TrainSettings(epochs=1, batch_size=8, lr=0.1)
    for hostile in ({"epochs": 1e9}, {"lr": float("nan"), "batch_size": 0.0}):
        with pytest.raises(PolicyRefusal, match=r"travel only in Task\.train"):
            site.fit({"w": np.zeros(2)}, 1, hostile, train=train)
    with pytest.raises(PolicyRefusal, match="proximal_mu=nan"):
        site.fit({"w": np.zeros(2)}, 1, {"proximal_mu": float("nan")}, train=train)


@pytest.mark.parametrize("count", [-5, float("inf"), float("nan"), 2.5, True, "7"])
def test_an_app_example_count_that_is_not_a_whole_number_is_refused(count):
    from fedops.tasks.flower_calls import checked_count

    with pytest.raises(FlowerAppError, match="num-examples"):
        checked_count(count, "fit")
    assert checked_count(12.0, "fit") == 12


def _project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Flower project on the path: pyproject with run config, a NumPyClient app."""
    pkg = tmp_path / "proj" / "flwr_proj_app"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "client_app.py").write_text(
        textwrap.dedent("""
            import numpy as np
            from flwr.client import ClientApp, NumPyClient

            class C(NumPyClient):
                def get_parameters(self, config):
                    return [np.zeros(3)]

            def client_fn(context):
                return C()

            app = ClientApp(client_fn=client_fn)
            not_an_app = 3
        """)
    )
    (tmp_path / "proj" / "pyproject.toml").write_text(
        "[tool.flwr.app.config]\nlocal-epochs = 4\n[tool.flwr.app.config.model]\nwidth = 8\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "proj"))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    return pkg


def test_loading_an_app_reads_its_project_run_config_and_checks_its_digest(tmp_path, monkeypatch):
    _project(tmp_path, monkeypatch)
    app = load_flower_app("flwr_proj_app.client_app:app")
    assert not app.message_api
    assert app.run_config == {"local-epochs": 4, "model.width": 8}
    assert app.digest == source_digest("flwr_proj_app.client_app")
    factory = load_flower_app("flwr_proj_app.client_app:client_fn")  # a bare client_fn
    assert list(
        FlowerSite(factory, site=0, num_sites=1, train_config=TrainConfig()).initial_params()
    ) == ["p0"]
    with pytest.raises(TaskNotAllowed, match="none of its code was run"):
        load_flower_app("flwr_proj_app.client_app:app", allowed=["0" * 64])
    with pytest.raises(FlowerAppError, match="expected a flwr ClientApp"):
        load_flower_app("flwr_proj_app.client_app:not_an_app")
    with pytest.raises(FlowerAppError, match="has no 'missing'"):
        load_flower_app("flwr_proj_app.client_app:missing")
    with pytest.raises(FlowerAppError, match="cannot import 'no_such_flower_module'"):
        load_flower_app("no_such_flower_module:app")


def test_a_spec_must_be_module_colon_attr():
    assert split_spec("a.b:app") == ("a.b", "app")
    for bad in ("a.b", ":app", "a.b:", "a:b.c"):
        with pytest.raises(FlowerAppError, match="module:attr"):
            split_spec(bad)


def test_without_flwr_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "flwr", None)  # `import flwr` now fails
    with pytest.raises(FlowerAppError) as info:
        load_flower_app("flower_apps.quickstart_torch:app")
    assert INSTALL_HINT in str(info.value)
