"""The operator log's refusal lines are throttled per offender, like the store's rows.

Red team 2026-12 (B5): 49,456 refused ``PullTask`` calls in 15 s from one connection
wrote one WARNING line each, 14 MB of log (78 GB a day), while the store and the audit
log wrote a few rows. Now the log gets a few lines per offender, then a count.
"""

from __future__ import annotations

import logging

import grpc
import pytest

from fedops.coordinator.nodes import NodeRegistry
from fedops.coordinator.peer_guard import PEER
from fedops.coordinator.peers import PeerGate
from fedops.coordinator.refusal_log import RefusalLog
from fedops.coordinator.result_intake import Gatekeeper, Reject

LOGGER = "fedops.test.refusals"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def peer():
    token = PEER.set("10.0.0.9:5555")
    yield "10.0.0.9:5555"
    PEER.reset(token)


def _lines(caplog: pytest.LogCaptureFixture, name: str = LOGGER) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name]


def test_one_offender_gets_a_burst_then_a_count(caplog, peer):
    caplog.set_level(logging.WARNING, LOGGER)
    clock = Clock()
    said = RefusalLog(logging.getLogger(LOGGER), burst=3, every_s=20, summary_s=60, clock=clock)
    for i in range(10_000):  # a fresh claimed node id every call: still one offender
        said.warning(f"node-{i}", "rejected call from %s", f"node-{i}")
    assert _lines(caplog) == [f"rejected call from node-{i}" for i in range(3)]
    clock.now = 61.0  # the next refusal says how many were held back, and is logged itself
    said.warning("node-x", "rejected call from %s", "node-x")
    lines = _lines(caplog)
    assert len(lines) == 5 and lines[3] == "rejected call from node-x"
    assert lines[4].startswith("9997 further refused calls not logged one by one")
    assert f"peer:{peer}: 9997" in lines[4]


def test_fresh_offenders_share_one_budget(caplog):
    caplog.set_level(logging.WARNING, LOGGER)
    clock = Clock()
    said = RefusalLog(logging.getLogger(LOGGER), all_burst=30, all_every_s=2, clock=clock)
    for i in range(5_000):  # no call context: each claimed name is its own offender
        said.warning(f"addr-{i}", "refused %d", i)
    assert len(_lines(caplog)) == 30
    clock.now = 60.0
    said.warning("addr-last", "refused last")
    summary = _lines(caplog)[-1]
    assert "4970 further refused calls" in summary and "offender(s)" in summary


def test_a_quiet_offender_is_logged_in_full():
    lines: list[str] = []
    logger = logging.getLogger(LOGGER + ".quiet")
    logger.addHandler(handler := _ListHandler(lines))
    try:
        clock = Clock()
        said = RefusalLog(logger, burst=3, every_s=20, clock=clock)
        for i in range(10):  # one refusal every 20 s: never held back
            clock.now = 20.0 * i
            said.warning("node", "refused %d", i)
    finally:
        logger.removeHandler(handler)
    assert lines == [f"refused {i}" for i in range(10)]


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_gatekeepers_refusals_are_throttled_in_the_log(caplog, peer):
    caplog.set_level(logging.WARNING, "fedops.coordinator")
    reported: list[tuple[int, str, str, str]] = []
    gate = Gatekeeper(
        registry=NodeRegistry(10),
        report=lambda *row: reported.append(row),
        current_round=lambda: 0,
    )
    for i in range(2_000):
        with pytest.raises(Reject):
            gate.authenticate(f"node-{i}", "t" * 100)
    assert len(reported) == 2_000  # every refusal still reaches the (throttled) record
    assert 1 <= len(_lines(caplog, "fedops.coordinator")) <= 3


def test_the_peer_gates_refusals_are_throttled_in_the_log(caplog, peer):
    caplog.set_level(logging.WARNING, "fedops.coordinator")
    refused: list[tuple[str, str, str]] = []
    gate = PeerGate(
        revocation=None,  # type: ignore[arg-type]  # never reached: no certificate
        site_of_node=lambda node: None,
        on_refusal=lambda *row: refused.append(row),
    )
    for _ in range(2_000):
        with pytest.raises(Reject) as info:
            gate.caller(object(), "PullTask")  # a context without a certificate
        assert info.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert len(refused) == 2_000
    assert 1 <= len(_lines(caplog, "fedops.coordinator")) <= 3
