"""What a site checks of the coordinator itself (:mod:`fedops.client.coordinator_checks`).

Under test: the coordinator's audit head a task carries must move forward
(back, or the same entry with another hash: truncated or replaced; the same
entry for a new model: anchors nothing), a site that keeps an audit log needs
a head with every model, and each refusal is written to the site's log; the
CRL a task carries is taken only when it is the CA's, current, not older than
one already taken and not too long-lived; and a run keeps its first binning.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedops.client.coordinator_checks import CoordinatorChecks, payload_of
from fedops.consortium import pki
from fedops.consortium.crl import MAX_DELIVERED_CRL_DAYS, DeliveredCrl
from fedops.core.audit.anchor import Anchor
from fedops.core.monitoring.profile import MonitorSpec
from fedops.tasks.site import PolicyRefusal
from fedops.v1 import fedops_pb2 as pb

H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64


class _Log:
    """The site's audit log as CoordinatorChecks calls it: ``audit(event, **payload)``."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, **payload: Any) -> None:
        self.entries.append((event, payload))


def _task(
    seq: int | None = None,
    digest: str = "",
    *,
    model: bool = True,
    task_id: str = "t",
    run_id: str = "run-A",
    round_: int = 2,
    crl: bytes = b"",
) -> pb.Task:
    task = pb.Task(
        kind=pb.TASK_KIND_FIT,
        run_id=run_id,
        round=round_,
        task_id=task_id,
        model_digest="f" * 64 if model else "",
        crl=crl,
    )
    if seq is not None:
        task.coordinator_audit.seq = seq
        task.coordinator_audit.hash = digest
    return task


# -- the coordinator's audit head ---------------------------------------------------------------


def test_head_reads_a_well_formed_head_and_nothing_else() -> None:
    assert CoordinatorChecks.head(_task()) is None
    assert CoordinatorChecks.head(_task(4, H1)) == Anchor(4, H1)
    assert CoordinatorChecks.head(_task(4, "not a hash")) is None
    assert CoordinatorChecks.head(_task(-1, H1)) is None
    assert CoordinatorChecks.head(_task(4, H1.upper().replace("1", "A"))) is None


def test_a_head_moving_forward_is_accepted_and_nothing_is_logged() -> None:
    log = _Log()
    checks = CoordinatorChecks(log, anchors=True)
    for seq, digest, task_id in ((3, H1, "a"), (5, H2, "b"), (9, H3, "c")):
        assert checks.refusal(_task(seq, digest, task_id=task_id)) == ""
    assert log.entries == []


def test_a_head_that_goes_back_is_refused_and_logged() -> None:
    log = _Log()
    checks = CoordinatorChecks(log, anchors=True)
    assert checks.refusal(_task(7, H1, task_id="a")) == ""
    reason = checks.refusal(_task(4, H2, task_id="b", round_=3))
    assert reason == (
        "the coordinator's audit log went from entry 7 back to entry 4: it was truncated "
        "or replaced"
    )
    assert log.entries == [
        ("audit_anchor_mismatch", {"round": 3, "reason": reason, "seq": 4, "hash": H2})
    ]


def test_the_same_entry_with_another_hash_is_a_replaced_log() -> None:
    checks = CoordinatorChecks(_Log(), anchors=True)
    checks.refusal(_task(7, H1, task_id="a"))
    reason = checks.refusal(_task(7, H2, task_id="a"))
    assert "from entry 7 back to entry 7 with another hash" in reason
    # also for a task that carries no model (the head still may not go back)
    assert checks.refusal(_task(7, H2, model=False, task_id="x")) == reason


def test_a_head_that_stays_put_for_a_new_model_anchors_nothing() -> None:
    log = _Log()
    checks = CoordinatorChecks(log, anchors=True)
    assert checks.refusal(_task(7, H1, task_id="a")) == ""
    assert checks.refusal(_task(7, H1, task_id="a")) == ""  # the same task shown again
    reason = checks.refusal(_task(7, H1, task_id="b"))
    assert reason.startswith("the coordinator's audit head is still entry 7 for a new model")
    assert [event for event, _ in log.entries] == ["audit_anchor_mismatch"]


def test_a_task_without_a_model_may_show_the_same_head() -> None:
    checks = CoordinatorChecks(_Log(), anchors=True)
    assert checks.refusal(_task(7, H1, task_id="a")) == ""
    assert checks.refusal(_task(7, H1, model=False, task_id="s1")) == ""
    assert checks.refusal(_task(7, H1, model=False, task_id="s2")) == ""
    assert checks.refusal(_task(8, H2, task_id="b")) == ""  # past the last model's head


def test_a_refused_head_does_not_become_the_last_one_seen() -> None:
    checks = CoordinatorChecks(_Log(), anchors=True)
    assert checks.refusal(_task(7, H1, task_id="a")) == ""
    assert checks.refusal(_task(2, H2, task_id="b")) != ""
    assert checks.refusal(_task(3, H3, task_id="c")) != ""  # still compared with entry 7
    assert checks.refusal(_task(8, H3, task_id="d")) == ""


def test_heads_are_watched_per_run() -> None:
    checks = CoordinatorChecks(_Log(), anchors=True)
    assert checks.refusal(_task(7, H1, task_id="a", run_id="run-A")) == ""
    assert checks.refusal(_task(1, H2, task_id="a", run_id="run-B")) == ""


def test_a_site_keeping_a_log_needs_a_head_with_every_model() -> None:
    log = _Log()
    checks = CoordinatorChecks(log, anchors=True)
    reason = checks.refusal(_task())
    assert reason == (
        "the task carries no head of the coordinator's audit log; this site anchors that "
        "log with every model it receives"
    )
    assert checks.refusal(_task(3, "zz")) == reason  # a malformed head is no head
    assert checks.refusal(_task(model=False)) == ""  # no model: nothing to anchor
    assert log.entries == []


