"""The terminal view of a run (:mod:`fedops.runtime.progress`).

Under test: the one line per round that :class:`RoundProgress` always prints
(off a terminal the bar is disabled, the line is not): which metrics it shows,
in which order, how floats and NaN are written, and that the bar counts rounds
from the first round of the run (a resumed run starts part-way).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from fedops.runtime.driver import RoundRecord
from fedops.runtime.progress import RoundProgress, _fmt


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _run(records: list[RoundRecord], *, total: int, first: int) -> RoundProgress:
    with RoundProgress(total_rounds=total, first_round=first, label="fedavg") as bar:
        for record in records:
            bar.update(record)
    return bar


def test_fmt_writes_floats_to_four_places_nan_as_a_dash_and_the_rest_as_text() -> None:
    assert _fmt(0.123456) == "0.1235"
    assert _fmt(2.0, 2) == "2.00"
    assert _fmt(math.nan) == "-"
    assert _fmt(math.inf) == "inf"
    assert _fmt(3) == "3"
    assert _fmt(None) == "None"


def test_one_line_per_round_with_the_metrics_in_a_fixed_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    metrics: dict[str, Any] = {
        # deliberately not in display order
        "epsilon": 1.234567,
        "eval_accuracy": 0.9,
        "num_clients": 5,
        "train_loss": 0.5,
        "eval_loss": 0.25,
        "global_accuracy": 0.875,
        "duration_s": 2.5,
        "unshown": 42.0,
    }
    _run([RoundRecord(server_round=3, metrics=metrics)], total=10, first=3)
    assert _lines(capsys) == [
        "round 3: clients=5 train_loss=0.5000 eval_loss=0.2500 eval_accuracy=0.9000 "
        "ε=1.2346 global_accuracy=0.8750 (2.50 s)"
    ]


def test_metrics_a_round_lacks_are_left_out_and_nan_is_a_dash(
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = [
        RoundRecord(server_round=1, metrics={"num_clients": 2, "duration_s": 0.125}),
        RoundRecord(
            server_round=2, metrics={"num_clients": 2, "eval_loss": math.nan, "duration_s": 1.0}
        ),
    ]
    _run(records, total=2, first=1)
    assert _lines(capsys) == [
        "round 1: clients=2 (0.12 s)",  # 0.125 rounds half to even
        "round 2: clients=2 eval_loss=- (1.00 s)",
    ]


def test_the_bar_counts_from_the_first_round_and_shows_the_last_rounds_status() -> None:
    metrics = {"num_clients": 4, "duration_s": 2.0, "eval_accuracy": 0.5, "eval_loss": 1.0}
    bar = _run([RoundRecord(server_round=r, metrics=metrics) for r in (4, 5)], total=10, first=4)
    (task,) = bar.progress.tasks
    assert task.total == 10
    assert task.completed == 3 + 2  # rounds 1-3 done before this process, then 4 and 5
    assert task.description == "fedavg"
    assert task.fields["status"] == "acc 0.5000 loss 1.0000 (4 clients, 2 clients/s)"


def test_the_status_falls_back_to_the_coordinators_own_evaluation() -> None:
    metrics = {"num_clients": 3, "global_accuracy": 0.75, "global_loss": 0.5}
    bar = _run([RoundRecord(server_round=1, metrics=metrics)], total=1, first=1)
    assert bar.progress.tasks[0].fields["status"] == "acc 0.7500 loss 0.5000 (3 clients)"


def test_before_any_round_the_status_says_it_waits_for_clients() -> None:
    bar = _run([], total=5, first=1)
    (task,) = bar.progress.tasks
    assert task.completed == 0
    assert task.fields["status"] == "waiting for clients"
