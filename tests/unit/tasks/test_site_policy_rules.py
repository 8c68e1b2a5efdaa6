"""A site's own policy (:mod:`fedops.tasks.site_policy`), enforced at the site.

Under test: consent fails closed (a consent file that is missing, unreadable,
malformed or anything but ``{"consent": true}`` means the site declines, and it
is re-read on every check so a withdrawal takes effect while the agent runs);
``check_round`` and ``check_task`` name the rule they enforce; and
``from_mapping`` builds the policy from a kit's rules with the operator's flags
taking precedence, except that a flag can only add ``require_secagg``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

from fedops.core.monitoring.profile import ReportLimits
from fedops.core.secagg.policy import SecAggPolicy
from fedops.tasks.contract import Task
from fedops.tasks.site_policy import SECAGG_RULES, PolicyViolation, SitePolicy

DIGEST_A = "a" * 64
DIGEST_B = "b" * 64


def _task(name: str = "toy", digest: str = "") -> Task:
    return Task(
        name=name,
        build_model=lambda: nn.Linear(2, 2),
        load_data=lambda site, num_sites: ((), ()),
        digest=digest,
    )


# -- consent ----------------------------------------------------------------------------------


def test_without_a_consent_file_the_kits_consent_decides() -> None:
    assert SitePolicy().consents() is True
    assert SitePolicy(consent=False).consents() is False


def test_a_consent_file_saying_true_gives_consent(tmp_path: Path) -> None:
    path = tmp_path / "consent.json"
    path.write_text(json.dumps({"consent": True}))
    assert SitePolicy(consent_file=path).consents() is True


def test_a_kit_that_withholds_consent_is_not_overruled_by_the_file(tmp_path: Path) -> None:
    path = tmp_path / "consent.json"
    path.write_text(json.dumps({"consent": True}))
    assert SitePolicy(consent=False, consent_file=path).consents() is False


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"consent": False}),
        json.dumps({"consent": "true"}),  # a string is not consent
        json.dumps({"consent": 1}),  # nor is a truthy number
        json.dumps({"consent": None}),
        json.dumps({}),
        json.dumps({"Consent": True}),
        json.dumps(True),  # not an object
        json.dumps([{"consent": True}]),
        '{"consent": true',  # malformed JSON
        "",
        "consent: true",  # YAML is not read as consent
    ],
)
def test_anything_but_consent_true_in_the_file_declines(tmp_path: Path, content: str) -> None:
    path = tmp_path / "consent.json"
    path.write_text(content)
    assert SitePolicy(consent_file=path).consents() is False


def test_a_missing_consent_file_declines(tmp_path: Path) -> None:
    assert SitePolicy(consent_file=tmp_path / "absent.json").consents() is False


def test_an_unreadable_consent_file_declines(tmp_path: Path) -> None:
    folder = tmp_path / "consent.json"
    folder.mkdir()  # reading a directory raises IsADirectoryError (an OSError)
    assert SitePolicy(consent_file=folder).consents() is False
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe{\x00")  # not UTF-8: UnicodeDecodeError is a ValueError
    assert SitePolicy(consent_file=binary).consents() is False


def test_consent_is_reread_on_every_check_so_it_can_be_withdrawn_and_given(
    tmp_path: Path,
) -> None:
    path = tmp_path / "consent.json"
    policy = SitePolicy(consent_file=path)
    states = []
    for text in ('{"consent": true}', '{"consent": false}', "garbage", '{"consent": true}'):
        path.write_text(text)
        states.append(policy.consents())
    path.unlink()
    states.append(policy.consents())
    assert states == [True, False, False, True, False]


# -- rounds and task code -----------------------------------------------------------------------


def test_check_round_allows_up_to_max_rounds_and_refuses_the_next() -> None:
    policy = SitePolicy(max_rounds=3)
    for r in (0, 1, 3):
        policy.check_round(r)
    with pytest.raises(PolicyViolation) as info:
        policy.check_round(4)
    assert str(info.value) == "round 4 is past this site's limit of 3 rounds (max_rounds)"


def test_check_round_without_a_limit_allows_any_round() -> None:
    SitePolicy().check_round(10**6)


def test_check_task_without_allowed_tasks_runs_any_code() -> None:
    SitePolicy().check_task(_task(digest=DIGEST_A))
    SitePolicy().check_task(_task(digest=""))


def test_check_task_allows_a_listed_digest() -> None:
    SitePolicy(allowed_tasks=(DIGEST_B, DIGEST_A)).check_task(_task(digest=DIGEST_A))


def test_check_task_refuses_an_unlisted_digest_and_names_both() -> None:
    policy = SitePolicy(allowed_tasks=(DIGEST_A,))
    with pytest.raises(PolicyViolation) as info:
        policy.check_task(_task("mine", digest=DIGEST_B))
    message = str(info.value)
    assert message.startswith(f"task 'mine' has digest {DIGEST_B}, which this site's policy")
    assert f"(allowed_tasks: {DIGEST_A})" in message


def test_check_task_refuses_a_built_in_task_when_digests_are_pinned() -> None:
    """A built-in task has no source digest: a site that pins digests does not run it."""
    with pytest.raises(PolicyViolation, match=r"\(a built-in task, no source digest\)"):
        SitePolicy(allowed_tasks=(DIGEST_A,)).check_task(_task("digits", digest=""))


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5, float("nan"), float("inf")])
def test_a_delta_outside_0_1_is_refused_naming_the_rule(delta: float) -> None:
    with pytest.raises(ValueError, match=r"^policy: max_delta: δ must be in \(0, 1\)"):
        SitePolicy(max_delta=delta)


@pytest.mark.parametrize("records", [0, -3, True, 2.5, "100"])
def test_dp_public_records_must_be_a_whole_number_of_at_least_one(records: object) -> None:
    with pytest.raises(ValueError, match="dp_public_records must be a whole number >= 1"):
        SitePolicy(dp_public_records=records)  # type: ignore[arg-type]


def test_one_public_record_is_allowed() -> None:
    assert SitePolicy(dp_public_records=1).dp_public_records == 1


# -- from_mapping: the kit's rules and the operator's flags ------------------------------------


def test_an_empty_mapping_gives_the_defaults() -> None:
    policy = SitePolicy.from_mapping({})
    assert policy == SitePolicy()
    assert policy.consents() is True


def test_unknown_kit_rules_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"unknown rule\(s\) \['max_epsilonn', 'zeta'\]"):
        SitePolicy.from_mapping({"max_epsilonn": 1.0, "zeta": 2, "max_rounds": 3})


def test_the_kits_rules_are_read() -> None:
    kit = {
        "max_epsilon": 4.0,
        "max_delta": 1e-6,
        "dp_public_records": 500,
        "max_rounds": 7,
        "allowed_tasks": [DIGEST_A],
        "consent": False,
        "consent_file": "/srv/site/consent.json",
        "monitoring_min_count": 9,
        "monitoring_max_cells": 300,
        "secagg_min_cohort": 5,
        "secagg_max_colluders": 1,
    }
    policy = SitePolicy.from_mapping(kit)
    assert policy.max_epsilon == 4.0
    assert policy.max_delta == 1e-6
    assert policy.dp_public_records == 500
    assert policy.max_rounds == 7
    assert policy.allowed_tasks == (DIGEST_A,)
    assert policy.consent is False
    assert policy.consent_file == Path("/srv/site/consent.json")
    assert policy.report_limits == ReportLimits(min_count=9, max_cells=300)
    assert policy.secagg == SecAggPolicy(min_cohort=5, max_colluders=1)
    assert policy.require_secagg is False


def test_flags_take_precedence_over_the_kits_rules(tmp_path: Path) -> None:
    kit = {
        "max_epsilon": 4.0,
        "max_delta": 1e-6,
        "max_rounds": 7,
        "allowed_tasks": [DIGEST_A],
        "consent_file": "/srv/site/consent.json",
        "monitoring_min_count": 9,
        "secagg_min_cohort": 5,
    }
    policy = SitePolicy.from_mapping(
        kit,
        max_epsilon=2.0,
        max_delta=1e-7,
        max_rounds=3,
        allowed_tasks=(DIGEST_B,),
        consent_file=tmp_path / "c.json",
        monitoring_min_count=11,
        secagg_min_cohort=8,
    )
    assert policy.max_epsilon == 2.0
    assert policy.max_delta == 1e-7
    assert policy.max_rounds == 3
    assert policy.allowed_tasks == (DIGEST_B,)
    assert policy.consent_file == tmp_path / "c.json"
    assert policy.report_limits.min_count == 11
    assert policy.secagg.min_cohort == 8


def test_flags_left_unset_keep_the_kits_rules() -> None:
    """None (a flag not given) and the empty tuple (no --allowed-task) override nothing."""
    kit = {"max_epsilon": 4.0, "max_rounds": 7, "allowed_tasks": [DIGEST_A], "secagg_min_cohort": 5}
    policy = SitePolicy.from_mapping(
        kit,
        max_epsilon=None,
        max_delta=None,
        max_rounds=None,
        allowed_tasks=(),
        consent_file=None,
        monitoring_min_count=None,
        monitoring_max_cells=None,
        **dict.fromkeys(SECAGG_RULES),
    )
    assert policy.max_epsilon == 4.0
    assert policy.max_delta == 1e-5
    assert policy.max_rounds == 7
    assert policy.allowed_tasks == (DIGEST_A,)
    assert policy.consent_file is None
    assert policy.report_limits == ReportLimits()
    assert policy.secagg == SecAggPolicy(min_cohort=5)


@pytest.mark.parametrize(
    ("kit", "flag", "expected"),
    [
        (False, False, False),
        (False, True, True),
        (True, False, True),  # a flag cannot lift the kit's rule
        (True, True, True),
    ],
)
def test_a_flag_can_only_add_require_secagg(kit: bool, flag: bool, expected: bool) -> None:
    policy = SitePolicy.from_mapping({"require_secagg": kit}, require_secagg=flag)
    assert policy.require_secagg is expected


@pytest.mark.parametrize(
    ("kit", "flags"),
    [
        ({"secagg_min_noise_multiplier": 0.5}, {}),
        ({}, {"secagg_min_noise_multiplier": 0.5}),
    ],
)
def test_a_distributed_dp_noise_floor_implies_require_secagg(
    kit: dict[str, float], flags: dict[str, float]
) -> None:
    """A plain fit would bypass the noise floor, so a floor means SecAgg only."""
    policy = SitePolicy.from_mapping(kit, **flags)
    assert policy.secagg.min_noise_multiplier == 0.5
    assert policy.require_secagg is True


def test_a_zero_noise_floor_does_not_imply_require_secagg() -> None:
    assert SitePolicy.from_mapping({"secagg_min_noise_multiplier": 0.0}).require_secagg is False


def test_every_secagg_rule_maps_onto_its_secagg_policy_field() -> None:
    values = {
        "secagg_min_cohort": 6,
        "secagg_min_degree": 3,
        "secagg_max_colluders": 2,
        "secagg_min_noise_multiplier": 1.5,
        "secagg_max_l2_clip": 0.25,
    }
    assert set(values) == set(SECAGG_RULES)
    policy = SitePolicy.from_mapping({}, **values)
    assert policy.secagg == SecAggPolicy(
        min_cohort=6, min_degree=3, max_colluders=2, min_noise_multiplier=1.5, max_l2_clip=0.25
    )


def test_an_invalid_kit_rule_fails_validation_not_silently() -> None:
    with pytest.raises(ValueError, match="policy: max_delta"):
        SitePolicy.from_mapping({"max_delta": 2.0})
    with pytest.raises(ValueError, match="secagg min_cohort must be at least 2"):
        SitePolicy.from_mapping({"secagg_min_cohort": 1})
    with pytest.raises(ValueError, match="monitoring_min_count must be >= 1"):
        SitePolicy.from_mapping({"monitoring_min_count": 0})


@pytest.mark.parametrize("rule", ["consent", "require_secagg"])
@pytest.mark.parametrize("value", ["false", "true", 0, 1, None])
def test_a_yes_no_rule_that_is_not_a_boolean_is_refused(rule, value):
    """``bool("false")`` is True: a consent of "false" must never read as consent."""
    with pytest.raises(ValueError, match=f"policy: {rule} must be true or false"):
        SitePolicy.from_mapping({rule: value})
