"""Which tasks a site answers at all (:class:`fedops.client.task_guard.TaskGuard`).

Under test, task by task in the order a coordinator could send them: the
initial model only before any other task; secure aggregation only for the
run the site registered for; no plain training under ``--require-secagg``;
no evaluation from a site that hides its record count unless it opts in;
and, for a site that protects its data, one evaluation per round with rounds
only forward. Every refusal is a reason string naming the flag behind it.
"""

from __future__ import annotations

import pytest

from fedops.client.task_guard import TaskGuard
from fedops.v1 import fedops_pb2 as pb

RUN = "run-A"


def _task(kind: int, round_: int = 1, run_id: str = RUN) -> pb.Task:
    return pb.Task(kind=kind, round=round_, run_id=run_id, task_id=f"{kind}-{round_}")


def test_an_open_site_answers_every_kind_of_task_any_number_of_times() -> None:
    guard = TaskGuard(require_secagg=False)
    assert guard.refusal(_task(pb.TASK_KIND_SEND_INITIAL), RUN) == ""
    assert guard.refusal(_task(pb.TASK_KIND_SEND_INITIAL), RUN) == ""  # still before round 1
    for round_ in (1, 1, 2, 1):
        assert guard.refusal(_task(pb.TASK_KIND_FIT, round_), RUN) == ""
        assert guard.refusal(_task(pb.TASK_KIND_EVALUATE, round_), RUN) == ""
        assert guard.refusal(_task(pb.TASK_KIND_SECAGG, round_), RUN) == ""


@pytest.mark.parametrize("first", [pb.TASK_KIND_FIT, pb.TASK_KIND_EVALUATE, pb.TASK_KIND_SECAGG])
def test_the_initial_model_is_refused_once_any_other_task_came(first: int) -> None:
    """After round 1 began, the "initial" model would be the site's trained one."""
    guard = TaskGuard(require_secagg=False)
    guard.refusal(_task(first), RUN)
    reason = guard.refusal(_task(pb.TASK_KIND_SEND_INITIAL), RUN)
    assert reason.startswith("the initial model is sent only before the first round")


def test_even_a_refused_task_ends_the_initial_phase() -> None:
    guard = TaskGuard(require_secagg=True)
    assert guard.refusal(_task(pb.TASK_KIND_FIT), RUN) != ""
    assert guard.refusal(_task(pb.TASK_KIND_SEND_INITIAL), RUN) != ""


@pytest.mark.parametrize(
    "kind",
    [pb.TASK_KIND_SECAGG, pb.TASK_KIND_FIT, pb.TASK_KIND_EVALUATE, pb.TASK_KIND_SEND_INITIAL],
)
def test_a_task_for_another_run_is_refused_naming_both(kind: int) -> None:
    """A coordinator that relabels tasks with new run ids would start the site's per-run
    ε, its monitoring binning and its anchors afresh each time (red team, issue 20)."""
    guard = TaskGuard(require_secagg=False)
    reason = guard.refusal(_task(kind, run_id="run-B"), RUN)
    assert reason == "the task names run 'run-B', but this site registered for run 'run-A'"
    assert guard.refusal(_task(kind, run_id=RUN), RUN) == ""


def test_require_secagg_refuses_plain_training_but_not_secure_aggregation() -> None:
    guard = TaskGuard(require_secagg=True)
    assert guard.refusal(_task(pb.TASK_KIND_FIT), RUN) == (
        "this site only trains under secure aggregation (--require-secagg)"
    )
    assert guard.refusal(_task(pb.TASK_KIND_SECAGG), RUN) == ""


def test_a_private_site_does_not_evaluate_unless_it_shares_evaluation() -> None:
    guard = TaskGuard(require_secagg=False, private=True)
    reason = guard.refusal(_task(pb.TASK_KIND_EVALUATE), RUN)
    assert reason.startswith("this site hides its record count")
    assert "(--share-evaluation to allow)" in reason
    assert guard.refusal(_task(pb.TASK_KIND_EVALUATE, 2), RUN) == reason  # every time
    assert guard.refusal(_task(pb.TASK_KIND_FIT), RUN) == ""  # DP training is fine


@pytest.mark.parametrize(
    ("require_secagg", "private", "flag"),
    [
        (True, False, "--require-secagg"),
        (False, True, "--max-epsilon"),
        (True, True, "--require-secagg"),
    ],
)
def test_a_protecting_site_evaluates_once_per_round_rounds_only_forward(
    require_secagg: bool, private: bool, flag: str
) -> None:
    guard = TaskGuard(require_secagg=require_secagg, private=private, share_evaluation=True)
    answers = [guard.refusal(_task(pb.TASK_KIND_EVALUATE, r), RUN) for r in (1, 1, 3, 2, 3, 4, 0)]
    assert [a == "" for a in answers] == [True, False, True, False, False, True, False]
    assert answers[1] == (
        f"round 1: this site evaluates once per round, rounds only forward ({flag}: each "
        "evaluation runs a coordinator-chosen model over its data)"
    )
    assert answers[3].startswith("round 2: this site evaluates once per round")


def test_a_refused_repeat_does_not_move_the_evaluated_round() -> None:
    guard = TaskGuard(require_secagg=True)
    assert guard.refusal(_task(pb.TASK_KIND_EVALUATE, 5), RUN) == ""
    assert guard.refusal(_task(pb.TASK_KIND_EVALUATE, 2), RUN) != ""
    assert guard.refusal(_task(pb.TASK_KIND_EVALUATE, 5), RUN) != ""
    assert guard.refusal(_task(pb.TASK_KIND_EVALUATE, 6), RUN) == ""


def test_round_zero_is_not_an_evaluation_round_for_a_protecting_site() -> None:
    guard = TaskGuard(require_secagg=True)
    assert guard.refusal(_task(pb.TASK_KIND_EVALUATE, 0), RUN).startswith("round 0:")
