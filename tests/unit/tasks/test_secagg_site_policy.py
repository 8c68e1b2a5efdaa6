"""A site's policy from its kit's ``policy`` mapping and the operator's flags: the secagg floors.

The kit's ``secagg_*`` rules become the site's :class:`SecAggPolicy`; a flag the
operator gave wins over the kit's rule of the same name, and the kit's other
rules stay; an unknown rule is refused by name rather than silently ignored.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fedops.client.agent import site_policy
from fedops.config import ClientConfig
from fedops.core.secagg.policy import SecAggPolicy
from fedops.tasks.site_policy import SECAGG_RULES, SitePolicy

KIT = {
    "secagg_min_cohort": 5,
    "secagg_min_degree": 6,
    "secagg_max_colluders": 1,
    "secagg_min_noise_multiplier": 0.7,
    "secagg_max_l2_clip": 2.0,
}


def test_without_secagg_rules_the_site_holds_the_default_floors():
    assert SitePolicy().secagg == SecAggPolicy()
    assert SitePolicy.from_mapping({}).secagg == SecAggPolicy()
    assert SitePolicy.from_mapping({"max_rounds": 3}).secagg == SecAggPolicy()


def test_every_kit_secagg_rule_reaches_the_secagg_policy():
    assert set(SECAGG_RULES) == set(KIT)
    policy = SitePolicy.from_mapping(KIT)
    assert policy.secagg == SecAggPolicy(
        min_cohort=5, min_degree=6, max_colluders=1, min_noise_multiplier=0.7, max_l2_clip=2.0
    )


@pytest.mark.parametrize("key", sorted(KIT))
def test_a_flag_overrides_the_kit_rule_of_its_name_only(key):
    flag = {
        "secagg_min_cohort": 9,
        "secagg_min_degree": 8,
        "secagg_max_colluders": 3,
        "secagg_min_noise_multiplier": 1.5,
        "secagg_max_l2_clip": 0.25,
    }[key]
    policy = SitePolicy.from_mapping(KIT, **{key: flag})
    expected = {SECAGG_RULES[k]: v for k, v in KIT.items()} | {SECAGG_RULES[key]: flag}
    assert policy.secagg == SecAggPolicy(**expected)


def test_a_flag_left_unset_keeps_the_kit_rule():
    unset = dict.fromkeys(KIT)  # what the agent passes for flags the operator did not give
    assert SitePolicy.from_mapping(KIT, **unset).secagg == SitePolicy.from_mapping(KIT).secagg
    flags_only = SitePolicy.from_mapping({}, secagg_min_cohort=4, secagg_max_colluders=2)
    assert flags_only.secagg == SecAggPolicy(min_cohort=4, max_colluders=2)


def test_a_flag_of_zero_overrides_a_kit_rule():
    policy = SitePolicy.from_mapping(KIT, secagg_max_colluders=0, secagg_min_noise_multiplier=0.0)
    assert policy.secagg.max_colluders == 0 and policy.secagg.min_noise_multiplier == 0.0


@pytest.mark.parametrize("key", ["secagg_min_cohorts", "secagg_threshold", "min_cohort"])
def test_an_unknown_rule_is_refused_by_name(key):
    with pytest.raises(ValueError, match=rf"unknown rule\(s\) \['{key}'\]") as info:
        SitePolicy.from_mapping({**KIT, key: 3})
    assert "secagg_min_cohort" in str(info.value)  # the known rules are listed


@pytest.mark.parametrize(
    ("rule", "value", "words"),
    [
        ("secagg_min_cohort", 1, "min_cohort must be at least 2"),
        ("secagg_min_degree", 0, "min_degree must be at least 1"),
        ("secagg_max_colluders", -2, "max_colluders must be >= 0"),
        ("secagg_min_noise_multiplier", -1.0, "min_noise_multiplier"),
        ("secagg_max_l2_clip", 0, "max_l2_clip must be > 0"),
    ],
)
def test_an_impossible_kit_rule_is_refused(rule, value, words):
    with pytest.raises(ValueError, match=words):
        SitePolicy.from_mapping({rule: value})


def test_the_agent_builds_the_policy_from_its_flags_over_the_kit():
    kit = SimpleNamespace(policy=dict(KIT))
    cfg = ClientConfig(secagg_min_cohort=7, secagg_max_l2_clip=0.5)
    policy = site_policy(cfg, kit)  # type: ignore[arg-type]
    assert policy.secagg == SecAggPolicy(
        min_cohort=7, min_degree=6, max_colluders=1, min_noise_multiplier=0.7, max_l2_clip=0.5
    )
    assert site_policy(ClientConfig(secagg_min_degree=3), None).secagg == SecAggPolicy(min_degree=3)
    assert site_policy(ClientConfig(), None).secagg == SecAggPolicy()


def test_a_noise_floor_or_the_kit_rule_means_secure_aggregation_only():
    """Red team, issue 16: a site pinning a distributed-DP noise floor answered a plain fit
    with its raw update; the floor now implies --require-secagg, and the kit can say so."""
    assert not SitePolicy.from_mapping({}).require_secagg
    assert SitePolicy.from_mapping({"secagg_min_noise_multiplier": 1.0}).require_secagg
    assert SitePolicy.from_mapping({"require_secagg": True}).require_secagg
    flagged = site_policy(ClientConfig(require_secagg=True), None)
    assert flagged.require_secagg
    floor = site_policy(ClientConfig(secagg_min_noise_multiplier=0.5), None)
    assert floor.require_secagg
    # a flag adds the rule, never removes the kit's
    kit = SimpleNamespace(policy={"require_secagg": True})
    assert site_policy(ClientConfig(), kit).require_secagg  # type: ignore[arg-type]


def test_the_guard_refuses_plain_training_under_a_noise_floor():
    from fedops.client.task_guard import TaskGuard
    from fedops.v1 import fedops_pb2 as pb

    policy = SitePolicy.from_mapping({"secagg_min_noise_multiplier": 1.0})
    guard = TaskGuard(require_secagg=policy.require_secagg)
    fit = pb.Task(kind=pb.TASK_KIND_FIT, run_id="r", round=1, task_id="t")
    assert "only trains under secure aggregation" in guard.refusal(fit, "r")
    assert TaskGuard(require_secagg=SitePolicy().require_secagg).refusal(fit, "r") == ""


def test_monitoring_limits_come_from_the_kit_or_the_flags():
    assert SitePolicy().report_limits.min_count == 5
    kit = SitePolicy.from_mapping({"monitoring_min_count": 20, "monitoring_max_cells": 500})
    assert (kit.report_limits.min_count, kit.report_limits.max_cells) == (20, 500)
    flag = SitePolicy.from_mapping({"monitoring_min_count": 20}, monitoring_min_count=7)
    assert flag.report_limits.min_count == 7
    with pytest.raises(ValueError, match="monitoring_max_cells"):
        SitePolicy.from_mapping({"monitoring_max_cells": 0})
