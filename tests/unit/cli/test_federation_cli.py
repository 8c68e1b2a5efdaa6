"""``fedops serve`` and ``fedops run``: a user's mistake is a message and an exit status."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedops.cli import main


def test_a_root_that_cannot_hold_a_queue_is_named(tmp_path: Path, capsys):
    (tmp_path / "federation.sqlite").write_text("not a database")
    assert main(["serve", "--root", str(tmp_path), "--address", "127.0.0.1:0"]) == 2
    assert "--root" in capsys.readouterr().err
    assert main(["serve", "--root", "/proc/no-such-dir", "--address", "127.0.0.1:0"]) == 2


@pytest.mark.parametrize("name", ["run-\u00b2", "job-1"])
def test_a_run_name_the_queue_does_not_use_is_named(tmp_path: Path, capsys, name: str):
    spec = tmp_path / "run.yaml"
    spec.write_text("task: digits\n")
    assert main(["run", "submit", str(spec), "--root", str(tmp_path)]) == 0
    assert main(["run", "stop", name, "--root", str(tmp_path)]) == 1
    assert "not a run of this queue" in capsys.readouterr().err
