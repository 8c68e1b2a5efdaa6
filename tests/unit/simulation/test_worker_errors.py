"""A worker's exception reaches the parent as the same type, or as a RuntimeError with the
worker's traceback where the queue could not rebuild it (it would otherwise be dropped and
the parent wait for an answer until its timeout)."""

from __future__ import annotations

from fedops.simulation.process import _portable


class _NeedsKeyword(Exception):
    def __init__(self, *, what: str) -> None:
        super().__init__(f"bad {what}")


def test_a_plain_exception_keeps_its_type_and_says_where_it_came_from():
    try:
        raise ValueError("a site's data is empty")
    except ValueError as exc:
        sent = _portable(exc)
    assert type(sent) is ValueError and sent.args == ("a site's data is empty",)
    assert "in a simulation worker" in "".join(sent.__notes__)


def test_an_exception_the_queue_cannot_rebuild_becomes_a_runtime_error():
    try:
        raise _NeedsKeyword(what="model")
    except _NeedsKeyword as exc:
        sent = _portable(exc)
    assert type(sent) is RuntimeError
    assert "bad model" in str(sent) and "_NeedsKeyword" in str(sent)
