"""Where a command writes: a path that cannot be a directory is named before any write.

And ``fedops audit export`` on a path that is no run directory writes nothing there and
says so, and looks for site logs only in the run directory's own layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fedops.cli import main
from fedops.reporting.audit.compliance import export_compliance
from fedops.reporting.audit.run_logs import NotARunDirectory, site_log_paths
from fedops.reporting.out_dirs import out_dir_problem
from fedops.runtime.audit.log_file import LOG_NAME, AuditLog


def test_a_directory_that_is_or_can_be_made_passes_and_nothing_is_left(tmp_path):
    assert out_dir_problem("--out", tmp_path) is None
    assert out_dir_problem("--out", tmp_path / "new" / "deeper") is None
    assert os.listdir(tmp_path) == []  # the probe is gone, nothing was created


def test_a_file_or_a_folder_under_a_file_is_named_with_the_flag(tmp_path):
    (tmp_path / "task.py").write_text("")
    assert out_dir_problem("--run-dir", tmp_path / "task.py") == (
        f"--run-dir: {tmp_path / 'task.py'} is a file; give a directory (it is created if missing)"
    )
    problem = out_dir_problem("--root", tmp_path / "task.py" / "x" / "y")
    assert problem == (
        f"--root: cannot create {tmp_path / 'task.py' / 'x' / 'y'}: {tmp_path / 'task.py'} "
        "is a file, not a directory"
    )


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_a_place_that_takes_no_folder_is_refused_even_for_root():
    problem = out_dir_problem("--out", "/proc/fedops-x")
    assert problem is not None and problem.startswith("--out: cannot create /proc/fedops-x: ")


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_audit_export_of_no_run_directory_writes_nothing(tmp_path, capsys, where):
    run_dir = tmp_path / "run"
    if where == "empty":
        run_dir.mkdir()
    assert main(["audit", "export", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedops audit export: error: RUN_DIR: ") and "\n" not in err
    assert ("does not exist" if where == "missing" else "holds no audit.jsonl") in err
    assert os.listdir(tmp_path) == ([] if where == "missing" else ["run"])
    assert not run_dir.exists() or os.listdir(run_dir) == []
    with pytest.raises(NotARunDirectory):
        export_compliance(run_dir)


def test_audit_export_refuses_an_out_that_is_a_file(tmp_path, capsys):
    with AuditLog.open(tmp_path / "run", "coordinator", fsync=False) as log:
        log.record("run_started", {"run_id": "r"})
    (tmp_path / "out").write_text("")
    assert main(["audit", "export", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 2
    assert "error: --out: " in capsys.readouterr().err
    assert not (tmp_path / "run" / "compliance.json").exists()


def test_site_logs_are_looked_for_two_folders_down_only(tmp_path):
    run_dir = tmp_path / "run"
    with AuditLog.open(run_dir, "coordinator", fsync=False) as log:
        log.record("run_started", {"run_id": "r"})
    for where in ("a", "sites/b", "deep/er/c"):
        with AuditLog.open(run_dir / where, "site", fsync=False) as log:
            log.record("joined", {"node_id": "n"})
    found = site_log_paths(run_dir, run_dir / LOG_NAME, [])
    assert [p.relative_to(run_dir).as_posix() for p in found] == [
        "a/audit.jsonl",
        "sites/b/audit.jsonl",
    ]
    report = export_compliance(run_dir, tmp_path / "out")
    assert len(report["parties"]) == 3
    stored = json.loads((tmp_path / "out" / "compliance.json").read_text())
    assert stored["site_logs_searched"] == [
        f"{run_dir}/*/audit.jsonl",
        f"{run_dir}/*/*/audit.jsonl",
    ]
