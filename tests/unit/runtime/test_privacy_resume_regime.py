"""A resumed run's guarantee must hold for every round in it: a resume under another
privacy mode, seed, publication of participants or sampling is refused before any round
runs, whatever state.sqlite was edited to say where the signed audit log can tell.

And under distributed DP a sum the coordinator unmasked is spent and committed at once,
even if decoding it fails (it was seen), and charged once when nothing fails.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from fedops.core.results import FitResult
from fedops.core.strategies import FedAvg
from fedops.core.training import TrainConfig, get_params
from fedops.crypto import Crypto
from fedops.runtime.audit.commitments import Commitments
from fedops.runtime.driver import DriverConfig, RoundDriver
from fedops.runtime.privacy import (
    CentralPrivacy,
    PrivacySettings,
    privacy_round,
    restore_ledger,
)
from fedops.runtime.privacy.distributed import DistributedPrivacy
from fedops.runtime.privacy.local_dp import LocalPrivacy
from fedops.runtime.resume import start_or_resume
from fedops.runtime.secure_fit import SecAggSettings, SecureFit, _SecureRound
from fedops.runtime.store import RunStore, StoreError
from fedops.simulation.inmemory import InMemoryTransport
from fedops.simulation.secure_backend import SecureSimTransport
from fedops.tasks import load_task
from fedops.tasks.site import Site

NODES = [f"n{i:02d}" for i in range(10)]
CENTRAL = PrivacySettings(noise_multiplier=1.0)


def _ran(settings: PrivacySettings, rounds: int = 3) -> CentralPrivacy:
    """A central (or distributed) mechanism after ``rounds`` rounds, as the driver runs them."""
    cls = DistributedPrivacy if settings.mode == "distributed" else CentralPrivacy
    dp = cls(settings, planned_rounds=10)
    params = {"w": np.zeros(4, np.float32)}
    for r in range(1, rounds + 1):
        sample = dp.sample(NODES, 5, r)
        dp.begin_round(r, sample, params)
        if cls is CentralPrivacy:
            results = [FitResult(node_id=n, params=params, num_examples=1) for n in sample.selected]
            dp.aggregate(r, params, results, sample=sample)
        dp.spend(sample.selected)
    return dp


def _rows(dp: CentralPrivacy | LocalPrivacy, rounds: int) -> list[dict[str, Any]]:
    """The store's metrics rows of those rounds (what metrics.jsonl holds)."""
    return [{"round": r, **dp.metrics()} for r in range(1, rounds + 1)]


def _mechanism(settings: PrivacySettings) -> CentralPrivacy | LocalPrivacy:
    if settings.mode == "local":
        return LocalPrivacy(settings, planned_rounds=10)
    cls = DistributedPrivacy if settings.mode == "distributed" else CentralPrivacy
    return cls(settings, planned_rounds=10)


def _log(config: dict[str, Any], rows: list[dict[str, Any]], *, start: int = 0) -> Commitments:
    """What the signed audit log of those rounds holds, read back as a resume reads it."""
    logged = Commitments()
    logged.observe("run_started", {"config": {"privacy": config}})
    for row in rows:
        r = row["round"]
        logged.observe("round_committed", {"round": r, "model_digest": f"m{r}"})
        if "privacy_mechanism" in row:
            logged.observe("privacy_spent", row)
    return logged


def _section(settings: PrivacySettings | None) -> dict[str, Any]:
    """The ``privacy`` section of a run config as both fronts store it."""
    if settings is None:
        return {"name": "none", "seed": None, "publish_participants": False, "sampling": "poisson"}
    return {
        "name": settings.mode,
        "seed": settings.seed,
        "publish_participants": settings.publish_participants,
        "sampling": settings.sampling,
    }


