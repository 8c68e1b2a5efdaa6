"""The round driver with the optional strategy hooks: per-client fit configs reach each
site, a strategy's own fit metrics land in the round's line, and the features that must
not see either (SecAgg+, central DP, unreleased site metrics) keep them out."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytest

from fedops.core.params import Params
from fedops.core.results import FitResult, StageResult
from fedops.core.rounds import Phase
from fedops.core.strategies import ClientInfo, FedProx
from fedops.core.training import TrainConfig, get_params
from fedops.crypto import Crypto
from fedops.runtime.driver import DriverConfig, RoundDriver
from fedops.runtime.privacy import PrivacySettings, privacy_round
from fedops.runtime.round_plugin import EvaluationAsk, RoundContext, RoundPlugin
from fedops.runtime.secure_fit import SecAggSettings, SecureFit
from fedops.runtime.store import RunStore
from fedops.runtime.transport import Instruction
from fedops.simulation.inmemory import InMemoryTransport
from fedops.tasks import Task, load_task
from fedops.tasks.site import Site

TRAIN = TrainConfig(epochs=1, batch_size=16, lr=0.5)


@dataclass(frozen=True)
class Hooked(FedProx):
    """site-1 trains with its own μ and a custom key; fit metrics as min and count."""

    def client_fit_config(
        self, server_round: int, client: ClientInfo, base: Mapping[str, float]
    ) -> dict[str, float]:
        if client.node_id == "site-1":
            return {"proximal_mu": 0.5, "group": float(client.cohort_size)}
        return {}

    def aggregate_fit_metrics(
        self, server_round: int, results: Sequence[FitResult | StageResult]
    ) -> dict[str, float]:
        losses = [r.metrics["train_loss"] for r in results]
        return {"train_loss_min": min(losses), "fit_reports": float(len(results))}


class RecordingSite(Site):
    """Keeps the config of every fit task it gets."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.configs: list[dict[str, float]] = []

    def fit(self, params: Params, server_round: int, config: Mapping[str, float], **kw):  # type: ignore[no-untyped-def]
        self.configs.append(dict(config))
        return super().fit(params, server_round, config, **kw)


class Withhold(RoundPlugin):
    """The sites' metrics stay out of the round (as DP without release_site_metrics)."""

    def evaluation(self, ask: EvaluationAsk) -> EvaluationAsk:
        return dataclasses.replace(ask, release_site_metrics=False)


class Refuses(RoundPlugin):
    def client_config_refusal(self) -> str:
        return "this feature cannot allow it"


@pytest.fixture(scope="module")
def digits() -> Task:
    return load_task("digits")


def _run(digits: Task, tmp_path, *, plugins=(), rounds: int = 1):  # type: ignore[no-untyped-def]
    sites = [RecordingSite(digits, site=i, num_sites=3, train_config=TRAIN) for i in range(3)]
    store = RunStore(tmp_path / "run")
    driver = RoundDriver(
        transport=InMemoryTransport(sites),
        strategy=Hooked(mu=0.1),
        config=DriverConfig(rounds=rounds, seed=4),
        store=store,
        plugins=plugins,
    )
    driver.run(get_params(digits.build_model()))
    return sites, store.round_metrics()


def test_each_site_trains_with_its_own_config_and_the_hook_metrics_are_recorded(digits, tmp_path):
    sites, metrics = _run(digits, tmp_path)
    assert sites[0].configs == sites[2].configs == [{"proximal_mu": 0.1, "seed": 4.0}]
    assert sites[1].configs == [{"proximal_mu": 0.5, "seed": 4.0, "group": 3.0}]
    line = metrics[0]
    assert line["fit_reports"] == 3.0
    assert 0 < line["train_loss_min"] <= line["train_loss"]  # the mean, as without the hook
    assert line["num_clients"] == 3


def test_the_fit_metrics_hook_is_not_called_where_site_metrics_are_withheld(digits, tmp_path):
    _, metrics = _run(digits, tmp_path, plugins=[Withhold()])
    assert "fit_reports" not in metrics[0] and "train_loss" not in metrics[0]


def test_a_plugin_that_refuses_per_client_configs_stops_the_run_before_it_starts(digits, tmp_path):
    with pytest.raises(ValueError, match=r"client_fit_config.*this feature cannot allow it"):
        _run(digits, tmp_path, plugins=[Refuses()])


def test_secure_aggregation_and_central_dp_refuse_local_dp_allows():
    secure = SecureFit(
        transport=InMemoryTransport([]),
        settings=SecAggSettings(),
        crypto=Crypto(),
        run_id="r",
        timeout_s=1,
    )
    assert "fingerprint" in secure.client_config_refusal()
    for mode in ("central", "distributed"):
        dp = privacy_round(PrivacySettings(mode=mode), planned_rounds=2)
        assert "sample secret" in dp.client_config_refusal()
    local = privacy_round(PrivacySettings(mode="local"), planned_rounds=2)
    assert local.client_config_refusal() == ""


def test_a_hook_setting_a_key_a_plugin_added_is_refused(digits, tmp_path):
    class AddsKey(RoundPlugin):
        def fit_config(self, ctx: RoundContext, server_round: int) -> Mapping[str, float]:
            return {"group": 1.0}

    with pytest.raises(ValueError, match="sets 'group', a key the run owns"):
        _run(digits, tmp_path, plugins=[AddsKey()])


def test_an_instruction_groups_nodes_by_their_config():
    plain = Instruction(phase=Phase.FIT, params={}, config={"a": 1.0})
    assert plain.config_groups(["x", "y"]) == [(["x", "y"], {"a": 1.0})]
    own = dataclasses.replace(plain, client_configs={"y": {"a": 2.0}, "z": {"a": 1.0}})
    assert own.config_for("x") == {"a": 1.0} and own.config_for("y") == {"a": 2.0}
    assert own.config_groups(["x", "y", "z", "w"]) == [
        (["x", "z", "w"], {"a": 1.0}),
        (["y"], {"a": 2.0}),
    ]
