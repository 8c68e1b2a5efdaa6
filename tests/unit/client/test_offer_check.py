"""A standing site's decision on a run offer: a malicious coordinator may offer anything.

Each case is an offer a coordinator could send to get a site to run what it never agreed
to; the site must name the rule it applies. The honest offer is the control.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedops.client.offer_check import SiteTask, decline_reason
from fedops.core.privacy.accountant import RoundEvent
from fedops.tasks.fit_settings import TrainCaps
from fedops.tasks.ledger import Charge, SiteLedger
from fedops.tasks.site_policy import SitePolicy
from fedops.v1 import fedops_pb2 as pb

TASKS = {"digits": SiteTask("digits", ""), "mine.py": SiteTask("mine.py", "ab" * 32)}


def _offer(**changes: object) -> pb.RunOffer:
    offer = pb.RunOffer(
        open=True,
        run_id="a1b2c3",
        task="digits",
        task_digest="",
        partition="dirichlet",
        alpha=0.5,
        train=pb.TrainSettings(epochs=2, batch_size=16, lr=0.1, optimizer="sgd"),
        privacy="local",
        epsilon=1.0,
        delta=1e-5,
        secagg="none",
        rounds=5,
    )
    train = changes.pop("train", None)
    for key, value in changes.items():
        setattr(offer, key, value)
    if train is not None:
        offer.train.CopyFrom(train)
    return offer


def _decide(offer: pb.RunOffer, tmp_path: Path, **policy: object) -> str | None:
    return decline_reason(
        offer, tasks=TASKS, policy=SitePolicy(**policy), ledger=SiteLedger(tmp_path)
    )


def test_an_offer_within_the_policy_is_taken(tmp_path: Path):
    assert _decide(_offer(), tmp_path) is None
    assert _decide(_offer(task="mine.py", task_digest="ab" * 32), tmp_path) is None
    # the same code under another path on the coordinator's host: matched by its digest
    assert _decide(_offer(task="/srv/tasks/theirs.py", task_digest="ab" * 32), tmp_path) is None


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"task": "/etc/evil.py"}, "not one this site runs"),
        ({"task": "mine.py", "task_digest": "cd" * 32}, "not the same code"),
        ({"task": "mine.py", "task_digest": ""}, "not the same code"),
        ({"run_id": "../../home"}, "not a plain name"),
        ({"run_id": ""}, "not a plain name"),
        ({"partition": "../../etc/passwd"}, "not iid or dirichlet"),
        ({"alpha": math.nan}, "alpha nan"),
        ({"alpha": 0.0}, "alpha 0.0"),
        ({"data_seed": -1}, "data_seed -1"),
        ({"run_id": "x" * 65}, "not a plain name"),
        (
            {"train": pb.TrainSettings(epochs=10**9, batch_size=16, lr=0.1, optimizer="sgd")},
            "epochs",
        ),
        ({"train": pb.TrainSettings(epochs=1, batch_size=16, lr=math.nan, optimizer="sgd")}, "lr"),
        (
            {"train": pb.TrainSettings(epochs=1, batch_size=16, lr=0.1, optimizer="x" * 10**5)},
            "optimizer",
        ),
    ],
)
def test_a_hostile_offer_is_declined_naming_the_rule(tmp_path: Path, changes, rule):
    reason = _decide(_offer(**changes), tmp_path)
    assert reason is not None and rule in reason
    assert len(reason) <= 500  # quoted into the site's audit log: bounded


def test_an_offer_without_training_settings_is_declined(tmp_path: Path):
    offer = _offer()
    offer.ClearField("train")
    assert "no training settings" in (_decide(offer, tmp_path) or "")


def test_the_sites_caps_and_allowed_digests_apply_to_the_offer(tmp_path: Path):
    caps = TrainCaps(max_epochs=1)
    assert "max_epochs" in (_decide(_offer(), tmp_path, train_caps=caps) or "")
    only = ("ef" * 32,)
    reason = _decide(_offer(task="mine.py", task_digest="ab" * 32), tmp_path, allowed_tasks=only)
    assert "not in allowed_tasks" in (reason or "")


def test_privacy_rules_need_local_dp_secure_aggregation_and_budget_left(tmp_path: Path):
    assert "secure aggregation" in (_decide(_offer(), tmp_path, require_secagg=True) or "")
    central = _offer(privacy="central")
    assert "only with local DP" in (_decide(central, tmp_path, max_epsilon=5.0) or "")
    assert "only with local DP" in (_decide(central, tmp_path, max_run_epsilon=5.0) or "")
    assert "per-run" in (_decide(_offer(epsilon=3.0), tmp_path, max_run_epsilon=2.0) or "")
    # a budget spent in earlier runs (the ledger composes them all) refuses the next run
    ledger = SiteLedger(tmp_path)
    event = RoundEvent(noise_multiplier=0.8, sampling="poisson", sample_rate=0.1)
    ledger.record(Charge("earlier-run", 1, event, 20), 1e-5)
    spent = ledger.epsilon(1e-5)
    assert _decide(_offer(), tmp_path, max_epsilon=spent * 2) is None
    reason = _decide(_offer(), tmp_path, max_epsilon=spent * 0.9)
    assert reason is not None and "budget is spent" in reason


def test_a_site_without_consent_declines(tmp_path: Path):
    assert "consent" in (_decide(_offer(), tmp_path, consent=False) or "")
    withdrawn = tmp_path / "consent.json"
    withdrawn.write_text('{"consent": false}')
    assert "consent" in (_decide(_offer(), tmp_path, consent_file=withdrawn) or "")
