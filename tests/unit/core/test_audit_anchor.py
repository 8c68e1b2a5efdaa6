"""Heads anchored in the other party's log: a cut or rewritten log no longer holds them."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.audit.anchor import Anchor, HeadWatch, anchor_in, anchor_of, missing_anchors


def _h(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _log(n: int) -> list[dict]:
    return [{"seq": i, "hash": _h(i)} for i in range(n)]


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 60), data=st.data())
def test_an_anchor_is_missing_exactly_when_the_log_was_cut_before_it(n, data):
    anchored = data.draw(st.integers(0, n - 1))
    keep = data.draw(st.integers(1, n))
    log = _log(n)[:keep]
    lost = missing_anchors(log, [(Anchor(anchored, _h(anchored)), "x")])
    assert bool(lost) == (anchored >= keep)
    if lost:
        assert "cut off its end" in lost[0]


def test_a_rewritten_entry_is_named_as_such():
    log = _log(5)
    log[3] = {"seq": 3, "hash": _h(99)}
    (msg,) = missing_anchors(log, [(Anchor(3, _h(3)), "site 'a' entry 7")])
    assert msg.startswith("site 'a' entry 7 anchored entry 3") and "rewritten" in msg


def test_a_coordinator_head_may_only_move_forward_per_run():
    watch = HeadWatch()
    assert watch.regress("r", Anchor(5, _h(5))) == ""
    assert watch.regress("r", Anchor(5, _h(5))) == ""  # the same head again: fine
    assert watch.regress("r", Anchor(9, _h(9))) == ""
    assert "back to entry 4" in watch.regress("r", Anchor(4, _h(4)))
    assert "another hash" in watch.regress("r", Anchor(9, _h(10)))
    assert watch.regress("other run", Anchor(1, _h(1))) == ""


def test_what_a_peer_sends_is_checked_before_it_is_an_anchor():
    assert anchor_of(3, _h(3)) == Anchor(3, _h(3))
    for seq, digest in ((-1, _h(1)), (True, _h(1)), (1.5, _h(1)), (2, "zz"), (2, _h(1).upper())):
        assert anchor_of(seq, digest) is None
    assert anchor_in({"h": {"seq": 2, "hash": _h(2)}}, "h") == Anchor(2, _h(2))
    assert anchor_in({"h": "nope"}, "h") is None and anchor_in({}, "h") is None


def test_a_head_that_stays_put_for_a_new_model_anchors_nothing():
    """Red team, issue 17: a coordinator that always showed the head of its entry 0 (a real
    entry) anchored nothing after it, and could rewrite the rest of its log."""
    watch = HeadWatch()
    assert watch.regress("r", Anchor(0, _h(0)), task_id="t1", strict=True) == ""
    assert watch.regress("r", Anchor(0, _h(0)), task_id="t1", strict=True) == ""  # same task
    assert "anchors nothing" in watch.regress("r", Anchor(0, _h(0)), task_id="t2", strict=True)
    assert watch.regress("r", Anchor(3, _h(3)), task_id="t3", strict=True) == ""
    assert watch.regress("r", Anchor(3, _h(3)), task_id="t4") == ""  # no model: may stay