def test_a_site_without_a_log_takes_a_model_without_a_head() -> None:
    checks = CoordinatorChecks(_Log(), anchors=False)
    assert checks.refusal(_task()) == ""
    # but a head it is shown must still move forward
    assert checks.refusal(_task(5, H1, task_id="a")) == ""
    assert "back to entry 1" in checks.refusal(_task(1, H2, task_id="b"))


def test_payload_of_names_the_head_and_the_run() -> None:
    assert payload_of(None, "run-A") == {}
    assert payload_of(Anchor(4, H1), "run-A") == {
        "coordinator_head": {"seq": 4, "hash": H1, "run_id": "run-A"}
    }


# -- the CRL the coordinator delivers -----------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> tuple[Any, Any]:
    return pki.new_ca("banks")


def _crl(
    ca: tuple[Any, Any], number: int, *, days: int = 30, serials: tuple[int, ...] = ()
) -> bytes:
    cert, key = ca
    return pki.crl_pem(pki.build_crl(cert, key, list(serials), number=number, days=days))


def test_without_a_delivered_crl_the_crl_a_task_carries_is_ignored(ca: tuple[Any, Any]) -> None:
    log = _Log()
    checks = CoordinatorChecks(log, anchors=False, crl=None)
    assert checks.refusal(_task(crl=b"not even a CRL")) == ""
    assert log.entries == []


def test_a_current_crl_from_the_ca_is_taken_once_and_logged(ca: tuple[Any, Any]) -> None:
    log = _Log()
    delivered = DeliveredCrl(ca[0])
    checks = CoordinatorChecks(log, anchors=False, crl=delivered)
    assert checks.refusal(_task(crl=b"")) == ""  # a task without a CRL: nothing to check
    pem = _crl(ca, 3)
    assert checks.refusal(_task(crl=pem, round_=5)) == ""
    assert checks.refusal(_task(crl=pem, round_=6)) == ""
    assert delivered.number == 3
    assert log.entries == [("crl_accepted", {"round": 5, "crl_number": 3})]


def test_an_older_crl_after_a_newer_one_is_refused_and_logged(ca: tuple[Any, Any]) -> None:
    log = _Log()
    delivered = DeliveredCrl(ca[0])
    checks = CoordinatorChecks(log, anchors=False, crl=delivered)
    assert checks.refusal(_task(crl=_crl(ca, 5))) == ""
    reason = checks.refusal(_task(crl=_crl(ca, 4), round_=7))
    assert reason.startswith("the CRL the coordinator sent is refused: rolled back: CRL number 4")
    assert log.entries[-1][0] == "crl_refused"
    assert log.entries[-1][1]["round"] == 7
    assert delivered.number == 5  # the newer one stays in force


def test_a_crl_from_another_ca_is_refused(ca: tuple[Any, Any]) -> None:
    checks = CoordinatorChecks(_Log(), anchors=False, crl=DeliveredCrl(ca[0]))
    other = pki.new_ca("banks")  # same name, another key
    assert checks.refusal(_task(crl=_crl(other, 9))) == (
        "the CRL the coordinator sent is refused: not signed by ca.pem"
    )


def test_a_crl_valid_longer_than_a_site_takes_is_refused(ca: tuple[Any, Any]) -> None:
    checks = CoordinatorChecks(_Log(), anchors=False, crl=DeliveredCrl(ca[0]))
    assert checks.refusal(_task(crl=_crl(ca, 1, days=MAX_DELIVERED_CRL_DAYS))) == ""
    reason = checks.refusal(_task(crl=_crl(ca, 2, days=MAX_DELIVERED_CRL_DAYS + 30)))
    assert f"a site takes CRLs valid at most {MAX_DELIVERED_CRL_DAYS} days" in reason


def test_garbage_in_place_of_a_crl_is_refused(ca: tuple[Any, Any]) -> None:
    checks = CoordinatorChecks(_Log(), anchors=False, crl=DeliveredCrl(ca[0]))
    assert checks.refusal(_task(crl=b"garbage")) == (
        "the CRL the coordinator sent is refused: not a readable PEM CRL"
    )


# -- one binning per run ------------------------------------------------------------------------


def _spec(edges: list[float], num_classes: int = 2, positive: int = 1) -> MonitorSpec:
    return MonitorSpec(
        edges={"x0": np.array(edges)}, num_classes=num_classes, positive_label=positive
    )


def test_a_run_keeps_its_first_binning() -> None:
    checks = CoordinatorChecks(_Log(), anchors=False)
    checks.same_bins("run-A", _spec([0.0, 1.0, 2.0]))
    checks.same_bins("run-A", _spec([0.0, 1.0, 2.0]))  # the same bins again
    checks.same_bins("run-A", MonitorSpec(edges={"x0": np.array([0, 1, 2])}))  # ints, same values
    for other in (
        _spec([0.0, 1.0 + 1e-9, 2.0]),  # a sliver apart
        _spec([0.0, 1.0, 2.0], num_classes=3),
        _spec([0.0, 1.0, 2.0], positive=0),
        MonitorSpec(edges={"x1": np.array([0.0, 1.0, 2.0])}),
    ):
        with pytest.raises(PolicyRefusal, match="bins differ from this run's first request"):
            checks.same_bins("run-A", other)


def test_each_run_has_its_own_first_binning() -> None:
    checks = CoordinatorChecks(_Log(), anchors=False)
    checks.same_bins("run-A", _spec([0.0, 1.0]))
    checks.same_bins("run-B", _spec([0.0, 5.0]))
    with pytest.raises(PolicyRefusal):
        checks.same_bins("run-B", _spec([0.0, 1.0]))