VARIANTS = {
    # A: central rounds claimed as distributed DP, "against the coordinator"
    "A_central_to_distributed": (CENTRAL, PrivacySettings(mode="distributed"), "privacy.name"),
    # B: central rounds dropped by local DP's ledger
    "B_central_to_local": (
        CENTRAL,
        PrivacySettings(mode="local", noise_multiplier=2.0),
        "privacy.name",
    ),
    # C: seeded (NOT private) rounds claimed private
    "C_seeded_to_unseeded": (PrivacySettings(seed=7), CENTRAL, "privacy.seed"),
    # D: amplified rounds put under "participants published"
    "D_secret_to_published": (
        CENTRAL,
        PrivacySettings(publish_participants=True),
        "privacy.publish_participants",
    ),
    "sampling_poisson_to_fixed": (
        CENTRAL,
        PrivacySettings(sampling="fixed", accountant="rdp"),
        "privacy.sampling",
    ),
    "unseeded_to_seeded": (CENTRAL, PrivacySettings(seed=3), "privacy.seed"),
    "distributed_to_central": (PrivacySettings(mode="distributed"), CENTRAL, "privacy.name"),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_resume_under_another_privacy_regime_is_refused_naming_the_key(variant: str):
    before, after, key = VARIANTS[variant]
    ran = _ran(before)
    saved, rows = ran.ledger_json(), _rows(ran, 3)
    resumed = _mechanism(after)
    with pytest.raises(StoreError, match=rf"^{key}: this run spent 3 rounds under") as info:
        restore_ledger(resumed, saved, rows, logged=_log(_section(before), rows))
    assert "start a new run directory" in str(info.value)
    # the refused run claims nothing (its summary would otherwise sign the new mode's claim)
    assert resumed.guarantee().startswith("none claimed: the resume was refused")
    assert "ε=" not in resumed.guarantee()


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_signed_log_refuses_where_state_sqlite_was_edited_to_hide_the_regime(variant: str):
    """A ledger from before the regime was kept (or one stripped of it) and metrics rows
    deleted: the signed log's run_started config and privacy_spent entries still tell."""
    before, after, key = VARIANTS[variant]
    ran = _ran(before)
    saved, rows = ran.ledger_json(), _rows(ran, 3)
    del saved["regime"]
    with pytest.raises(StoreError, match=rf"^{key}: "):
        restore_ledger(_mechanism(after), saved, [], logged=_log(_section(before), rows))


@pytest.mark.parametrize("variant", ["A_central_to_distributed", "D_secret_to_published"])
def test_a_log_without_configs_is_judged_by_what_its_rounds_claimed(variant: str):
    before, after, key = VARIANTS[variant]
    ran = _ran(before)
    rows = _rows(ran, 3)
    logged = Commitments()  # an older log: run_started without the config
    logged.observe("run_started", {})
    for row in rows:
        logged.observe("round_committed", {"round": row["round"]})
        logged.observe("privacy_spent", row)
    saved = ran.ledger_json()
    del saved["regime"]
    with pytest.raises(StoreError, match=rf"^{key}: "):
        restore_ledger(_mechanism(after), saved, [], logged=logged)


def test_rounds_that_ran_without_dp_refuse_a_resume_under_dp():
    """The signed log's run_started config says the rounds ran without DP (a metrics row
    without privacy keys alone does not: it may be an older fedops's)."""
    rows = [{"round": r, "num_clients": 5} for r in (1, 2)]
    logged = _log(_section(None), rows)
    for metrics in (rows, []):
        with pytest.raises(StoreError, match=r"^privacy.name: this run's 2 rounds ran without"):
            restore_ledger(CentralPrivacy(CENTRAL, planned_rounds=5), None, metrics, logged=logged)
    restore_ledger(CentralPrivacy(CENTRAL, planned_rounds=5), None, rows)  # no log: nothing tells


def test_a_run_under_dp_refuses_to_go_on_without_it(tmp_path: pathlib.Path):
    store = RunStore(tmp_path / "run")
    start_or_resume(store, {"privacy": _section(CENTRAL)}, lambda: {"w": np.zeros(2)})
    ran = _ran(CENTRAL, rounds=1)
    store.save_round(1, {"w": np.ones(2)}, _rows(ran, 1)[0])
    store.spend_privacy(1, ran.ledger_json())
    with pytest.raises(StoreError, match=r"^privacy.name: this run spent 1 round under central"):
        start_or_resume(store, {"privacy": _section(None)}, lambda: {"w": np.zeros(2)})
    assert start_or_resume(store, {"privacy": _section(CENTRAL)}, lambda: {}).start_round == 2
    store.close()


@pytest.mark.parametrize(
    "settings",
    [
        CENTRAL,
        PrivacySettings(seed=7),
        PrivacySettings(publish_participants=True),
        PrivacySettings(sampling="fixed", accountant="rdp"),
        PrivacySettings(mode="distributed"),
    ],
    ids=["central", "seeded", "published", "fixed", "distributed"],
)
def test_a_resume_under_the_same_regime_continues_with_every_record_consulted(settings):
    ran = _ran(settings)
    rows = _rows(ran, 3)
    # what else may change on resume still may (σ, the clip, δ, the accountant …)
    again = PrivacySettings(
        **{**_kwargs(settings), "noise_multiplier": 2.0, "clip_norm": 0.5, "delta": 1e-6}
    )
    resumed = _mechanism(again)
    restore_ledger(resumed, ran.ledger_json(), rows, logged=_log(_section(settings), rows))
    assert isinstance(resumed, CentralPrivacy) and resumed.ledger.rounds == 3
    assert not resumed.guarantee().startswith("none claimed")


def test_local_dp_resumes_under_local_dp_and_reads_an_older_ledger_as_local():
    settings = PrivacySettings(mode="local", noise_multiplier=2.0)
    rows = _rows(LocalPrivacy(settings, planned_rounds=5), 2)
    for saved in (
        {"rounds": 2},
        LocalPrivacy(settings, planned_rounds=5).ledger_json() | {"rounds": 2},
    ):
        resumed = LocalPrivacy(settings, planned_rounds=5)
        restore_ledger(resumed, saved, rows, logged=_log(_section(settings), rows))
        assert resumed.rounds == 2
    with pytest.raises(StoreError, match=r"^privacy.name: this run spent 2 rounds under local"):
        restore_ledger(CentralPrivacy(CENTRAL, planned_rounds=5), {"rounds": 2}, [], logged=None)


def _kwargs(settings: PrivacySettings) -> dict[str, Any]:
    return {f: getattr(settings, f) for f in settings.__dataclass_fields__}


# -- distributed DP: a sum unmasked is spent then and there -----------------------------------
def _secure_round(tmp_path: pathlib.Path) -> tuple[RoundDriver, RunStore, DistributedPrivacy]:
    task = load_task("digits")
    sites = [Site(task, site=i, num_sites=3, train_config=TrainConfig(epochs=1)) for i in range(3)]
    transport = SecureSimTransport(InMemoryTransport(sites), Crypto(), seed=1)
    settings = PrivacySettings(noise_multiplier=1.0, mode="distributed", min_survivors=3)
    dp = privacy_round(settings, planned_rounds=1)
    secure = SecureFit(
        transport=transport,
        settings=SecAggSettings(),
        crypto=Crypto(),
        run_id="run",
        timeout_s=60,
        noise=dp.privacy,
    )
    store = RunStore(tmp_path / "run")
    driver = RoundDriver(
        transport=transport,
        strategy=FedAvg(),
        config=DriverConfig(rounds=1, min_clients=3),
        store=store,
        plugins=[secure, dp],
    )
    assert isinstance(dp.privacy, DistributedPrivacy)
    return driver, store, dp.privacy


def test_a_distributed_sum_unmasked_then_failing_to_decode_is_still_spent_and_committed(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
):
    def fails(self: Any, *args: Any) -> Any:
        raise RuntimeError("decoding the unmasked sum failed")

    monkeypatch.setattr(_SecureRound, "_decode", fails)
    driver, store, dp = _secure_round(tmp_path)
    with pytest.raises(RuntimeError, match="decoding the unmasked sum failed"):
        driver.run(get_params(load_task("digits").build_model()))
    assert store.last_round() is None  # the round never committed …
    saved = store.privacy_ledger()
    assert saved is not None and sum(e["rounds"] for e in saved["events"]) == 1  # … but it spent
    assert dp.ledger.rounds == 1


def test_a_distributed_round_that_succeeds_is_charged_once(tmp_path: pathlib.Path):
    driver, store, dp = _secure_round(tmp_path)
    driver.run(get_params(load_task("digits").build_model()))
    assert dp.ledger.rounds == 1
    assert sum(e["rounds"] for e in store.privacy_ledger()["events"]) == 1
    (row,) = store.round_metrics()
    assert row["effective_noise_multiplier"] > 0


# -- end to end, through the CLI -----------------------------------------------------------------
def _fedops(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedops", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_cli_refuses_a_resume_under_another_mode_in_one_line_and_the_log_verifies(
    tmp_path: pathlib.Path,
):
    common = (
        "simulate",
        "dataset=synthetic",
        "client.epochs=1",
        "simulation.num_clients=6",
        "simulation.clients_per_round=3",
        "hydra.run.dir=run",
    )
    first = _fedops(*common, "privacy=central", "rounds=2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    summary = (tmp_path / "run" / "summary.json").read_text()
    again = _fedops(*common, "privacy=distributed", "secagg=secaggplus", "rounds=3", cwd=tmp_path)
    assert again.returncode != 0
    assert "Traceback" not in again.stderr
    errors = [line for line in again.stderr.splitlines() if "error" in line]
    assert errors == [
        "fedops simulate: error: privacy.name: this run spent 2 rounds under central DP; "
        "resuming under distributed DP would claim a guarantee those rounds never had: "
        "keep privacy=central, or start a new run directory"
    ], again.stderr[-2000:]
    assert not (tmp_path / "run" / "error.log").exists()
    verified = _fedops("audit", "verify", "run", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # no round ran and no guarantee for the new mode was claimed anywhere
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2]
    audit = (tmp_path / "run" / "audit.jsonl").read_text()
    assert "distributed DP over" not in audit and "distributed DP over" not in summary
    now = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert now["status"] == "failed" and now["privacy"].startswith("none claimed")
