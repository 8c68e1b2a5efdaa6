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


def test_a_module_of_a_package_imported_before_the_check_is_refused():
    # fedops was imported from disk long before: its modules are not the code just hashed
    with pytest.raises(TaskError, match=r"imported .*before the task's digest was checked"):
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


# -- the digest pins the code that runs (issue 17, TOCTOU follow-up) -------------------------
def _app(tmp_path, monkeypatch, name: str, files: dict[str, str]):
    """A package ``name`` under tmp_path/home (on sys.path), forgotten after the test."""
    home = tmp_path / "home"
    for relative, text in files.items():
        path = home / name / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.syspath_prepend(str(home))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as a default interpreter
    return home / name


def _old_digest(*roots) -> str:
    """The digest format sites pinned before the in-memory import: kept identical."""
    digest = hashlib.sha256()
    for relative, path in sorted(
        (f.relative_to(r.parent), f) for r in roots for f in r.rglob("*.py")
    ):
        digest.update(str(relative).encode() + b"\x00" + path.read_bytes() + b"\x00")
    return digest.hexdigest()


def test_a_file_swapped_after_the_hash_is_not_what_runs(tmp_path, monkeypatch):
    """Exploit a: the files were hashed, then import read them again from disk."""
    import importlib

    from fedops.tasks.loader import import_checked

    package = _app(tmp_path, monkeypatch, "toctouapp", {"__init__.py": "EVIL = False\n"})
    good = source_digest("toctouapp")
    real = importlib.import_module

    def swap_then_import(name, *args):
        (package / "__init__.py").write_text("EVIL = True\n")  # after the hash, before import
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", swap_then_import)
    module, digest = import_checked("toctouapp", allowed=[good])
    assert digest == good and module.EVIL is False
    _forget(monkeypatch, "toctouapp")


def test_a_lazily_imported_submodule_runs_the_hashed_bytes(tmp_path, monkeypatch):
    """Exploit b: a submodule imported after the check was read from disk then."""
    from fedops.tasks.loader import import_checked

    package = _app(
        tmp_path,
        monkeypatch,
        "lazyapp",
        {
            "__init__.py": "def train():\n    from lazyapp import helper\n    return helper.WHO\n",
            "helper.py": "WHO = 'reviewed'\n",
        },
    )
    module, _ = import_checked("lazyapp", allowed=[source_digest("lazyapp")])
    (package / "helper.py").write_text("WHO = 'swapped'\n")
    assert module.train() == "reviewed"
    _forget(monkeypatch, "lazyapp")


def _planted_pyc(source, evil: str, good: str) -> None:
    """A __pycache__ .pyc of ``evil`` whose header matches ``good``'s mtime and size."""
    import importlib.util
    import os
    import py_compile

    assert len(evil) == len(good)
    source.write_text(evil)
    py_compile.compile(str(source), cfile=importlib.util.cache_from_source(str(source)))
    stat = os.stat(source)
    source.write_text(good)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_planted_pyc_never_runs_even_for_a_lazy_submodule(tmp_path, monkeypatch):
    """Exploit c: after the check the bytecode cache was read again."""
    from fedops.tasks.loader import import_checked

    package = _app(
        tmp_path,
        monkeypatch,
        "pycapp",
        {"__init__.py": "def train():\n    from pycapp import helper\n    return helper.WHO\n"},
    )
    _planted_pyc(package / "helper.py", "WHO = 'PLANTED!'\n", "WHO = 'reviewed'\n")
    init = package / "__init__.py"
    _planted_pyc(init, "raise SystemExit(3)\n".ljust(len(init.read_text())), init.read_text())
    module, _ = import_checked("pycapp", allowed=[source_digest("pycapp")])
    assert module.train() == "reviewed"
    _forget(monkeypatch, "pycapp")


def test_no_bytecode_is_written_beside_the_sources(tmp_path, monkeypatch):
    package = _app(tmp_path, monkeypatch, "nopycapp", {"__init__.py": "", "task.py": USER_TASK})
    load_task("nopycapp.task")
    assert not list(package.rglob("*.pyc")) and not (package / "__pycache__").exists()
    _forget(monkeypatch, "nopycapp")


