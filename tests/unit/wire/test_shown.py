"""A peer's text as a refusal, a log line or the audit log shows it (red team 2026-12-07, F5).

:func:`fedops.wire.codec.shown` quotes a peer's string with every newline,
control character and terminal escape escaped, and bounds what it writes,
escapes counted; :func:`~fedops.wire.codec.loggable` passes fedops' own
printable text unchanged and shows anything else.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fedops.wire.codec import loggable, shown

FORGED = "ok\n2026-12-07 23:59:59,000 INFO fedops.coordinator: FORGED-LINE\x1b[2K\r"


def test_a_forged_log_line_is_escaped_not_written():
    text = shown(FORGED, 500)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert "\\n2026-12-07" in text and "\\x1b[2K\\r" in text
    assert text.isprintable()


def test_short_and_long_values_keep_their_old_form():
    assert shown("node-1") == "'node-1'"
    assert shown("a" * 64) == repr("a" * 64)
    assert shown("a" * 65) == f"{'a' * 64!r}… (65 chars)"


def test_escapes_count_against_the_limit():
    """Before: 500 characters that escape to ten each gave a 5,000-character reason."""
    hostile = "\U000e0000" * 600 + "\x1b" * 600
    text = shown(hostile, 500)
    assert len(text) < 540 and text.endswith("… (1200 chars)")
    assert shown("\x1b" * 10, 8) == "'\\x1b\\x1b'… (10 chars)"


@given(st.text(max_size=300), st.integers(1, 200))
def test_any_text_is_shown_printable_and_bounded(value: str, limit: int):
    text = shown(value, limit)
    assert text.isprintable()
    assert len(text) <= limit + 2 + len(f"… ({len(value)} chars)")


def test_loggable_leaves_printable_text_and_shows_the_rest():
    assert loggable("the client declined the task: consent is withdrawn") == (
        "the client declined the task: consent is withdrawn"
    )
    assert loggable(FORGED) == shown(FORGED, 2000)
    assert loggable("x" * 30, 20) == shown("x" * 30, 20)
