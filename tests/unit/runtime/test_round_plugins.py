"""The round's plug-in seam: every feature joins the round at fixed points, in order.

DP, SecAgg+, monitoring and an admin's control are plug-ins (their own tests
cover what each does); these tests pin the seam itself with a recording
plug-in on a real in-memory federation of the digits task: the order of the
hooks against the transport's dispatches, what each hook can change, and the
refusal of two plug-ins that would replace the same step.
"""

from __future__ import annotations

import dataclasses

import pytest

from fedops.core.params import digest
from fedops.core.strategies import FedAvg
from fedops.core.training import TrainConfig, get_params
from fedops.runtime.driver import DriverConfig, RoundDriver
from fedops.runtime.privacy import (
    CentralPrivacy,
    CentralPrivacyRound,
    DistributedPrivacy,
    PrivacyRound,
    PrivacySettings,
    privacy_round,
)
from fedops.runtime.round_monitor import MonitorSettings, monitor_spec
from fedops.runtime.round_plugin import EvaluationAsk, RoundPlugin
from fedops.runtime.store import RunStore
from fedops.simulation.inmemory import InMemoryTransport
from fedops.tasks import load_task
from fedops.tasks.site import Site


@pytest.fixture(scope="module")
def digits():
    return load_task("digits")


class Recording(InMemoryTransport):
    def __init__(self, sites, log):
        super().__init__(sites)
        self.log = log
        self.instructions = []

    def dispatch(self, server_round, nodes, instruction):
        self.log.append(f"dispatch {instruction.phase} {','.join(sorted(nodes))}")
        self.instructions.append(instruction)
        return super().dispatch(server_round, nodes, instruction)


class Hooks(RoundPlugin):
    """Logs every hook it is called at; a tag tells two instances apart."""

    def __init__(self, log, tag="p"):
        self.log, self.tag = log, tag

    def before_round(self, ctx, server_round):
        self.log.append(f"{self.tag}.before_round {server_round}")

    def eligible(self, ctx, server_round, nodes):
        self.log.append(f"{self.tag}.eligible")
        return nodes

    def fit_config(self, ctx, server_round):
        self.log.append(f"{self.tag}.fit_config")
        return {f"{self.tag}_key": 7.0}

    def aggregated(self, ctx, server_round, fit):
        self.log.append(f"{self.tag}.aggregated {len(fit.reported)}")

    def evaluation(self, ask):
        self.log.append(f"{self.tag}.evaluation")
        return ask

    def metrics(self, ctx, server_round, params, evaluated):
        self.log.append(f"{self.tag}.metrics {len(evaluated or [])}")
        return {f"{self.tag}_metric": server_round}

    def committed(self, ctx, server_round):
        assert ctx.store.last_round() == server_round  # the round is on disk by now
        self.log.append(f"{self.tag}.committed {server_round}")


def _run(task, tmp_path, plugins, log, *, rounds=1, sites=3):
    transport = Recording(
        [
            Site(task, site=i, num_sites=sites, train_config=TrainConfig(epochs=1))
            for i in range(sites)
        ],
        log,
    )
    store = RunStore(tmp_path)
    initial = get_params(task.build_model())
    final = RoundDriver(
        transport=transport,
        strategy=FedAvg(),
        config=DriverConfig(rounds=rounds, min_clients=sites),
        store=store,
        plugins=plugins,
    ).run(initial)
    return transport, store, initial, final


def test_every_hook_runs_once_a_round_at_its_point_and_in_the_plug_ins_order(digits, tmp_path):
    log: list[str] = []
    transport, store, _, _ = _run(digits, tmp_path, [Hooks(log, "a"), Hooks(log, "b")], log)
    everyone = "site-0,site-1,site-2"
    assert log == [
        "a.before_round 1",
        "b.before_round 1",
        "a.eligible",
        "b.eligible",
        "a.fit_config",
        "b.fit_config",
        f"dispatch fit {everyone}",
        "a.aggregated 3",  # after the fit phase, before the new model leaves
        "b.aggregated 3",
        "a.evaluation",
        "b.evaluation",
        f"dispatch evaluate {everyone}",
        "a.metrics 3",
        "b.metrics 3",
        "a.committed 1",
        "b.committed 1",
    ]
    fit = transport.instructions[0]
    assert fit.config["a_key"] == 7.0 and fit.config["b_key"] == 7.0
    metrics = store.round_metrics()[-1]
    assert metrics["a_metric"] == 1 and metrics["b_metric"] == 1


