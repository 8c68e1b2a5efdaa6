"""``run._trained`` (one query, stops at the first accepted fit) against its old form."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.rounds import Outcome, Phase
from fedops.runtime.run import _trained
from fedops.runtime.store import Participant, RunStore


def old_trained(store: RunStore, first_round: int) -> bool:
    last = store.last_round() or 0
    return any(
        p.phase == str(Phase.FIT) and p.outcome == str(Outcome.OK)
        for r in range(first_round, last + 1)
        for p in store.participants(r)
    )


participant = st.builds(
    Participant,
    phase=st.sampled_from([str(p) for p in Phase] + ["FIT", "fit "]),
    node_id=st.sampled_from(["site-0", "site-1"]),
    site=st.just(""),
    outcome=st.sampled_from([str(o) for o in Outcome] + ["OK"]),
)


@settings(max_examples=40, deadline=None)
@given(
    rounds=st.lists(st.lists(participant, max_size=4), max_size=4),
    orphans=st.lists(participant, max_size=2),  # rows past the last committed round
    roll_back=st.none() | st.integers(0, 3),
    first_rounds=st.lists(st.integers(-1, 6), min_size=1, max_size=4),
)
def test_trained_answers_as_the_scan_over_every_round_did(
    rounds: list[list[Participant]],
    orphans: list[Participant],
    roll_back: int | None,
    first_rounds: list[int],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp))
        try:
            params = {"w": np.zeros(2, dtype=np.float32)}
            for server_round, rows in enumerate(rounds):
                store.save_round(server_round, params, {}, participants=rows)
            if roll_back is not None:
                store.roll_back_to(roll_back)
            last = store.last_round() or 0
            with store._db:
                store._db.executemany(
                    "INSERT INTO participants VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(last + 1, p.phase, p.node_id, p.site, p.outcome, 0, "") for p in orphans],
                )
            for first in first_rounds:
                assert _trained(store, first) == old_trained(store, first)
        finally:
            store.close()


def test_trained_finds_an_accepted_fit_in_a_later_round_only(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    params = {"w": np.zeros(2, dtype=np.float32)}
    ok = Participant(phase=str(Phase.FIT), node_id="site-0", site="", outcome=str(Outcome.OK))
    late = Participant(phase=str(Phase.EVALUATE), node_id="s", site="", outcome=str(Outcome.OK))
    store.save_round(0, params, {})
    store.save_round(1, params, {}, participants=[ok])
    store.save_round(2, params, {}, participants=[late])
    assert _trained(store, 1) and not _trained(store, 2) and not _trained(store, 3)
    store.close()