def test_a_lone_module_importing_a_sibling_is_refused_before_it_runs(tmp_path, monkeypatch):
    """Exploit d: a lone module was hashed alone; the sibling it imports was not."""
    from fedops.tasks.loader import import_checked

    marker = tmp_path / "ran"
    (tmp_path / "my_app.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nfrom my_sibling import WHO\n"
    )
    (tmp_path / "my_sibling.py").write_text("WHO = 'unhashed'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TaskError, match=r"imports 'my_sibling'.*outside its digest"):
        import_checked("my_app")
    assert not marker.exists() and "my_sibling" not in sys.modules


def test_a_lone_modules_sibling_cannot_be_imported_at_run_time(tmp_path, monkeypatch):
    """The static refusal misses a computed name; the import itself is refused then."""
    from fedops.tasks.loader import import_checked

    (tmp_path / "lone_app.py").write_text(
        "import importlib\ndef later():\n    return importlib.import_module('lone_' + 'sib')\n"
    )
    (tmp_path / "lone_sib.py").write_text("WHO = 'unhashed'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module, digest = import_checked("lone_app")
    assert digest == hashlib.sha256((tmp_path / "lone_app.py").read_bytes()).hexdigest()
    with pytest.raises(ImportError, match=r"beside a task .*outside its digest"):
        module.later()
    assert "lone_sib" not in sys.modules
    _forget(monkeypatch, "lone_app")


def test_a_module_shadowing_an_installed_package_is_refused(tmp_path, monkeypatch):
    """Exploit d (shadowing): only stdlib names were refused beside a task package."""
    _package(tmp_path, monkeypatch, "npshadowpkg")
    (tmp_path / "numpy.py").write_text("raise SystemExit('shadow ran')\n")
    with pytest.raises(TaskError, match=r"shadows the installed 'numpy' package"):
        load_task("npshadowpkg.task")
    assert "npshadowpkg" not in sys.modules


def test_a_task_raising_at_import_is_a_clear_error(tmp_path, monkeypatch, capsys):
    """Exploit e: a non-ImportError at import crashed ``fedops client`` with a traceback."""
    from fedops.cli import main

    _app(tmp_path, monkeypatch, "crashapp", {"__init__.py": "raise RuntimeError('boom')\n"})
    with pytest.raises(TaskError, match=r"task 'crashapp' failed to import: RuntimeError: boom"):
        load_task("crashapp")
    assert main(["client", "--task", "crashapp", "--site", "0", "--num-sites", "2"]) == 2
    err = capsys.readouterr().err
    assert "failed to import: RuntimeError: boom" in err and "Traceback" not in err


def test_a_submodule_that_was_not_hashed_cannot_be_imported(tmp_path, monkeypatch):
    from fedops.tasks.loader import import_checked

    package = _app(tmp_path, monkeypatch, "closedapp", {"__init__.py": "", "task.py": USER_TASK})
    import_checked("closedapp")
    (package / "late.py").write_text("WHO = 'added after the check'\n")
    with pytest.raises(ModuleNotFoundError, match=r"not among the sources hashed"):
        __import__("closedapp.late")
    _forget(monkeypatch, "closedapp")


def test_the_digest_of_an_unchanged_package_keeps_its_format(tmp_path, monkeypatch):
    package = _app(
        tmp_path,
        monkeypatch,
        "fmtapp",
        {"__init__.py": "", "task.py": USER_TASK, "sub/__init__.py": "", "sub/deep.py": "X = 1\n"},
    )
    assert source_digest("fmtapp.task") == _old_digest(package)
    lone = tmp_path / "home" / "fmt_lone.py"
    lone.write_text(USER_TASK)
    assert source_digest("fmt_lone") == hashlib.sha256(lone.read_bytes()).hexdigest()


def test_a_task_with_subpackages_loads(tmp_path, monkeypatch):
    _app(
        tmp_path,
        monkeypatch,
        "subapp",
        {
            "__init__.py": "",
            "task.py": "from subapp.models.nets import build_model\n"
            "from .data.io import load_data\n",
            "models/__init__.py": "",
            "models/nets.py": "from torch import nn\n"
            "def build_model():\n    return nn.Linear(3, 2)\n",
            "data/io.py": USER_TASK,  # a folder without __init__.py: a namespace package
        },
    )
    digest = source_digest("subapp.task")
    task = load_task("subapp.task", allowed=[digest])
    assert task.digest == digest and task.build_model()(torch.zeros(1, 3)).shape == (1, 2)
    assert sys.modules["subapp.data"].__path__ and task.load_data(0, 2)[0][0].shape == (4, 3)
    _forget(monkeypatch, "subapp")


def test_a_pyc_beside_the_source_is_never_used(tmp_path, monkeypatch):
    """A sourceless or legacy .pyc beside the sources is refused, never imported."""
    package = _app(tmp_path, monkeypatch, "besideapp", {"__init__.py": "", "task.py": USER_TASK})
    import py_compile

    evil = tmp_path / "evil.py"
    evil.write_text("raise SystemExit('pyc ran')\n")
    py_compile.compile(str(evil), cfile=str(package / "task.pyc"))
    with pytest.raises(TaskError, match=r"compiled code"):
        load_task("besideapp.task")
    (package / "task.pyc").unlink()
    assert load_task("besideapp.task").digest == _old_digest(package)
    _forget(monkeypatch, "besideapp")


def test_a_task_beside_the_fedops_package_in_use_is_not_a_shadow(tmp_path):
    """A newcomer's task file in a checkout's root sits beside fedops/ (installed editable):
    that is the package this process runs, not code outside the digest."""
    import fedops

    (tmp_path / "fedops").symlink_to(next(iter(fedops.__path__)), target_is_directory=True)
    (tmp_path / "fedops.egg-info").mkdir()  # metadata, not an importable name
    path = tmp_path / "root_task.py"
    path.write_text(
        "from fedops.tasks.digits import make_task\n"
        "_t = make_task()\nbuild_model = _t.build_model\nload_data = _t.load_data\n"
    )
    task = load_task(str(path))
    assert task.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "helper_mod.py").write_text("X = 1\n")  # … while a real sibling is refused
    other = tmp_path / "other_task.py"
    other.write_text("import helper_mod\n" + path.read_text())
    with pytest.raises(TaskError, match="imports 'helper_mod', which lies beside it"):
        load_task(str(other))