def test_eligible_and_sample_decide_the_cohort(digits, tmp_path):
    class NoSiteZero(RoundPlugin):
        def eligible(self, ctx, server_round, nodes):
            return [n for n in nodes if n != "site-0"]

    class LastOne(RoundPlugin):
        def sample(self, ctx, server_round, nodes, params):
            return sorted(nodes)[-1:]

    log: list[str] = []
    _run(digits, tmp_path / "a", [NoSiteZero()], log)
    assert log[0] == "dispatch fit site-1,site-2"
    log.clear()
    _run(digits, tmp_path / "b", [NoSiteZero(), LastOne()], log)
    assert log == ["dispatch fit site-2", "dispatch evaluate site-2"]


def test_a_replacing_aggregation_decides_the_model_and_the_abort(digits, tmp_path):
    class Hold(RoundPlugin):
        def aggregate(self, ctx, server_round, params, fit):
            return params, "held by the plug-in"

    log: list[str] = []
    _, store, initial, final = _run(digits, tmp_path, [Hold()], log)
    assert digest(final) == digest(initial)
    assert store.round_metrics()[-1]["round_aborted"] == "held by the plug-in"


def test_the_evaluation_ask_hides_site_metrics_or_skips_evaluation(digits, tmp_path):
    class Hide(RoundPlugin):
        def evaluation(self, ask):
            return dataclasses.replace(ask, release_site_metrics=False)

    spec = monitor_spec(MonitorSettings(), None, {})

    class Monitor(RoundPlugin):
        def evaluation(self, ask):
            return dataclasses.replace(ask, monitor=spec)

    log: list[str] = []
    _, store, _, _ = _run(digits, tmp_path / "hidden", [Hide()], log)
    assert [entry.split()[1] for entry in log] == ["fit"]  # nobody evaluates
    assert "eval_accuracy" not in store.round_metrics()[-1]
    assert "train_loss" not in store.round_metrics()[-1]

    log.clear()
    transport, store, _, _ = _run(digits, tmp_path / "monitored", [Hide(), Monitor()], log)
    assert [entry.split()[1] for entry in log] == ["fit", "evaluate"]  # the reports are wanted
    assert transport.instructions[1].monitor is spec
    assert "eval_accuracy" not in store.round_metrics()[-1]  # … the site metrics still hidden


def test_two_plug_ins_replacing_one_step_are_refused_by_name(digits):
    class SampleA(RoundPlugin):
        def sample(self, ctx, server_round, nodes, params):
            return nodes

    class SampleB(RoundPlugin):
        def sample(self, ctx, server_round, nodes, params):
            return nodes[:1]

    with pytest.raises(
        ValueError, match="two round plug-ins replace the sample step: SampleA, SampleB"
    ):
        RoundDriver(
            transport=InMemoryTransport([]),
            strategy=FedAvg(),
            config=DriverConfig(rounds=1),
            store=None,
            plugins=[SampleA(), SampleB()],
        )


def test_the_default_ask_evaluates_and_releases():
    ask = EvaluationAsk()
    assert ask.wanted and ask.release_site_metrics and ask.monitor is None
    assert not dataclasses.replace(ask, release_site_metrics=False).wanted


def test_dp_plug_ins_refuse_a_mechanism_of_another_mode():
    """Central DP outside its plug-in would average unnoised updates and account nothing;
    distributed DP inside it would noise the SecAgg+ sum a second time."""
    central = PrivacySettings(noise_multiplier=1.0, seed=1)
    with pytest.raises(TypeError, match="CentralPrivacy runs in CentralPrivacyRound"):
        PrivacyRound(CentralPrivacy(central, planned_rounds=1))
    distributed = PrivacySettings(noise_multiplier=1.0, mode="distributed", seed=1)
    with pytest.raises(TypeError, match="DistributedPrivacy runs in PrivacyRound"):
        CentralPrivacyRound(DistributedPrivacy(distributed, planned_rounds=1))
    for mode, plugin in [("central", CentralPrivacyRound), ("local", PrivacyRound)]:
        settings = PrivacySettings(noise_multiplier=1.0, mode=mode, seed=1)
        assert type(privacy_round(settings, planned_rounds=1)) is plugin


def test_what_was_spent_is_committed_even_when_the_strategy_fails(digits, tmp_path):
    class Broken(FedAvg):
        def aggregate_fit(self, server_round, current, results):
            raise RuntimeError("the strategy failed after the release")

    log: list[str] = []
    transport = Recording(
        [Site(digits, site=i, num_sites=2, train_config=TrainConfig(epochs=1)) for i in range(2)],
        log,
    )
    driver = RoundDriver(
        transport=transport,
        strategy=Broken(),
        config=DriverConfig(rounds=1, min_clients=2),
        store=RunStore(tmp_path),
        plugins=[Hooks(log)],
    )
    with pytest.raises(RuntimeError, match="the strategy failed"):
        driver.run(get_params(digits.build_model()))
    assert log[-1] == "p.aggregated 2"  # e.g. DP's ledger reaches the store
    assert not any(entry.startswith("dispatch evaluate") for entry in log)
