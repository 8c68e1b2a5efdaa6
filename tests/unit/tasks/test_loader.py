"""Unit tests for fedops.tasks.loader.load_task: built-ins, user files, modules."""

from __future__ import annotations

import hashlib
import sys
import textwrap

import numpy as np
import pytest
import torch

from fedops.tasks import BUILTIN_TASKS, Task, load_task
from fedops.tasks.loader import TaskError, TaskNotAllowed, source_digest

USER_TASK = textwrap.dedent(
    """
    import numpy as np
    from torch import nn

    def build_model():
        return nn.Linear(3, 2)

    def load_data(site, num_sites):
        x = np.full((4, 3), float(site), dtype=np.float32)
        y = np.array([0, 1, 0, 1])
        return (x, y), (x[:2], y[:2])

    def train(model, data, config):
        return {"train_loss": 0.0}
    """
)


def test_builtin_digits_task():
    task = load_task("digits")
    assert isinstance(task, Task)
    assert task.name == "digits"
    assert task.options == {"model": "logreg", "partition": "dirichlet", "alpha": 0.5, "seed": 0}
    model = task.build_model()
    assert model(torch.zeros(5, 64)).shape == (5, 10)
    assert task.load_server_data is not None
    assert set(BUILTIN_TASKS) == {"digits", "digits-mlp"}


def test_builtin_options_are_passed_through():
    task = load_task("digits-mlp", partition="iid", alpha=2.0, seed=4)
    assert task.name == "digits-mlp"
    assert task.options == {"model": "mlp", "partition": "iid", "alpha": 2.0, "seed": 4}
    assert len(list(task.build_model().parameters())) == 4


def test_user_task_file(tmp_path):
    path = tmp_path / "my_task.py"
    path.write_text(USER_TASK)
    task = load_task(str(path))
    assert task.name == str(path)
    assert task.build_model()(torch.zeros(1, 3)).shape == (1, 2)
    (x, _), (xt, _) = task.load_data(1, 2)
    np.testing.assert_array_equal(x, np.ones((4, 3), np.float32))
    assert len(xt) == 2
    assert task.train(None, None, None) == {"train_loss": 0.0}
    assert task.evaluate is None and task.load_server_data is None
    assert task.digest == hashlib.sha256(USER_TASK.encode()).hexdigest()


def test_user_task_digest_follows_the_source(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text(USER_TASK)
    b.write_text(USER_TASK + "\nLR = 0.1\n")
    assert load_task(str(a)).digest != load_task(str(b)).digest


def test_user_file_without_build_model_names_it(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("def load_data(site, num_sites):\n    return None, None\n")
    with pytest.raises(TaskError, match=r"does not define build_model\(\)") as info:
        load_task(str(path))
    assert "load_data()" not in str(info.value).split(";")[0]
    assert str(path) in str(info.value)


def test_user_file_without_either_function_names_both(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("build_model = 3\n")
    with pytest.raises(TaskError, match=r"does not define build_model\(\), load_data\(\)"):
        load_task(str(path))


def test_missing_task_file(tmp_path):
    with pytest.raises(TaskError, match="does not exist"):
        load_task(str(tmp_path / "nope.py"))


def test_task_file_that_fails_to_import(tmp_path):
    path = tmp_path / "bad_import.py"
    path.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(TaskError, match=r"failed to import.*boom"):
        load_task(str(path))


def test_unknown_name_is_neither_builtin_file_nor_module():
    with pytest.raises(TaskError, match=r"is not a built-in.*digits"):
        load_task("no_such_module_for_fedops_tests")


def test_importable_module_as_task():
    # fedops.tasks.models has neither build_model nor load_data
    with pytest.raises(TaskError, match="does not define build_model"):
        load_task("fedops.tasks.models")


def test_task_error_is_a_value_error():
    assert issubclass(TaskError, ValueError)


# -- allowed_tasks: checked before any of the task's code runs (issue 17, finding 4) ---------
EVIL = USER_TASK + textwrap.dedent(
    """
    import pathlib
    pathlib.Path(MARKER).write_text("import-time code ran")
    """
)


def test_a_task_file_that_is_not_allowed_never_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil_task.py"
    path.write_text(EVIL.replace("MARKER", repr(str(marker))))
    digest = source_digest(str(path))
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not marker.exists()  # hashing runs nothing
    with pytest.raises(TaskNotAllowed, match=r"does not allow.*none of its code was run"):
        load_task(str(path), allowed=["0" * 64])
    assert not marker.exists()
    task = load_task(str(path), allowed=[digest])  # the control: allowed, it runs
    assert marker.exists() and task.digest == digest


def test_a_package_task_is_hashed_whole_and_checked_before_import(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    package = tmp_path / "evilpkg"
    package.mkdir()
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (package / "task.py").write_text(USER_TASK)
    (package / "helper.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = source_digest("evilpkg.task")
    assert not marker.exists()
    with pytest.raises(TaskNotAllowed):
        load_task("evilpkg.task", allowed=["0" * 64])
    assert not marker.exists() and "evilpkg" not in sys.modules
    (package / "helper.py").write_text("X = 2\n")  # any file of the package counts
    assert source_digest("evilpkg.task") != before
    task = load_task("evilpkg.task", allowed=[source_digest("evilpkg.task")])
    assert marker.exists() and task.digest == source_digest("evilpkg.task")
    for name in [m for m in sys.modules if m.startswith("evilpkg")]:
        monkeypatch.delitem(sys.modules, name)


def test_a_builtin_task_has_no_digest_to_allow():
    with pytest.raises(TaskNotAllowed, match="a built-in task, no source digest"):
        load_task("digits", allowed=["0" * 64])
    assert load_task("digits", allowed=[]).digest == ""


def _package(tmp_path, monkeypatch, name: str):
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "task.py").write_text(USER_TASK + "\nimport statistics\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return package


def _forget(monkeypatch, prefix: str) -> None:
    for name in [m for m in sys.modules if m.startswith(prefix)]:
        monkeypatch.delitem(sys.modules, name)


def test_an_unchecked_pyc_in_pycache_never_runs_in_place_of_the_hashed_source(
    tmp_path, monkeypatch
):
    """Red team, issue 17: an unchecked hash-based .pyc (PEP 552) was loaded instead of the
    reviewed task.py, under the reviewed package's digest."""
    import py_compile

    marker = tmp_path / "ran"
    package = _package(tmp_path, monkeypatch, "pycpkg")
    evil = tmp_path / "evil.py"
    evil.write_text(USER_TASK + f"\nopen({str(marker)!r}, 'w').write('pyc ran')\n")
    cache = package / "__pycache__"
    cache.mkdir()
    tag = sys.implementation.cache_tag
    py_compile.compile(
        str(evil),
        cfile=str(cache / f"task.{tag}.pyc"),
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    digest = source_digest("pycpkg.task")
    task = load_task("pycpkg.task", allowed=[digest])
    assert task.digest == digest and not marker.exists()  # the hashed source ran, not the pyc
    _forget(monkeypatch, "pycpkg")


@pytest.mark.parametrize("compiled", ["task.cpython-311-x86_64-linux-gnu.so", "helper.pyc"])
def test_compiled_code_in_a_package_is_refused_before_anything_runs(
    tmp_path, monkeypatch, compiled
):
    package = _package(tmp_path, monkeypatch, "sopkg")
    (package / compiled).write_bytes(b"\x7fELF not really")
    with pytest.raises(TaskError, match=r"compiled code.*does not cover"):
        source_digest("sopkg.task")
    with pytest.raises(TaskError):
        load_task("sopkg.task", allowed=["0" * 64])
    assert "sopkg" not in sys.modules


def test_a_module_beside_the_package_shadowing_the_stdlib_is_refused(tmp_path, monkeypatch):
    _package(tmp_path, monkeypatch, "shadowpkg")
    (tmp_path / "statistics.py").write_text("raise SystemExit('shadow ran')\n")
    with pytest.raises(TaskError, match=r"shadows the standard library's 'statistics'"):
        source_digest("shadowpkg.task")
